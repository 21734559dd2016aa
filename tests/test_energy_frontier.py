"""benchmarks/energy_frontier.py without training: the planned points and their commands, the Pareto set, and the
summary and plot built from hand-written results.json files."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarks import energy_frontier  # noqa: E402

pytest.importorskip("sweeps", reason="planning the frontier needs wandb's sweep engine (the sweeps extra)")


def options(runs_dir: Path, **kwargs) -> argparse.Namespace:
    values = dict(train=Path("/data/train"), eval=Path("/data/eval"), eval_size=256, val_every=100, steps=400,
                  twin_steps=1700, smoke=False, runs_dir=runs_dir, sweep=energy_frontier.SWEEP_FILE)
    return argparse.Namespace(**(values | kwargs))


@pytest.fixture
def planned(tmp_path, monkeypatch):
    monkeypatch.chdir(REPO)
    return energy_frontier.plan(options(tmp_path))


def flags(command: list[str]) -> dict[str, str]:
    return dict(word[2:].split("=", 1) for word in command if word.startswith("--") and "=" in word)


def test_plan_is_the_grid_plus_one_ann_twin_per_width(planned, tmp_path):
    students = [p for p in planned if p.kind == "student"]
    twins = [p for p in planned if p.kind == "ann_twin"]
    grid = {(flags(p.command)["model.init_args.student.init_args.timesteps"],
             flags(p.command)["model.init_args.student.init_args.features"],
             flags(p.command)["model.init_args.rate_regularizer"]) for p in students}
    assert grid == {(t, w, r) for t in ("1", "2", "4") for w in ("16", "24")
                    for r in ("null", '{"kind": "target", "weight": 1.0, "target": 0.1}')}
    assert len(students) == 12 and len(twins) == 2
    for point in planned:
        given = flags(point.command)
        assert point.command[point.command.index("fit") + 1:][:4] == [
            "--config", "recipes/quickstart_hint.yaml", "--config", "recipes/quickstart_hint_alone.yaml"]
        assert given["trainer.default_root_dir"] == str(tmp_path / point.name) == str(point.run_dir)
        assert given["data.init_args.train"] == "[/data/train]" and given["data.init_args.eval_size"] == "256"
    for point in students:  # distill_pays' strict arm: 1700 twin + 400 spiking steps
        given = flags(point.command)
        assert given["trainer.max_steps"] == "400" and given["model.init_args.warm_start.twin_steps"] == "1700"
    for point, width in zip(twins, ("16", "24")):
        given = flags(point.command)
        assert given["model.init_args.student"] == "teachers.twins.DnCNNTwin"
        assert given["model.init_args.student.init_args.features"] == width
        assert given["model.init_args.warm_start"] == "null" and "model.init_args.warm_start.twin_steps" not in given
        assert given["trainer.max_steps"] == "2100" == given["model.init_args.scheduler.init_args.T_max"]


def test_distilled_sweep_stretches_its_one_cycle_schedule_and_has_no_twin(tmp_path, monkeypatch):
    monkeypatch.chdir(REPO)
    sweep = "recipes/sweeps/energy_frontier_distilled.yaml"
    planned = energy_frontier.plan(options(tmp_path, sweep=sweep, twin_steps=0, steps=600))
    assert {p.kind for p in planned} == {"student"} and len(planned) == 18  # the width is fixed: no twin reference
    hints = [flags(p.command)["model.init_args.warm_start.twin_hint_weight"] for p in planned]
    assert sorted(hints) == ["0.0"] * 9 + ["1.0"] * 9  # every T x rate target with the twin hint on and off
    for point in planned:
        given = flags(point.command)
        assert point.command[point.command.index("fit") + 1:][:2] == ["--config", "recipes/quickstart.yaml"]
        # quickstart.yaml's OneCycleLR needs total_steps > max_steps; a T_max override would be an unknown key
        assert given["trainer.max_steps"] == "600" and given["model.init_args.scheduler.init_args.total_steps"] == "601"
        assert "model.init_args.scheduler.init_args.T_max" not in given
        assert given["model.init_args.warm_start.twin_steps"] == "0"
    assert energy_frontier.scheduler_class(["recipes/quickstart_hint.yaml"]) == "torch.optim.lr_scheduler.CosineAnnealingLR"


def test_pareto_keeps_the_points_nothing_beats():
    points = {"a": (10, 27.0), "b": (20, 27.5), "c": (15, 26.9), "d": (20, 27.2), "e": (5, 25.0), "f": (10, 27.0)}
    rows = [{"name": n, "energy_uj": e, "anchor_psnr": p} for n, (e, p) in points.items()]
    # c is beaten by a (less energy, more PSNR), d by b (same energy, more PSNR); a and f tie, so both stay
    assert [r["name"] for r in energy_frontier.pareto(rows)] == ["e", "a", "f", "b"]


def test_target_line_names_the_nearest_points_when_none_meets_it():
    rows = [{"name": "cheap", "ratio": 60.0, "anchor_psnr": 26.0}, {"name": "close", "ratio": 20.0, "anchor_psnr": 27.6}]
    assert energy_frontier.target_line(rows, 28.0) == (
        "Target (>= 50x less energy than the teacher, within 1.0 dB of it) not met; best at >= 50x: cheap "
        "(60.0x, -2.00 dB); cheapest within 1 dB: close (20.0x, -0.40 dB).")


def write_run(run_dir: Path, timesteps: int, features: int, student_uj: float, psnr: float, target=None,
              size: int = 256, twin_hint: float = 0.0) -> None:
    run_dir.mkdir(parents=True)
    teacher = {"class_path": "teachers.dncnn.DnCNN", "init_args": {"features": 32}}
    regularizer = None if target is None else {"kind": "target", "weight": 1.0, "target": target}
    layers = [{"layer": "head.conv.layer", "output_shape": [features, size, size]}]
    results = {
        "timesteps": timesteps,
        "config": {"model": {"init_args": {"teacher": teacher, "rate_regularizer": regularizer,
                                           "warm_start": {"twin_hint_weight": twin_hint},
                                           "student": {"init_args": {"features": features}}}}},
        "energy": {"student_uj": student_uj, "teacher_uj": 2000.0, "ratio": 2000.0 / student_uj,
                   "mean_firing_rate": None if timesteps == 1 and target is None else 0.2,
                   "constants": {"name": "45nm-fp32"}, "student": {"layers": layers},
                   "teacher": {"layers": [{"layer": "body.0", "output_shape": [32, size, size]}]}},
        "convergence": {"train_seconds": 600.0},
    }
    (run_dir / "results.json").write_text(json.dumps(results))
    (run_dir / "anchor.json").write_text(json.dumps({"anchor_psnr": psnr}))


def test_table_only_writes_the_summary_and_the_plot(planned, tmp_path, monkeypatch):
    by_kind = {}
    for point in planned:
        by_kind.setdefault(point.kind, []).append(point)
    cheap, costly = by_kind["student"][:2]
    write_run(cheap.run_dir, 2, 16, 20.0, 27.5, target=0.1)  # 100x, -0.5 dB: the target met
    write_run(costly.run_dir, 4, 24, 100.0, 27.2, twin_hint=1.0)  # beaten by the cheap one
    write_run(by_kind["ann_twin"][0].run_dir, 1, 16, 300.0, 27.9)
    nested = {"features": 24, "levels": 4, "anchor_psnr": 27.0, "energy_uj": 500.0}
    (tmp_path / "teacher_anchor.json").write_text(json.dumps({"anchor_psnr": 28.0, "nested": nested}))
    energy_frontier.main(["--runs-dir", str(tmp_path), "--table-only", "--train", "/data/train",
                          "--eval", "/data/eval"])
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["pareto"] == [cheap.name] and summary["energy_measured_on"] == "256x256 gray image, 45nm-fp32"
    text = (tmp_path / "summary.md").read_text()
    assert f"within 1.0 dB of it) met by {cheap.name} (100.0x, -0.50 dB)." in text
    assert "Energy per image: 256x256 gray image, 45nm-fp32" in text and "teacher 2,000.0 µJ / image" in text
    assert (tmp_path / "frontier.png").stat().st_size > 0
    assert ("ANN twin: the teacher's nested network (width 24, 4-level activations; the students' start by weight "
            "selection): 27.00 dB (-1.00 vs the teacher), 500.0 µJ / image (4.0x less than the teacher).") in text
    costly_row = next(line for line in text.splitlines() if line.startswith(f"| {costly.name} |"))
    assert costly_row.split(" | ")[3:6] == ["none", "1", "27.20"]  # rate target, twin hint, anchor PSNR

    rows = summary["rows"]
    for r in rows:
        r["image_size"], r["teacher_image_size"] = tuple(r["image_size"]), tuple(r["teacher_image_size"])
    ax = energy_frontier.frontier_figure(rows, {"anchor_psnr": 28.0, "nested": nested}).axes[0]
    assert ax.get_xscale() == "log" and "256x256 gray image" in ax.get_xlabel()
    marked = {c.get_label(): c.get_offsets().tolist() for c in ax.collections}
    assert marked["teacher"] == [[2000.0, 28.0]] and marked["ANN twin, width 16"] == [[300.0, 27.9]]
    assert marked["ANN twin: the teacher's nested network, width 24"] == [[500.0, 27.0]]
    assert marked["T=2, width 16, rate target"] == [[20.0, 27.5]] and marked["T=4, width 24, twin hint 1"] == [[100.0, 27.2]]


def test_energies_on_different_images_are_refused(tmp_path):
    rows = [{"image_size": (256, 256), "teacher_image_size": (256, 256), "constants": "45nm-fp32"},
            {"image_size": (64, 64), "teacher_image_size": (64, 64), "constants": "45nm-fp32"}]
    with pytest.raises(RuntimeError, match="different images or constants"):
        energy_frontier.measured_on(rows)


def test_nested_energy_counts_the_narrow_network_only():
    from teachers.dncnn import DnCNN

    net = DnCNN(in_channels=1, features=8, depth=4, bn=False, nested_features=4)
    # head 1->4, two 4->4 convs, tail 4->1, 3x3 kernels, on 16x16 pixels; the wide network's 8 channels cost nothing
    macs = (1 * 4 + 4 * 4 * 2 + 4 * 1) * 9 * 16 * 16
    assert energy_frontier.nested_energy_uj(net, (16, 16), "45nm-fp32") == pytest.approx(macs * 4.6e-6)


def test_a_blind_nested_network_is_measured_with_its_noise_map_channel():
    from teachers.dncnn import DnCNN

    net = DnCNN(in_channels=1, features=8, depth=4, bn=False, nested_features=4, noise_map=True)
    # the head reads the image and the level map: 2 -> 4 channels; then as above
    macs = (2 * 4 + 4 * 4 * 2 + 4 * 1) * 9 * 16 * 16
    assert energy_frontier.nested_energy_uj(net, (16, 16), "45nm-fp32") == pytest.approx(macs * 4.6e-6)


def test_a_cached_teacher_score_without_its_nested_network_is_redone():
    nested_teacher = {"teacher": {"init_args": {"nested_features": 24}}, "anchor_psnr": 30.0}
    assert energy_frontier.lacks_nested(nested_teacher)
    assert not energy_frontier.lacks_nested({**nested_teacher, "nested": {"anchor_psnr": 28.9}})
    assert not energy_frontier.lacks_nested({"teacher": {"init_args": {"features": 32}}, "anchor_psnr": 29.5})
