"""Leaderboard: grouping by setting, seeds as mean ± std, no-hint twins, formats, bad files skipped."""
import csv
import io
import json
import shutil
import statistics
import subprocess
from pathlib import Path

import pytest

from distill.errors import ConfigError
from distill.leaderboard import LATEX_PREAMBLE, group_runs, latex_escape, leaderboard, load_runs, main
from distill.results import write_results

HINT = {"teacher": "body.1", "student": "head.neuron", "signal": "spikes", "time_reduce": "mean",
        "adapter": "conv1x1", "loss": "mse", "weight": 0.12}


def make_results(run_dir: Path, *, seed: int = 0, hints: bool = True, psnr: float = 30.0, teacher_psnr: float = 31.0,
                 steps: int | None = 1200, model: str = "SpikingDnCNN", sigma: float = 25, lr: float = 1e-3,
                 y_channel: bool = False, teacher: str = "teachers.dncnn.DnCNN", with_samples: bool = False,
                 firing_rates: dict | None = None, image_size: list | None = None) -> Path:
    """A results.json shaped like DistillationModule.results() (trimmed)."""
    hint_list = [dict(HINT)] if hints else []
    history = [{"step": s, "seconds": s / 100, "psnr": psnr - 3 + 3 * s / 2000} for s in range(0, 2001, 400)]
    layers = [{"layer": "head.conv", "kind": "analog", "output_shape": [8, 16, 16], "macs": 1e5, "input_rate": None,
               "acs": 0, "neuron_updates": 0, "energy_pj": 4.6e5},
              {"layer": "blocks.0.conv", "kind": "spike", "output_shape": [8, 16, 16], "macs": 4e5, "input_rate": 0.1,
               "acs": 4e4, "neuron_updates": 0, "energy_pj": 3.6e4}]
    results = {
        "run": {"name": run_dir.name, "dir": str(run_dir), "global_step": 2000, "epochs": 3, "world_size": 1},
        "task": "denoise", "dataset": "skimage", "sigma": sigma, "channels": 1, "model": model, "timesteps": 4,
        "config": {
            "seed_everything": seed,
            "trainer": {"max_steps": 2000, "default_root_dir": str(run_dir)},
            "model": {"class_path": "distill.distillation.DistillationModule",
                      "init_args": {"teacher": {"class_path": teacher, "init_args": {"depth": 17}},
                                    "student": {"class_path": f"students.{model}", "init_args": {"timesteps": 4}},
                                    "hints": hint_list, "output_distillation": None,
                                    "optimizer": {"class_path": "torch.optim.Adam", "init_args": {"lr": lr}}}},
        },
        "metric_protocol": {"y_channel": y_channel, "crop_border": 0, "data_range": 1.0, "per_image": True},
        "metrics": {"input": {"psnr": 20.2, "ssim": 0.3}, "teacher": {"psnr": teacher_psnr, "ssim": 0.88},
                    "student": {"psnr": psnr, "ssim": 0.85}},
        "params": {"teacher": 556_000, "student": 45_000, "adapters": 300, "ratio": 556_000 / 45_000},
        "energy": {"constants": {"name": "45nm-fp32"}, "teacher_uj": 2000.0, "student_uj": 200.0, "ratio": 10.0,
                   "student": {"model": model, "spiking": True, "layers": layers},
                   "teacher": {"model": "DnCNN", "spiking": False, "layers": layers[:1]}},
        "convergence": {"targets": {"teacher-1dB": {"target_db": teacher_psnr - 1, "step": steps,
                                                    "seconds": None if steps is None else steps / 100}},
                        "history": history, "train_seconds": 20.0, "reference_psnr": teacher_psnr + 0.2},
        "teacher_source": None,
        "hints": hint_list,
        "versions": {"python": "3.11"},
    }
    if firing_rates is not None:
        results["firing_rates"] = firing_rates
    if image_size is not None:
        results["energy"]["image_size"] = image_size
    run_dir.mkdir(parents=True, exist_ok=True)
    write_results(run_dir / "results.json", results)
    return run_dir / "results.json"


@pytest.fixture
def runs(tmp_path):
    root = tmp_path / "runs"
    make_results(root / "hint-s0", seed=0, hints=True, psnr=30.0, steps=1200)
    make_results(root / "hint-s1", seed=1, hints=True, psnr=30.2, steps=1400)
    make_results(root / "plain-s0", seed=0, hints=False, psnr=29.0, steps=3400)
    make_results(root / "plain-s1", seed=1, hints=False, psnr=29.4, steps=None)
    return root


def test_groups_seeds_and_finds_twins(runs):
    loaded, skipped = load_runs(runs)
    groups = group_runs(loaded)
    assert skipped == 0 and len(groups) == 2
    hint = next(g for g in groups if g.first.uses_distillation())
    plain = next(g for g in groups if not g.first.uses_distillation())
    assert len(hint.runs) == 2 and hint.twin is plain and plain.twin is None


def test_markdown_values(runs):
    text, rows, n, skipped = leaderboard(runs, "md", bold_best=True)
    assert (rows, n, skipped) == (2, 4, 0)
    lines = text.strip().splitlines()
    header = lines[0]
    assert "PSNR (dB, gray, crop 0)" in header and "SSIM (gray, crop 0)" in header
    assert "Steps to teacher-1dB (hint / no hint)" in header
    hint_row = next(line for line in lines if "1 hint" in line)
    plain_row = next(line for line in lines if "| none |" in line)
    assert "**30.10 ± 0.14**" in hint_row  # mean ± sample std of 30.0, 30.2, bold as the best
    assert "29.20 ± 0.28" in plain_row and "**29.20" not in plain_row
    assert "1300 / 3400 (1/2)" in hint_row  # hint mean steps / twin mean over the seed that reached it
    assert "-0.90 ± 0.14" in hint_row  # Δ PSNR to teacher
    assert "12.4×" in hint_row and "45k" in hint_row and "| 200 ± 0 |" in hint_row
    assert "| DnCNN |" in hint_row and "| 25 |" in hint_row


def test_columns_choose_and_order(runs):
    text, *_ = leaderboard(runs, "md", columns=["psnr", "distill"])
    assert text.splitlines()[0] == "| PSNR (dB, gray, crop 0) | Distillation |"
    with pytest.raises(ConfigError, match="unknown column"):
        leaderboard(runs, "md", columns=["nope"])


def test_energy_header_names_the_image_size_the_runs_measured(tmp_path):
    same, mixed = tmp_path / "same", tmp_path / "mixed"
    for root, sizes in ((same, ([1, 256, 256], [1, 256, 256])), (mixed, ([1, 256, 256], [1, 192, 128]))):
        make_results(root / "a", seed=0, image_size=sizes[0])
        make_results(root / "b", seed=1, hints=False, image_size=sizes[1])
    assert leaderboard(same, "md", columns=["energy_uj"])[0].splitlines()[0] == "| Energy / 256×256 image (µJ) |"
    assert "Energy / image, sizes differ (µJ)" in leaderboard(mixed, "md", columns=["energy_uj"])[0]
    assert r"Energy / 256$\times$256 image" in leaderboard(same, "latex", columns=["energy_uj"])[0]
    make_results(tmp_path / "old" / "a")  # results.json from before image_size was recorded
    assert leaderboard(tmp_path / "old", "md", columns=["energy_uj"])[0].splitlines()[0] == "| Energy / image (µJ) |"


def _md_rows(text: str) -> list[dict[str, str]]:
    """A markdown table as one {header: cell} dict per body row."""
    lines = [[cell.strip() for cell in line.strip().strip("|").split("|")] for line in text.strip().splitlines()]
    return [dict(zip(lines[0], cells)) for cells in lines[2:]]


def test_variant_column_separates_other_config_differences(runs):
    make_results(runs / "hint-lr", seed=0, hints=True, psnr=31.0, lr=1e-2)
    text, rows, *_ = leaderboard(runs, "md")
    assert rows == 3 and "Variant" in text.splitlines()[0]
    by_variant = {row["Variant"]: row for row in _md_rows(text)}
    assert set(by_variant) == {"optimizer.lr=0.01", "optimizer.lr=0.001", "—"}
    psnr = "PSNR (dB, gray, crop 0)"
    assert (by_variant["optimizer.lr=0.01"]["Seeds"], by_variant["optimizer.lr=0.01"][psnr]) == ("1", "31.00")
    assert by_variant["optimizer.lr=0.001"][psnr] == f"{statistics.mean([30.0, 30.2]):.2f} ± {statistics.stdev([30.0, 30.2]):.2f}"
    assert by_variant["—"]["Distillation"] == "none"


def test_latex_booktabs_and_escaping(tmp_path):
    root = tmp_path / "runs"
    make_results(root / "a", model="Spiking_DnCNN", hints=True)
    make_results(root / "b", model="Spiking_DnCNN", hints=False, psnr=28)
    text, *_ = leaderboard(root, "latex", bold_best=True)
    for rule in (r"\toprule", r"\midrule", r"\bottomrule", r"\begin{tabular}"):
        assert rule in text
    assert r"Spiking\_DnCNN" in text and "Spiking_DnCNN" not in text
    assert r"$\sigma$" in text and r"\textbf{30.00}" in text
    assert latex_escape("50% & #1_x") == r"50\% \& \#1\_x"


def test_latex_states_its_preamble_and_explains_abbreviations(runs, capsys):
    text, *_ = leaderboard(runs, "latex")
    assert text.splitlines()[0].startswith(f"% spikedistill leaderboard: needs {LATEX_PREAMBLE} in the preamble")
    note = text.split("\\end{tabular}")[1]
    assert "n/r: not reached" in text  # the plain seed 1 never reached the target
    for explained in ("n/r: not reached", "(k/n): only k of n seeds", "T/S: teacher over student",
                      "T: timesteps", "$\\pm$ sample standard deviation"):
        assert explained in note, explained
    narrow, *_ = leaderboard(runs, "latex", columns=["model", "params"])
    assert "n/r" not in narrow and "T/S" not in narrow  # only what the shown columns use
    document, *_ = leaderboard(runs, "latex", standalone=True)
    assert document.startswith("\\documentclass{article}") and document.rstrip().endswith("\\end{document}")
    assert LATEX_PREAMBLE in document and "n/r: not reached" in document
    assert "landscape" in leaderboard(runs, "latex", standalone=True, landscape=True)[0]
    main([str(runs), "--standalone"])  # --standalone implies LaTeX
    assert capsys.readouterr().out.startswith("\\documentclass{article}")
    with pytest.raises(ConfigError, match="--standalone writes a LaTeX document: use it with --format latex, not md"):
        leaderboard(runs, "md", standalone=True)
    with pytest.raises(ConfigError, match="add --standalone"):
        leaderboard(runs, "latex", landscape=True)


def pdflatex(folder: Path, name: str, text: str) -> str:
    """Compile `text` as `name`.tex in `folder`; its log."""
    (folder / f"{name}.tex").write_text(text)
    proc = subprocess.run(["pdflatex", "-interaction=nonstopmode", "-halt-on-error", f"{name}.tex"], cwd=folder,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout[-2000:]
    return (folder / f"{name}.log").read_text(errors="replace")


@pytest.mark.skipif(shutil.which("pdflatex") is None, reason="pdflatex is not installed")
def test_latex_compiles_unmodified_and_fits_the_page(runs, tmp_path):
    for name, options in (("portrait", {}), ("landscape", {"landscape": True})):
        document, *_ = leaderboard(runs, "latex", bold_best=True, standalone=True, **options)
        log = pdflatex(tmp_path, name, document)
        assert "Overfull" not in log and "Float too large" not in log, name
    fragment, *_ = leaderboard(runs, "latex", bold_best=True, columns=["model", "psnr", "seeds"])
    pdflatex(tmp_path, "fragment", f"\\documentclass{{article}}\n{LATEX_PREAMBLE}\n\\begin{{document}}\n"
                                   f"{fragment}\\end{{document}}\n")


def test_csv_is_machine_readable(runs):
    text, *_ = leaderboard(runs, "csv")
    rows = list(csv.DictReader(io.StringIO(text)))
    hint = next(r for r in rows if r["distill"] == "1 hint")
    assert float(hint["psnr_mean"]) == pytest.approx(30.1) and float(hint["psnr_std"]) == pytest.approx(0.1414, abs=1e-3)
    assert float(hint["steps"]) == 1300 and float(hint["steps_twin"]) == 3400
    assert hint["seeds"] == "2"


def test_bad_files_are_skipped_with_a_warning(runs, capsys):
    bad = runs / "broken" / "results.json"
    bad.parent.mkdir()
    bad.write_text('{"metrics": {')
    other = runs / "other" / "results.json"
    other.parent.mkdir()
    other.write_text(json.dumps([1, 2]))
    text, rows, n, skipped = leaderboard(runs, "md")
    err = capsys.readouterr().err
    assert str(bad) in err and "invalid JSON" in err and str(other) in err
    assert (rows, n, skipped) == (2, 4, 2)


def test_main_writes_file_atomically_and_summarises(runs, tmp_path, capsys):
    out = tmp_path / "board" / "table.tex"
    main([str(runs), "--output", str(out), "--bold-best", "--columns", "model,psnr", "steps"])
    text = out.read_text()
    assert text.splitlines()[1] == "\\begin{tabular}{lrr}"  # format from the suffix
    assert f"leaderboard: 2 row(s) from 4 run(s) -> {out} (latex)" in capsys.readouterr().out
    assert [p.name for p in out.parent.iterdir()] == ["table.tex"]
    body = text.split("\\midrule\n")[1].split("\\bottomrule")[0]
    cells = [line.removesuffix(" \\\\").split(" & ") for line in body.strip().splitlines()]
    hint, plain = [30.0, 30.2], [29.0, 29.4]  # the fixture's PSNRs; steps 1200, 1400 (hint), 3400, never (plain)
    assert cells == [
        ["SpikingDnCNN", f"\\textbf{{{statistics.mean(hint):.2f} $\\pm$ {statistics.stdev(hint):.2f}}}",
         f"{statistics.mean([1200, 1400]):.0f} / 3400 (1/2)"],
        ["SpikingDnCNN", f"{statistics.mean(plain):.2f} $\\pm$ {statistics.stdev(plain):.2f}", "3400 (1/2)"],
    ]


def test_main_stdout_and_errors(runs, tmp_path, capsys):
    main([str(runs), "--format", "csv"])
    captured = capsys.readouterr()
    assert captured.out.startswith("model,teacher,task") and "2 row(s) from 4 run(s) -> stdout (csv)" in captured.err
    rows = {row["distill"]: row for row in csv.DictReader(io.StringIO(captured.out))}
    assert set(rows) == {"1 hint", "none"}
    for name, psnrs, steps, twin in (("1 hint", [30.0, 30.2], 1300.0, 3400.0), ("none", [29.0, 29.4], 3400.0, None)):
        row = rows[name]  # the fixture's values: teacher 31 dB, 200 uJ, 45k of 556k parameters
        assert float(row["psnr_mean"]) == pytest.approx(statistics.mean(psnrs))
        assert float(row["psnr_std"]) == pytest.approx(statistics.stdev(psnrs), abs=1e-6)
        assert float(row["delta_psnr_mean"]) == pytest.approx(statistics.mean(psnrs) - 31.0)
        assert float(row["energy_uj_mean"]) == 200.0 and float(row["energy_ratio"]) == 10.0
        assert float(row["params"]) == 45_000 and float(row["param_ratio"]) == pytest.approx(556_000 / 45_000, abs=1e-6)
        assert float(row["steps"]) == steps and row["steps_twin"] == ("" if twin is None else f"{twin}")
        assert row["seeds"] == "2" and row["model"] == "SpikingDnCNN" and row["sigma"] == "25"
    with pytest.raises(SystemExit):
        main([str(tmp_path / "nowhere")])
    assert "does not exist" in capsys.readouterr().err
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(SystemExit):
        main([str(empty)])
    assert "no readable results.json" in capsys.readouterr().err


def test_progress_bar_for_many_runs(tmp_path, capsys):
    root = tmp_path / "many"
    for seed in range(3):
        make_results(root / f"r{seed}", seed=seed)
    loaded, skipped = load_runs(root, progress=True)
    assert (len(loaded), skipped) == (3, 0)
    err = capsys.readouterr().err
    assert "reading results.json" in err and "3/3" in err  # the bar counts every run


def test_model_alone_runs(tmp_path):
    path = make_results(tmp_path / "runs" / "teacher", hints=False)
    data = json.loads(path.read_text())
    data["metrics"] = {"input": data["metrics"]["input"], "model": {"psnr": 31.5, "ssim": 0.9}}
    data["params"] = {"model": 556_000}
    data["energy"] = {"model_uj": 2000.0}
    data["config"]["model"] = {"class_path": "distill.module.RestorationModule",
                               "init_args": {"model": {"class_path": "teachers.dncnn.DnCNN"}}}
    path.write_text(json.dumps(data))
    text, *_ = leaderboard(tmp_path / "runs", "md")
    row = text.strip().splitlines()[-1]
    assert "31.50" in row and "| alone |" in row and "556k" in row and "2000" in row


def test_variant_names_list_entries_and_paths_briefly(runs):
    for name, weight in (("w-small", 0.03), ("w-big", 0.5)):
        path = make_results(runs / name, hints=True)
        data = json.loads(path.read_text())
        data["config"]["model"]["init_args"]["hints"][0]["weight"] = weight
        data["config"]["model"]["init_args"]["teacher"]["init_args"]["checkpoint"] = f"/abs/{name}/teacher.pt"
        write_results(path, data)
    text, *_ = leaderboard(runs, "md")
    assert "hints[0].weight=0.03" in text and "hints[0].weight=0.5" in text
    assert "checkpoint=w-small/teacher.pt" in text and "/abs/" not in text


def test_gray_and_rgb_runs_are_labelled_by_protocol_not_variant(runs):
    path = make_results(runs / "rgb", hints=True, psnr=31.0)
    data = json.loads(path.read_text())
    data["channels"] = 3
    data["config"]["model"]["init_args"]["student"]["init_args"]["in_channels"] = 3
    write_results(path, data)
    text, rows, *_ = leaderboard(runs, "md", bold_best=True)
    assert rows == 3 and "Variant" not in text
    rgb = [line for line in text.splitlines()[2:] if "RGB" in line]
    assert len(rgb) == 1 and "31.00" in rgb[0]
    assert "**30.10 ± 0.14**" in text and "**31.00**" not in text  # bold compares within a colour only


def test_variant_names_a_null_against_a_sub_config(runs):
    path = make_results(runs / "decayed", hints=True)
    data = json.loads(path.read_text())
    data["config"]["model"]["init_args"]["hints"][0]["schedule"] = {"kind": "cosine", "decay_steps": 100}
    write_results(path, data)
    for name in ("hint-s0", "hint-s1"):
        path = runs / name / "results.json"
        data = json.loads(path.read_text())
        data["config"]["model"]["init_args"]["hints"][0]["schedule"] = None
        write_results(path, data)
    text, *_ = leaderboard(runs, "md")
    assert "hints[0].schedule=None" in text
    assert "hints[0].schedule.decay_steps=100, hints[0].schedule.kind=cosine" in text


def test_seeds_counts_distinct_seeds_and_names_repeats(runs):
    shutil.copytree(runs / "hint-s0", runs / "hint-s0-again")
    text, *_ = leaderboard(runs, "md")
    hint_row = next(line for line in text.splitlines() if "1 hint" in line)
    plain_row = next(line for line in text.splitlines() if "| none |" in line)
    assert "| 2 (3 runs) |" in hint_row and "| 2 |" in plain_row
