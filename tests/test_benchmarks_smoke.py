"""Smoke runs of the benchmark scripts' core functions at minimal sizes: output structure, not timings.

Nothing here reads ../shared/data; the quality benchmark is exercised through its command plan and
its summary of (hand-written) results.json files.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarks import distill_pays, distill_quality, memory, teacher_levers, teacher_speed, train_speed  # noqa: E402


pytestmark = pytest.mark.usefixtures("single_thread")


# ---------------------------------------------------------------------------------------------------
# teacher_speed


def test_teacher_speed_variants_train_one_network_on_one_batch():
    """Layout and precision levers change speed, not the step: the first loss of channels_last equals fp32's and
    bf16's is within bf16 rounding; every variant's loss falls on its fixed batch."""
    losses = {v: [teacher_speed.build_step(v, batch=2, size=16, compiled=False)] for v in teacher_speed.VARIANTS}
    for v, (step,) in losses.items():
        losses[v] = [step() for _ in range(6)]
    assert losses["dncnn17_channels_last"][0] == pytest.approx(losses["dncnn17"][0], rel=1e-5)
    assert losses["dncnn17_bf16"][0] == pytest.approx(losses["dncnn17"][0], rel=3e-2)
    assert losses["ffdnet64x15_channels_last"][0] == pytest.approx(losses["ffdnet64x15"][0], rel=1e-5)
    assert all(trace[-1] < trace[0] for trace in losses.values()), losses


# ---------------------------------------------------------------------------------------------------
# distill_pays


def test_distill_pays_nested_arms_start_from_the_nested_teacher(capsys, tmp_path, repo_root, monkeypatch):
    """The nested arms' overrides parse through the real CLI: the nested DnCNN is the teacher, weight selection is
    on, and only the distilled arm pulls its twin towards the teacher (the strict one gets the strict twin steps)."""
    import yaml

    from distill.cli import main

    monkeypatch.chdir(repo_root)
    from distill.export import FORMAT
    from teachers.dncnn import DnCNN

    teacher = tmp_path / "nested.pt"
    init = {"in_channels": 1, "features": 48, "depth": 8, "bn": False, "nested_features": 24, "nested_levels": 4}
    torch.save({"format": FORMAT, "class_path": "teachers.dncnn.DnCNN", "init_args": init,
                "state_dict": DnCNN(**init).state_dict()}, teacher)
    args = argparse.Namespace(
        system="gray", steps=400, plain_steps=1000, twin_steps=1000, strict_twin_steps=1700, val_every=100,
        eval_size=64, train=tmp_path, eval=tmp_path, nested_teacher=teacher, data_seed=None, untrained_twin_steps=1100,
        low_lr=3e-4, student=["neuron=multi_threshold", "neuron_levels=[0.5,0.5]"], warm_student=["init_membrane=0.25"])
    configs = {}
    for arm in ("distilled_nested+twin_hint", "strict+select_nested+twin_hint", "select_nested+lowlr",
                "select_nested+lowlr-twin_hint", "select_nested-lowlr"):
        with pytest.raises(SystemExit) as exit_:
            main([*distill_pays.arm_args(arm, 0, args, tmp_path / arm)[:-1], "--print_config"])
        assert exit_.value.code == 0
        configs[arm] = yaml.safe_load(capsys.readouterr().out)["model"]["init_args"]
    for init in configs.values():
        assert init["teacher"]["init_args"]["nested_features"] == 24 and init["teacher"]["init_args"]["checkpoint"] == str(teacher)
        assert init["teacher"]["init_args"]["nested_levels"] == 4  # the file's own arguments
        assert init["warm_start"]["select_from_teacher"] is True
        student = init["student"]["init_args"]  # --student reaches every arm
        assert (student["neuron"], student["neuron_levels"], student["init_membrane"]) == ("multi_threshold", [0.5, 0.5], 0.25)
        assert init["hints"] == [] and init["warm_start"]["twin_hints"] is False
    plain = distill_pays.arm_args("plain", 0, args, tmp_path / "p")  # --warm-student skips the arm without a warm start
    assert "--model.init_args.student.init_args.neuron_levels=[0.5,0.5]" in plain
    assert not any("init_membrane" in a for a in plain)
    distilled, strict = configs["distilled_nested+twin_hint"], configs["strict+select_nested+twin_hint"]
    assert distilled["warm_start"]["twin_hint_weight"] == strict["warm_start"]["twin_hint_weight"] == 1.0
    assert (distilled["warm_start"]["teacher_output_weight"], distilled["warm_start"]["twin_steps"]) == (1.0, 1000)
    assert (strict["warm_start"]["teacher_output_weight"], strict["warm_start"]["twin_steps"]) == (0.0, 1700)
    # the whole nested network: no twin training, the twin's time as spiking steps, a warm-up to a low peak
    whole = configs["select_nested+lowlr"]
    assert (whole["warm_start"]["teacher_output_weight"], whole["warm_start"]["twin_steps"]) == (0.0, 0)
    schedule = whole["scheduler"]
    assert schedule["class_path"] == "torch.optim.lr_scheduler.OneCycleLR"
    assert (schedule["init_args"]["max_lr"], schedule["init_args"]["total_steps"]) == (3e-4, 1101)
    optimizer = torch.optim.Adam([torch.zeros(1, requires_grad=True)], lr=1e-3)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, **{k: v for k, v in schedule["init_args"].items()
                                                                   if k not in ("epochs", "steps_per_epoch")})
    lrs = []
    for _ in range(1100):  # Lightning steps it once per optimizer step: 1100 steps fit
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert lrs[0] == pytest.approx(3e-4 / 25) and max(lrs) == pytest.approx(3e-4, rel=1e-3)
    assert lrs.index(max(lrs)) == pytest.approx(55, abs=2) and lrs[-1] < 3e-4 / 90
    assert "--trainer.max_steps=1100" in distill_pays.arm_args("select_nested+lowlr", 0, args, tmp_path / "w")
    # the ablation arms: the same minus the twin hint, or minus the schedule (the recipe's cosine)
    no_hint, no_schedule = configs["select_nested+lowlr-twin_hint"], configs["select_nested-lowlr"]
    assert no_hint["warm_start"]["twin_hint_weight"] == 0.0 and no_hint["scheduler"] == schedule
    assert no_schedule["warm_start"]["twin_hint_weight"] == 1.0 and no_schedule["warm_start"]["twin_steps"] == 0
    assert no_schedule["scheduler"]["class_path"].endswith("CosineAnnealingLR")
    assert no_schedule["scheduler"]["init_args"]["T_max"] == 1100
    assert not any("data.init_args.seed" in a for a in distill_pays.arm_args("strict+twin_hint", 0, args, tmp_path))
    args.data_seed = 1
    with pytest.raises(SystemExit):
        main([*distill_pays.arm_args("strict+twin_hint", 0, args, tmp_path / "d")[:-1], "--print_config"])
    assert yaml.safe_load(capsys.readouterr().out)["data"]["init_args"]["seed"] == 1
    args.data_seed = distill_pays.data_seed("seed")  # each run's data follows its own seed
    assert "--data.init_args.seed=2" in distill_pays.arm_args("plain", 2, args, tmp_path)
    with pytest.raises(argparse.ArgumentTypeError, match="'-1'"):
        distill_pays.data_seed("-1")
    args.nested_teacher = tmp_path / "missing.pt"
    with pytest.raises(SystemExit, match="missing.pt"):
        distill_pays.arm_args("distilled_nested+twin_hint", 0, args, tmp_path / "x")
    args.nested_teacher = tmp_path / "plain.pt"
    torch.save({"format": FORMAT, "class_path": "teachers.dncnn.DnCNN", "init_args": {"features": 8}, "state_dict": {}},
               args.nested_teacher)
    with pytest.raises(SystemExit, match="plain.pt is not an exported DnCNN with nested_features"):
        distill_pays.arm_args("strict+select_nested+twin_hint", 0, args, tmp_path / "y")


# ---------------------------------------------------------------------------------------------------
# teacher_levers


def _lever_config(lever: str, capsys, tmp_path) -> dict:
    """The resolved recipe of one lever's run, as the CLI parses it."""
    import yaml

    from distill.cli import main

    args = argparse.Namespace(steps=3000, lr=1e-3, recipe=teacher_levers.DEFAULT_RECIPE, seed=3, batch=16,
                              train=tmp_path / "train", eval=tmp_path / "eval", eval_size=64, val_every=500)
    argv = teacher_levers.command(lever, args, tmp_path / lever)[1:]  # without the executable
    with pytest.raises(SystemExit) as exit_:
        main([*argv, "--print_config"])
    assert exit_.value.code == 0
    return yaml.safe_load(capsys.readouterr().out)


def test_teacher_levers_change_one_thing_each(capsys, tmp_path, repo_root, monkeypatch):
    """Each lever's overrides parse through the real CLI and change what they name on top of the same baseline."""
    monkeypatch.chdir(repo_root)
    base = _lever_config("baseline", capsys, tmp_path)
    assert base["trainer"]["max_steps"] == 3000 and base["seed_everything"] == 3
    assert base["model"]["init_args"]["scheduler"]["init_args"]["T_max"] == 3000
    assert base["data"]["init_args"]["patch_size"] == 48 and base["data"]["init_args"]["patches_per_epoch"] == 48000
    ema = _lever_config("ema", capsys, tmp_path)
    [callback] = ema["trainer"]["callbacks"]
    assert callback["class_path"] == "lightning.pytorch.callbacks.EMAWeightAveraging"
    assert callback["init_args"]["decay"] == pytest.approx(1 - 1 / 150, abs=1e-6)  # a horizon of 5 % of 3000 steps
    warmup = _lever_config("warmup", capsys, tmp_path)["model"]["init_args"]["scheduler"]
    assert warmup["class_path"] == "torch.optim.lr_scheduler.OneCycleLR"
    assert warmup["init_args"]["total_steps"] == 3000 and warmup["init_args"]["max_lr"] == 1e-3
    loss = _lever_config("mse", capsys, tmp_path)["model"]["init_args"]["restoration_loss"]["init_args"]
    assert (loss["l1"], loss["mse"]) == (0.0, 1.0)
    assert _lever_config("clip", capsys, tmp_path)["trainer"]["gradient_clip_val"] == 0.5
    patch = _lever_config("patch32", capsys, tmp_path)
    assert (patch["data"]["init_args"]["patch_size"], patch["trainer"]["max_steps"]) == (32, 6750)
    embedded = _lever_config("patch32+embedded", capsys, tmp_path)["data"]["init_args"]
    assert embedded["train"] == [str(tmp_path / "train"), "skimage-samples"] and embedded["patch_size"] == 32
    # the patch levers see the baseline's pixels: steps x patch^2 is the same
    for steps, size, _ in teacher_levers.levers(3000, 1e-3, tmp_path).values():
        assert steps * size ** 2 == pytest.approx(3000 * 48 ** 2, rel=1e-3)


# ---------------------------------------------------------------------------------------------------
# train_speed


def test_train_speed_grid_structure():
    rows = train_speed.run_speed(["spiking_dncnn", "esdnet_tiny"], [2], ["a", "b", "l", "c"], batch=2, size=8,
                                 warmup=0, repeats=2, memory=False, check=True)
    assert [(r["student"], r["T"]) for r in rows] == [("spiking_dncnn", 2), ("esdnet_tiny", 2)]
    dncnn, esd = rows
    assert set(dncnn["variants"]) == {"a", "b", "l", "c"}
    for stats in dncnn["variants"].values():
        assert stats["n"] == 2 and len(stats["times_ms"]) == 2 and 0 < stats["min_ms"] <= stats["median_ms"]
    # ESDNet has no per-timestep loop: b is reported as skipped with the reason, never timed
    assert "b" not in esd["variants"] and "attention" in esd["skipped"]["b"]
    assert set(esd["variants"]) == {"a", "l", "c"}
    assert train_speed.ratio(esd, "a", "b") is None and train_speed.ratio(dncnn, "a", "c") > 0
    # the snntorch variants compute exactly what the engine computes (eval mode, neurons firing)
    assert dncnn["check"]["b"] == 0.0 and dncnn["check"]["l"] == 0.0 and dncnn["check"]["firing_rate"] > 0
    assert esd["check"]["b"] is None and esd["check"]["l"] == 0.0
    table = train_speed.render(rows, ["a", "b", "l", "c"])
    lines = table.strip().splitlines()
    assert len(lines) == 4 and lines[0].startswith("| student | T |") and "n/a" in lines[3]


@pytest.mark.parametrize("key", ["spiking_unet_tiny", "spiker_ir_tiny"])
def test_naive_step_loops_match_engine(key):
    check = train_speed.check_equivalence(key, 3, batch=1, size=8)
    assert check["firing_rate"] > 0
    assert check["b"] == pytest.approx(0.0, abs=1e-6) and check["l"] == pytest.approx(0.0, abs=1e-6)


def test_train_speed_profile_structure():
    prof = train_speed.profile_step("spiking_dncnn", 2, batch=1, size=8, variants=("a", "b", "c"), steps=2, warmup=0)
    assert set(prof["variants"]) == {"a", "b", "c"}
    names = [n for n, _ in prof["variants"]["a"]["categories"]]
    assert names[0] == "conv forward" and "fused neuron backward (engine)" in names and names[-1] == "Adam step"
    assert prof["variants"]["a"]["step_ms"] > 0 and prof["variants"]["a"]["top_self"]
    assert "where the time goes" in train_speed.render_profile(prof)


def test_train_speed_cli_help(capsys):
    with pytest.raises(SystemExit) as exc:
        train_speed.main(["--help"])
    assert exc.value.code == 0 and "--timesteps" in capsys.readouterr().out


# ---------------------------------------------------------------------------------------------------
# memory


def test_memory_rows_structure():
    """Each cell comes from a fresh subprocess (glibc's mmap threshold fixed, so RSS follows live memory): at
    32x32 a training step's activations raise the high-water mark by megabytes, far above the kernel's per-CPU
    RSS counter slack (in-process, freed warm-up memory is reused and the figure sits within that slack)."""
    segments = memory.parse_segments(["none", "2", "T"])
    assert segments == [None, 2, "T"]
    rows = memory.run_memory("spiking_dncnn", [1, 2], segments, batch=1, size=32)
    assert [r["T"] for r in rows] == [1, 2]
    # T = 1: no chunking applies; T = 2: k = 2 equals k = T, so only the "k = T" column is measured
    assert set(rows[0]["cells"]) == {"no bound", "ANN twin on T·B"}
    assert set(rows[1]["cells"]) == {"no bound", "k = T (1 step/chunk)", "ANN twin on T·B"}
    assert rows[1]["cells"]["k = T (1 step/chunk)"]["segments"] == 2
    for row in rows:
        for cell in row["cells"].values():
            assert {"base_mib", "peak_mib", "step_mib", "step_s"} <= set(cell)
            assert cell["peak_mib"] >= cell["base_mib"] + 1 > 1 and cell["step_s"] > 0
            assert cell["step_mib"] == pytest.approx(cell["peak_mib"] - cell["base_mib"])
    table = memory.render(rows, segments, ann=True)
    assert table.count("\n") == 4 and "k = T" in table


def test_memory_esdnet_is_never_chunked():
    rows = memory.run_memory("esdnet_tiny", [2], [None, "T"], batch=1, size=8, ann=False, isolate=False)
    assert set(rows[0]["cells"]) == {"no bound"}


# ---------------------------------------------------------------------------------------------------
# distill_quality


def _budget():
    return distill_quality.Budget(teacher_steps=30, student_steps=20, val_every=5, teacher_val_every=10, eval_size=64)


def test_quality_plan_uses_the_cli_with_overrides(tmp_path):
    quick, spiden = distill_quality.SYSTEMS["spiden_quickstart"], distill_quality.SYSTEMS["spiden"]
    jobs = distill_quality.plan([quick, spiden], [1, 3], [0, 1], _budget(), tmp_path, Path("/data/train"),
                                Path("/data/eval"))
    names = [j.name for j in jobs]
    # one teacher (and export) per teacher group and colour, shared by both systems
    assert names[:6] == ["teachers/dncnn_32x10/gray/teacher", "teachers/dncnn_32x10/gray/export",
                         "spiden_quickstart/gray/hint_s0", "spiden_quickstart/gray/nohint_s0",
                         "spiden_quickstart/gray/hint_s1", "spiden_quickstart/gray/nohint_s1"]
    assert len(jobs) == 2 * 2 + 2 * 2 * 4 and names.count("teachers/dncnn_32x10/rgb/teacher") == 1
    teacher, export, hint, nohint = jobs[6:10]
    assert teacher.argv[:3] == ["fit", "--config", quick.teacher_recipe]
    assert "--trainer.max_steps=30" in teacher.argv and "--model.init_args.scheduler.init_args.T_max=30" in teacher.argv
    assert "--model.init_args.model.init_args.in_channels=3" in teacher.argv
    assert '--data.init_args.train=["/data/train"]' in teacher.argv and "--data.init_args.sigma=25" in teacher.argv
    assert '--data.init_args.test=["/data/eval"]' in teacher.argv and "--data.init_args.eval_size=64" in teacher.argv
    assert export.argv[0] == "export" and export.argv[2].endswith("teachers/dncnn_32x10/rgb/teacher.pt")
    assert f"--model.init_args.teacher.init_args.checkpoint={export.argv[2]}" in hint.argv
    assert "--model.init_args.student.init_args.in_channels=3" in hint.argv and "--seed_everything=0" in hint.argv
    assert hint.argv.count("--config") == 1 and nohint.argv.count("--config") == 2
    assert quick.nohint_recipe in nohint.argv
    assert hint.meta["role"] == "hint" and nohint.run_dir == tmp_path / "spiden_quickstart" / "rgb" / "nohint_s0"
    assert hint.shell().startswith("spikedistill fit --config recipes/quickstart_hint.yaml")
    spiden_hint = next(j for j in jobs if j.name == "spiden/rgb/hint_s0")
    assert f"--model.init_args.teacher.init_args.checkpoint={export.argv[2]}" in spiden_hint.argv


def test_quality_plan_single_colour_shipped_teacher(tmp_path):
    system = distill_quality.SYSTEMS["esdnet"]  # RGB deraining with the recipe's own teacher
    jobs = distill_quality.plan([system], [1, 3], [0], _budget(), tmp_path, Path("/t"), Path("/e"))
    assert [j.name for j in jobs] == ["esdnet/rgb/hint_s0", "esdnet/rgb/nohint_s0"]
    argv = jobs[0].argv
    assert not any("checkpoint" in a or "in_channels" in a or "sigma" in a or "channels=" in a for a in argv)
    assert '--data.init_args.train=["/t"]' in argv


def test_quality_dry_run_prints_commands(capsys, tmp_path):
    distill_quality.main(["--dry-run", "--systems", "spiden_quickstart", "--channels", "1", "--seeds", "0",
                          "--runs-dir", str(tmp_path), "--train", "x", "--eval", "y"])
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 4 and all(line.startswith("spikedistill ") for line in lines)


def _results(path: Path, student: float | None, history: list[tuple[int, float, float]], teacher: float = 30.0):
    path.mkdir(parents=True)
    metrics = {"input": {"psnr": 20.0, "ssim": 0.3}}
    if student is None:
        metrics["model"] = {"psnr": teacher, "ssim": 0.9}
    else:
        metrics |= {"student": {"psnr": student, "ssim": 0.8}, "teacher": {"psnr": teacher, "ssim": 0.9}}
    data = {
        "run": {"global_step": history[-1][0]}, "metrics": metrics,
        "params": {"ratio": 2.0}, "energy": {"ratio": 5.0},
        "convergence": {"history": [{"step": s, "seconds": sec, "psnr": p} for s, sec, p in history],
                        "train_seconds": history[-1][1]},
    }
    (path / "results.json").write_text(json.dumps(data))


def test_quality_summary_speedup(tmp_path):
    runs = []
    specs = {
        "teacher": (None, [(100, 50.0, 29.0), (200, 100.0, 30.0)]),
        "hint_s0": (28.5, [(10, 5.0, 27.0), (20, 10.0, 28.1), (30, 15.0, 28.5)]),
        "nohint_s0": (28.0, [(10, 4.0, 26.0), (20, 8.0, 27.5), (30, 12.0, 28.0)]),
        "hint_s1": (27.0, [(10, 5.0, 26.0), (20, 10.0, 26.5), (30, 15.0, 27.0)]),
        "nohint_s1": (27.5, [(10, 4.0, 26.0), (20, 8.0, 27.5), (30, 12.0, 27.5)]),
    }
    for name, (student, hist) in specs.items():
        _results(tmp_path / name, student, hist)
        role, _, seed = name.partition("_s")
        runs.append({"name": name, "run_dir": str(tmp_path / name), "system": "spiden_quickstart", "colour": "gray",
                     "role": role, "seed": int(seed) if seed else 0, "group": "dncnn_32x10",
                     "teacher_group": "dncnn_32x10"})
    rows = distill_quality.summarize_runs({"runs": runs})
    assert len(rows) == 1
    row = rows[0]
    assert row["teacher"]["psnr"] == 30.0 and row["teacher"]["source"] == "trained here" and row["seeds"] == [0, 1]
    p0, p1 = row["pairs"]
    assert p0["target_psnr"] == 28.0 and p0["hint"]["step"] == 20 and p0["nohint"]["step"] == 30
    assert p0["step_ratio"] == pytest.approx(1.5) and p0["seconds_ratio"] == pytest.approx(12.0 / 10.0)
    assert p1["hint"]["step"] is None and p1["hint"]["best"] == 27.0 and "step_ratio" not in p1
    assert p1["nohint"]["step"] == 20  # reached its own final PSNR before the last step
    text = distill_quality.render_summary(rows)
    assert "not reached (best 27.00 dB)" in text and "1.50×" in text and "-2.25" in text


def test_quality_chains_keep_teacher_before_its_students(tmp_path):
    systems = [distill_quality.SYSTEMS[k] for k in ("spiden_quickstart", "spiden", "esdnet", "bridge")]
    jobs = distill_quality.plan(systems, [1, 3], [0, 1], _budget(), tmp_path, Path("/t"), Path("/e"))
    chains = distill_quality.chains(jobs)
    assert sorted(j.name for c in chains for j in c) == sorted(j.name for j in jobs)  # each job once
    assert [len(c) for c in chains] == [10, 10, 4, 4]  # DnCNN gray and RGB (2 systems x 4 + teacher, export)
    for chain in chains[:2]:
        assert [j.meta["role"] for j in chain[:2]] == ["teacher", "export"]
        assert len({j.meta["colour"] for j in chain}) == 1
    assert {chains[2][0].meta["system"], chains[3][0].meta["system"]} == {"esdnet", "bridge"}
