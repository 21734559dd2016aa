"""Plots: convergence (hint over twin, teacher line), firing rates, energy per layer, sample grids, logging."""
import json

import numpy as np
import pytest
from PIL import Image

from distill.plots import (convergence_figures, energy_figure, figure_to_array, find_samples, log_figures_to_loggers,
                           main, make_plots, run_figures, sample_grid_figure, teacher_val_psnr, worst_crop)
from distill.leaderboard import group_runs, load_runs
from test_leaderboard import make_results


def write_samples(run_dir, name="castle", size=(48, 40), roles=("input", "teacher", "student", "target")):
    rng = np.random.default_rng(1)
    clean = rng.integers(0, 256, (*size, 3), dtype=np.uint8)
    folder = run_dir / "samples"
    folder.mkdir(parents=True, exist_ok=True)
    for k, role in enumerate(roles):
        noisy = np.clip(clean.astype(int) + rng.integers(-40 // (k + 1), 40 // (k + 1) + 1, clean.shape), 0, 255)
        Image.fromarray((clean if role == "target" else noisy).astype(np.uint8)).save(folder / f"{name}_{role}.png")


@pytest.fixture
def runs(tmp_path):
    root = tmp_path / "runs"
    make_results(root / "hint-s0", seed=0, hints=True, psnr=30.0, firing_rates={"head.neuron": 0.12,
                                                                               "blocks.0.neuron": 0.05})
    make_results(root / "hint-s1", seed=1, hints=True, psnr=30.2)
    make_results(root / "plain-s0", seed=0, hints=False, psnr=29.0)
    write_samples(root / "hint-s0")
    return root


def test_make_plots_writes_every_figure(runs, tmp_path, capsys):
    out = tmp_path / "figs"
    main([str(runs), "--output", str(out)])
    names = sorted(p.name for p in out.iterdir())
    assert "convergence_SpikingDnCNN_DnCNN_denoise_skimage_s25_T4.png" in names
    assert "firing_rates_hint-s0.png" in names and "firing_rates_plain-s0.png" not in names
    assert {"energy_hint-s0.png", "energy_hint-s1.png", "energy_plain-s0.png", "samples_hint-s0.png"} <= set(names)
    assert not [n for n in names if n.startswith(".")]  # atomic writes leave no temp files
    for name in names:
        with Image.open(out / name) as im:
            assert im.format == "PNG" and im.size[0] > 300
    printed = capsys.readouterr().out
    assert "no samples/ images in 2 run(s)" in printed and "image grid skipped" in printed
    assert f"plot: {len(names)} figure(s) from 3 run(s) -> {out}" in printed


def test_convergence_hint_over_twin_with_teacher_line(runs):
    runs_list, _ = load_runs(runs)
    figures = convergence_figures(group_runs(runs_list))
    assert len(figures) == 1
    fig = next(iter(figures.values()))
    ax_step, ax_time = fig.axes
    labels = [line.get_label() for line in ax_step.lines if not line.get_label().startswith("_")]
    assert labels[0] == "none (1 seed)" and labels[1] == "1 hint (2 seeds)"  # twin first, hint drawn over it
    assert labels[2] == "teacher (val) 31.20 dB"
    assert len(ax_step.lines) == 4 and len(ax_time.lines) == 4  # 3 runs + teacher line
    xs = ax_time.lines[0].get_xdata()
    assert list(xs) == [0, 4, 8, 12, 16, 20]  # seconds from the history


def test_teacher_psnr_from_validation_or_test(runs):
    run = load_runs(runs)[0][0]
    assert teacher_val_psnr(run) == (31.2, "teacher (val)")
    del run.data["convergence"]["reference_psnr"]
    assert teacher_val_psnr(run) == (31.0, "teacher (test)")


def test_energy_and_firing_rate_figures():
    results = {"energy": {"student_uj": 0.5, "student": {"rows": [
        {"layer": "a", "kind": "analog", "energy_pj": 4e5}, {"layer": "b", "kind": "spike", "energy_pj": 1e5}]}},
        "firing_rates": {"a": 0.2}}
    figs = run_figures(results)
    assert set(figs) == {"energy", "firing_rates"}
    bars = figs["energy"].axes[0].patches
    assert [round(b.get_width(), 6) for b in bars] == [400.0, 100.0]  # nJ
    assert energy_figure({"energy": {}}) is None and run_figures({}) == {}


def test_energy_figure_draws_teacher_and_student_on_one_scale():
    teacher = [{"layer": f"t{i}", "kind": "analog", "energy_pj": 3.8e6} for i in range(10)]  # 38 µJ in all
    student = [{"layer": "head", "kind": "analog", "energy_pj": 6e5}, {"layer": "body", "kind": "spike",
                                                                        "energy_pj": 4e5}]  # 1 µJ: 38x less
    fig = energy_figure({"energy": {"teacher": {"rows": teacher}, "student": {"rows": student}, "ratio": 38.0}})
    ax_teacher, ax_student = fig.axes[:2]
    assert ax_teacher.get_shared_x_axes().joined(ax_teacher, ax_student)
    assert ax_teacher.get_xlim() == ax_student.get_xlim()
    low, high = ax_student.get_xlim()
    assert low == 0 and high >= 3800  # nJ: the student's axis reaches the teacher's largest layer
    widths = {ax: max(b.get_width() for b in ax.patches) for ax in (ax_teacher, ax_student)}
    assert widths[ax_teacher] / widths[ax_student] == pytest.approx(3800 / 600)  # largest layers, as drawn


def test_sample_grid(tmp_path):
    write_samples(tmp_path, "a", roles=("input", "student", "target"))
    write_samples(tmp_path, "lonely", roles=("input",))  # one image alone is not a sample
    assert list(find_samples(tmp_path)) == ["a"]
    fig = sample_grid_figure(tmp_path, "demo")
    assert len(fig.axes) == 2 * 3  # full + zoom rows, three columns (no teacher image)
    assert fig.axes[0].get_title() == "degraded" + fig.axes[0].get_title()[len("degraded"):]
    assert fig.axes[1].get_title().startswith("student ") and fig.axes[1].get_title().endswith(" dB")
    assert sample_grid_figure(tmp_path / "none") is None


def test_worst_crop_finds_the_error():
    error = np.zeros((40, 30))
    error[25:30, 3:8] = 1
    assert worst_crop(error, 5) == (25, 3)


def test_log_figures_to_loggers(runs):
    class ImageLogger:
        def __init__(self):
            self.calls = []

        def log_image(self, key, images, step=None):
            self.calls.append((key, images[0].shape, step))

    class CSVLike:
        pass

    class FakeTrainer:
        loggers = [ImageLogger(), CSVLike()]

    data = json.loads((runs / "hint-s0" / "results.json").read_text())
    figures = run_figures(data, runs / "hint-s0")
    trainer = FakeTrainer()
    assert log_figures_to_loggers(trainer, figures, step=7) == 3
    keys = [c[0] for c in trainer.loggers[0].calls]
    assert keys == ["figures/energy", "figures/firing_rates", "figures/samples"]
    assert all(len(c[1]) == 3 and c[1][2] == 3 and c[2] == 7 for c in trainer.loggers[0].calls)
    assert figure_to_array(figures["energy"]).dtype == np.uint8


def test_errors(tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(SystemExit):
        main([str(empty)])
    assert "no readable results.json" in capsys.readouterr().err
    make_results(tmp_path / "r" / "a", seed=0)
    data = json.loads((tmp_path / "r" / "a" / "results.json").read_text())
    data["convergence"] = {}
    (tmp_path / "r" / "a" / "results.json").write_text(json.dumps(data))
    written, notes, n = make_plots(tmp_path / "r")
    assert n == 1 and any("convergence plots skipped" in note for note in notes)
    assert sorted(p.name for p in written) == ["energy_a.png"]
