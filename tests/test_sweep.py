"""Sweeps: wandb-format file, engine-driven expansion, local runs with skip/resume, manifest, overrides, SLURM
array through submitit (its local executor, and the sbatch script it writes for a fake `sbatch`), and every
shipped file through the command `wandb agent` builds. Tests marked `real_engine` run against wandb's
`sweeps` when importable."""
import json
import os
import shutil
import signal
import sys
import textwrap
import time
from pathlib import Path

import pytest
import submitit
import yaml

from distill.errors import ConfigError
from distill.sweep import (EXTRA, SlurmOptions, WandbSweepEngine, build_command, load_engine, load_sweep, main,
                           prepare, read_metric, run_name, run_slurm, run_sweep)

REPO = Path(__file__).resolve().parents[1]
GRID_FILE = REPO / "recipes" / "sweeps" / "quickstart_grid.yaml"
SHIPPED = sorted((REPO / "recipes" / "sweeps").glob("*.yaml"))
HINT = [{"teacher": "body.16", "student": "blocks.3.neuron", "student_signal": "spikes", "time_reduce": "mean",
         "adapter": "conv1x1", "loss": "mse", "weight": 0.12}]

try:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        import sweeps  # noqa: F401
    HAVE_SWEEPS = True
except ImportError:
    HAVE_SWEEPS = False
real_engine = pytest.mark.skipif(not HAVE_SWEEPS, reason=f"wandb's sweep engine is not installed ({EXTRA})")

# a stand-in for `spikedistill fit`: records its argv, fails on --fail=true, leaves a last.ckpt on --crash=true,
# on --hold=true writes its parent's pid (the submitit task) to `held` and waits to be killed, unless resumed
FAKE_FIT = textwrap.dedent('''
    import json, os, sys, time
    from pathlib import Path
    args = dict(a[2:].split("=", 1) for a in sys.argv[1:] if a.startswith("--") and "=" in a)
    root = Path(args["trainer.default_root_dir"])
    root.mkdir(parents=True, exist_ok=True)
    with open(root / "calls.jsonl", "a") as fh:
        fh.write(json.dumps(sys.argv[1:]) + "\\n")
    if args.get("fail") == "true":
        sys.exit(3)
    if args.get("crash") == "true" and "ckpt_path" not in args:
        (root / "checkpoints").mkdir(exist_ok=True)
        (root / "checkpoints" / "last.ckpt").write_text("ckpt")
        sys.exit(1)
    if args.get("hold") == "true" and "ckpt_path" not in args:
        (root / "held").write_text(str(os.getppid()))
        time.sleep(120)
        sys.exit(4)
    (root / "results.json").write_text(json.dumps({"metrics": {"student": {"psnr": float(args.get("x", 0))}}}))
''')


class FakeEngine:
    """Stands in for wandb's engine: proposes a fixed list, in order, skipping params already proposed."""

    def __init__(self, proposals, problems=()):
        self.proposals, self.problems, self.calls = proposals, list(problems), []

    def violations(self, config):
        return self.problems

    def propose(self, config, past, n):
        self.calls.append((len(past), n))
        seen = [p.params for p in past]
        return [p for p in self.proposals if p not in seen][:n]


def write_sweep(folder: Path, method="grid", extra="", command='["${interpreter}", "${program}", fit, "${args}"]',
                params="  x: {values: [1, 2]}\n  fail: {value: false}\n") -> Path:
    (folder / "fake_fit.py").write_text(FAKE_FIT)
    path = folder / "toy.yaml"
    path.write_text(textwrap.dedent(f"""
        name: toy
        method: {method}
        metric: {{name: test/student_psnr, goal: maximize}}
        program: fake_fit.py
        command: {command}
        """) + extra + "parameters:\n" + params)
    return path


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_load_quickstart_grid():
    spec = load_sweep(GRID_FILE)
    assert spec.name == "quickstart_grid" and spec.method == "grid" and spec.program == "spikedistill"
    assert spec.base_args == ["fit", "--config", "recipes/quickstart_hint.yaml"]
    assert spec.recipes == ["recipes/quickstart_hint.yaml"] and spec.subcommand == "fit"
    params = spec.config["parameters"]
    assert params["model.init_args.hints"]["values"] == [[], HINT]
    assert params["seed_everything"]["values"] == [0, 1]


def test_commands_are_cli_overrides(workdir):
    spec = load_sweep(GRID_FILE)
    params = {"model.init_args.hints": HINT, "seed_everything": 1, "trainer.max_steps": 200, "flag": True, "n": None}
    argv = build_command(spec, params, "runs/sweeps/quickstart_grid/r")
    assert argv[:3] == [sys.executable, "-m", "distill.cli"]
    assert argv[3:] == ["fit", "--config", "recipes/quickstart_hint.yaml",
                        f"--model.init_args.hints={json.dumps(HINT)}",
                        "--seed_everything=1", "--trainer.max_steps=200", "--flag=true", "--n=null",
                        "--trainer.default_root_dir=runs/sweeps/quickstart_grid/r"]
    # deterministic names from the sorted params
    assert run_name("s", {"b": 1, "a": [1]}) == run_name("s", {"a": [1], "b": 1}) != run_name("s", {"a": [2], "b": 1})


def test_dry_run_of_the_grid_prints_four_commands(workdir, capsys):
    (workdir / "recipes").mkdir()
    (workdir / "recipes" / "quickstart_hint.yaml").write_text("model: {}\n")
    proposals = [{"model.init_args.hints": h, "seed_everything": s, "trainer.max_steps": 200}
                 for h in ([], HINT) for s in (0, 1)]
    main([str(GRID_FILE), "--dry-run"], engine=FakeEngine(proposals))
    out = capsys.readouterr().out.splitlines()
    runs = [line for line in out if line.startswith("[run]")]
    assert len(runs) == 4 and all("fit --config recipes/quickstart_hint.yaml" in line for line in runs)
    assert "--trainer.default_root_dir=runs/sweeps/quickstart_grid/quickstart_grid-" in runs[0]
    assert out[-1].startswith("sweep quickstart_grid: dry run, 4 run(s) planned")
    assert not (workdir / "runs").exists()


def test_missing_recipe_is_named(workdir):
    with pytest.raises(ConfigError, match="recipes/quickstart_hint.yaml"):
        run_sweep(GRID_FILE, dry_run=True, engine=FakeEngine([]))


def test_local_runs_skip_and_manifest(workdir, capsys):
    path = write_sweep(workdir)
    engine = FakeEngine([{"x": 1, "fail": False}, {"x": 2, "fail": False}])
    main([str(path)], engine=engine)
    manifest = json.loads((workdir / "runs/sweeps/toy/sweep.json").read_text())
    assert [r["status"] for r in manifest["runs"]] == ["finished", "finished"]
    assert [r["metric"] for r in manifest["runs"]] == [1.0, 2.0]
    assert manifest["runs"][0]["params"] == {"x": 1, "fail": False}
    assert "sweep toy: 2 run(s): 2 finished; runs in runs/sweeps/toy" in capsys.readouterr().out
    # a second invocation reuses the manifest and runs nothing again; the manifest keeps what it knew
    main([str(path)], engine=engine)
    for run in manifest["runs"]:
        assert len((workdir / run["dir"] / "calls.jsonl").read_text().splitlines()) == 1
    again = json.loads((workdir / "runs/sweeps/toy/sweep.json").read_text())
    assert all(r["seconds"] for r in manifest["runs"])
    assert [(r["seconds"], r["returncode"]) for r in again["runs"]] == \
        [(r["seconds"], r["returncode"]) for r in manifest["runs"]]


def test_overrides_reach_every_run_and_name_their_own_runs(workdir):
    path = write_sweep(workdir)
    engine = FakeEngine([{"x": 1, "fail": False}, {"x": 2, "fail": False}])
    main([str(path), "--max-runs", "2", "--", "--trainer.max_steps=5", "--extra", "6"], engine=engine)
    manifest = json.loads((workdir / "runs/sweeps/toy/sweep.json").read_text())
    assert manifest["overrides"] == ["--trainer.max_steps=5", "--extra", "6"]
    assert [r["status"] for r in manifest["runs"]] == ["finished", "finished"]
    for run in manifest["runs"]:
        [call] = [json.loads(line) for line in (workdir / run["dir"] / "calls.jsonl").read_text().splitlines()]
        at = call.index("--trainer.max_steps=5")
        assert call[at:at + 3] == ["--trainer.max_steps=5", "--extra", "6"]
    # without the overrides the runs are others: a 5-step trial never passes for a finished full run
    plain = run_sweep(path, dry_run=True, engine=engine)
    assert {r.name for r in plain.runs}.isdisjoint(r["name"] for r in manifest["runs"])
    assert {r.status for r in plain.runs} == {"pending"}


def test_overrides_and_parameters_that_the_sweep_sets_itself_are_refused(workdir):
    path = write_sweep(workdir)
    for overrides, match in [(["trainer.max_steps=5"], "CLI options such as --trainer.max_steps=5; got 'trainer"),
                             (["--trainer.default_root_dir=elsewhere"], "use --runs-dir")]:
        with pytest.raises(ConfigError, match=match):
            run_sweep(path, dry_run=True, engine=FakeEngine([]), overrides=overrides)
    devices = write_sweep(workdir, params="  trainer.devices: {value: 2}\n")
    with pytest.raises(ConfigError, match=r"trainer.devices is set by `spikedistill sweep` itself \(use --gpus\)"):
        run_sweep(devices, executor="slurm", dry_run=True, engine=FakeEngine([]))
    with pytest.raises(ConfigError, match="--nodes=0"):
        run_sweep(path, executor="slurm", dry_run=True, engine=FakeEngine([]), slurm=SlurmOptions(nodes=0))


def test_failed_and_resumed_runs(workdir, capsys):
    path = write_sweep(workdir)
    engine = FakeEngine([{"x": 1, "fail": True}, {"x": 2, "crash": True}])
    with pytest.raises(SystemExit) as exit_info:
        main([str(path)], engine=engine)
    assert exit_info.value.code == 1
    out = capsys.readouterr().out
    assert "2 failed" in out and "sweep.log" in out
    manifest = json.loads((workdir / "runs/sweeps/toy/sweep.json").read_text())
    crashed = next(r for r in manifest["runs"] if r["params"].get("crash"))
    assert crashed["returncode"] == 1
    # the interrupted run resumes from its last.ckpt; the failing one fails again
    with pytest.raises(SystemExit):
        main([str(path)], engine=engine)
    calls = [json.loads(line) for line in (workdir / crashed["dir"] / "calls.jsonl").read_text().splitlines()]
    assert len(calls) == 2 and not any(a.startswith("--ckpt_path") for a in calls[0])
    assert calls[1][-1] == f"--ckpt_path={workdir / crashed['dir'] / 'checkpoints' / 'last.ckpt'}"
    manifest = json.loads((workdir / "runs/sweeps/toy/sweep.json").read_text())
    assert {r["status"] for r in manifest["runs"]} == {"finished", "failed"}
    assert "ckpt_path=" in (workdir / crashed["dir"] / "sweep.log").read_text()


def test_max_runs_and_random_needs_a_cap(workdir):
    path = write_sweep(workdir)
    sweep = run_sweep(path, max_runs=1, engine=FakeEngine([{"x": 1}, {"x": 2}]), progress=False)
    assert len(sweep.runs) == 1
    with pytest.raises(ConfigError, match="--max-runs=0"):
        run_sweep(path, max_runs=0, dry_run=True, engine=FakeEngine([]))
    random_path = write_sweep(workdir, method="random")
    with pytest.raises(ConfigError, match="--max-runs"):
        run_sweep(random_path, dry_run=True, engine=FakeEngine([]))


def test_bayes_proposes_one_at_a_time_locally(workdir):
    path = write_sweep(workdir, method="bayes", extra="run_cap: 2\n")
    engine = FakeEngine([{"x": 1}, {"x": 2}])
    sweep = run_sweep(path, engine=engine, progress=False)
    assert engine.calls == [(0, 1), (1, 1)]  # the second proposal saw the finished first run
    assert [r.metric for r in sweep.runs] == [1.0, 2.0]


def test_bad_files(workdir):
    with pytest.raises(ConfigError, match="does not exist"):
        load_sweep(workdir / "nope.yaml")
    bad = workdir / "bad.yaml"
    for text, match in [("method: [", "not valid YAML"),
                        ("command: [${program}, fit, ${args}]", r"quote the macros"), ("method: optuna\nparameters: {a: {value: 1}}", "method"),
                        ("method: grid\nparameters: {}", "parameters"),
                        ("method: grid\nprogram: spikedistill\nparameters: {a: {value: 1}}", "command"),
                        ("method: grid\nprogram: spikedistill\ncommand: [\"${program}\", fit, \"${args_json}\"]\n"
                         "parameters: {a: {value: 1}}", "not supported"),
                        ("method: grid\nprogram: spikedistill\ncommand: [\"${program}\", energy, \"${args}\"]\n"
                         "parameters: {a: {value: 1}}", "one of fit")]:
        bad.write_text(text)
        with pytest.raises(ConfigError, match=match):
            load_sweep(bad)
    path = write_sweep(workdir)
    with pytest.raises(ConfigError, match="not a valid wandb sweep: 'name' is a required property"):
        run_sweep(path, dry_run=True, engine=FakeEngine([], problems=["'name' is a required property"]))


def test_missing_engine_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "sweeps", None)
    with pytest.raises(ConfigError, match=r"pip install 'spikedistill\[sweeps\]'"):
        load_engine()


def test_main_reports_errors(workdir, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "sweeps", None)
    path = write_sweep(workdir)
    with pytest.raises(SystemExit) as exit_info:
        main([str(path), "--dry-run"])
    assert exit_info.value.code == 2 and "spikedistill[sweeps]" in capsys.readouterr().err


def test_read_metric():
    results = {"metrics": {"student": {"psnr": 30.5, "ssim": 0.9}, "teacher": {"psnr": 31.0}},
               "convergence": {"history": [{"step": 10, "psnr": 28.0}, {"step": 20, "psnr": 29.5}]}}
    assert read_metric(results, "test/student_psnr") == 30.5
    assert read_metric(results, "val/psnr") == 29.5  # validation, never the test scores
    assert read_metric(results, "val/student_psnr") == 29.5
    assert read_metric(results, "test/teacher_psnr") == 31.0
    assert read_metric(results, "metrics.student.ssim") == 0.9
    assert read_metric(None, "val/psnr") is None
    with pytest.raises(ConfigError, match="'nope' is not in results.json"):
        read_metric(results, "nope")


def test_slurm_array_through_submitit_local_executor(workdir, capsys):
    pytest.importorskip("submitit")
    path = write_sweep(workdir)
    engine = FakeEngine([{"x": 1, "fail": False}, {"x": 2, "fail": False}])
    main([str(path), "--executor", "slurm", "--submitit-cluster", "local", "--wait", "--partition", "debug",
          "--time", "5", "--cpus-per-task", "1"], engine=engine)
    manifest = json.loads((workdir / "runs/sweeps/toy/sweep.json").read_text())
    assert [r["status"] for r in manifest["runs"]] == ["finished", "finished"]
    assert all(r["job_id"] for r in manifest["runs"])
    out = capsys.readouterr().out
    assert "job array" in out and "runs/sweeps/toy/slurm" in out
    assert not (workdir / "runs/sweeps/toy/slurm/%j").exists()  # no folder named after the pattern
    # finished runs are not submitted again
    sweep = run_sweep(path, executor="slurm", engine=engine, slurm=SlurmOptions(cluster="local", wait=True))
    assert all(r.status == "finished" for r in sweep.runs)


def test_timeout_signal_requeues_the_task_and_resumes_the_fit(workdir):
    """Through submitit's local executor: the array task gets the timeout/preemption signal mid-fit, submitit
    checkpoints and requeues it, and it runs the fit again with --ckpt_path=last."""
    path = write_sweep(workdir, params="  hold: {value: true}\n")
    options = SlurmOptions(cluster="local", time=5)
    sweep, _ = prepare(path, executor="slurm", engine=FakeEngine([{"hold": True}]), launch=options.trainer_args())
    sweep.runs_dir.mkdir(parents=True)
    [job] = run_slurm(sweep, options)
    held, deadline = Path(sweep.runs[0].run_dir) / "held", time.monotonic() + 120
    while not (held.exists() and held.read_text()):
        assert time.monotonic() < deadline and not job.done(), "the fit never started"
        time.sleep(0.2)
    os.kill(int(held.read_text()), getattr(signal, f"SIG{submitit.JobEnvironment.USR_SIG}"))
    outcome = job.result()
    assert outcome["status"] == "finished" and outcome["resumed_from"] == "last"
    calls = [json.loads(line) for line in (Path(sweep.runs[0].run_dir) / "calls.jsonl").read_text().splitlines()]
    assert len(calls) == 2 and not any(a.startswith("--ckpt_path") for a in calls[0])
    assert calls[1] == calls[0] + ["--ckpt_path=last"]


def fake_sbatch(folder: Path, monkeypatch) -> Path:
    """An `sbatch` on PATH that keeps the script it is given (returned path) and answers as SLURM does, and the
    `srun` submitit looks for (never run)."""
    bin_dir = folder / "bin"
    bin_dir.mkdir()
    script = folder / "submitted.sh"
    (bin_dir / "sbatch").write_text(f'#!/bin/sh\ncp "$1" "{script}"\necho "Submitted batch job 4242"\n')
    (bin_dir / "srun").write_text("#!/bin/sh\nexit 1\n")
    for tool in ("sbatch", "srun"):
        (bin_dir / tool).chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    return script


def test_sbatch_script_site_options_trainer_wiring_and_checkpointable_task(workdir, monkeypatch):
    """The script submitit writes asks SLURM for the signal the task handles, carries the site options and
    setup lines; the runs' trainer matches the allocation; the task is checkpointable."""
    script = fake_sbatch(workdir, monkeypatch)
    path = write_sweep(workdir)
    main([str(path), "--executor", "slurm", "--nodes", "2", "--gpus", "4", "--time", "30", "--mem-gb", "64",
          "--account", "proj", "--qos", "high", "--constraint", "a100", "--setup", "module load cuda",
          "--setup", "source .venv/bin/activate"], engine=FakeEngine([{"x": 1, "fail": False}, {"x": 2, "fail": False}]))
    text = script.read_text()
    flags = dict(line[len("#SBATCH --"):].split("=", 1) for line in text.splitlines() if line.startswith("#SBATCH --"))
    assert flags["signal"].split("@")[0] == submitit.JobEnvironment.USR_SIG  # the signal submitit's task handles
    assert {key: flags[key] for key in ("account", "qos", "constraint", "nodes", "ntasks-per-node", "gpus-per-node",
                                        "time", "mem")} == {
        "account": "proj", "qos": "high", "constraint": "a100", "nodes": "2", "ntasks-per-node": "4",
        "gpus-per-node": "4", "time": "30", "mem": "64GB"}
    assert text.index("# setup") < text.index("module load cuda") < text.index("source .venv/bin/activate") \
        < text.index("# command")
    manifest = json.loads((workdir / "runs/sweeps/toy/sweep.json").read_text())
    assert [r["job_id"] for r in manifest["runs"]] == ["4242_0", "4242_1"]
    assert all(r["command"][-2:] == ["--trainer.num_nodes=2", "--trainer.devices=4"] for r in manifest["runs"])
    delayed = submitit.SlurmJob(folder=workdir / "runs/sweeps/toy/slurm", job_id="4242_0").submission()
    assert isinstance(delayed.function, submitit.helpers.Checkpointable)
    requeued = delayed.function.checkpoint(*delayed.args)
    assert requeued.args[0]["command"] == delayed.args[0]["command"] + ["--ckpt_path=last"]
    assert requeued.function.checkpoint(*requeued.args).args[0]["command"] == requeued.args[0]["command"]


def test_slurm_needs_sbatch(workdir, monkeypatch):
    monkeypatch.setattr(shutil, "which", lambda name: None)
    path = write_sweep(workdir)
    with pytest.raises(ConfigError, match="sbatch"):
        run_sweep(path, executor="slurm", engine=FakeEngine([{"x": 1}]))


# ---- against wandb's own engine -------------------------------------------------------------------


@real_engine
def test_real_engine_expands_the_quickstart_grid(workdir, capsys):
    (workdir / "recipes").mkdir()
    (workdir / "recipes" / "quickstart_hint.yaml").write_text("model: {}\n")
    sweep = run_sweep(GRID_FILE, dry_run=True)
    params = [r.params for r in sweep.runs]
    assert len(params) == 4
    assert sorted((json.dumps(p["model.init_args.hints"]), p["seed_everything"]) for p in params) == \
        sorted((json.dumps(h), s) for h in ([], HINT) for s in (0, 1))
    assert all(p["trainer.max_steps"] == 200 and p["trainer.val_check_interval"] == 25 for p in params)


@real_engine
def test_real_engine_random_is_reproducible_and_validates(workdir):
    params = "  x: {values: [1, 2]}\n  lr: {min: 0.0001, max: 0.1, distribution: log_uniform_values}\n"
    path = write_sweep(workdir, method="random", params=params)
    first = [r.params for r in run_sweep(path, dry_run=True, max_runs=3).runs]
    again = [r.params for r in run_sweep(path, dry_run=True, max_runs=3).runs]
    assert first == again and len({p["lr"] for p in first}) == 3
    assert all(1e-4 <= p["lr"] <= 0.1 for p in first)
    bad = write_sweep(workdir, params="  y: {valuez: [1]}\n")
    with pytest.raises(ConfigError, match="not a valid wandb sweep"):
        run_sweep(bad, dry_run=True)


@real_engine
def test_real_engine_local_grid_and_bayes(workdir):
    path = write_sweep(workdir)
    sweep = run_sweep(path, progress=False)
    assert sorted(r.metric for r in sweep.runs) == [1.0, 2.0]
    bayes = write_sweep(workdir, method="bayes", extra="run_cap: 3\n", params="  x: {min: 0.0, max: 1.0}\n")
    sweep = run_sweep(bayes, runs_dir="runs/bayes", progress=False)
    assert len(sweep.runs) == 3 and all(r.status == "finished" for r in sweep.runs)
    assert isinstance(WandbSweepEngine().violations(sweep.spec.config), list)


@real_engine
@pytest.mark.parametrize("path", sorted((REPO / "recipes" / "sweeps").glob("*.yaml")), ids=lambda p: p.stem)
def test_every_shipped_sweep_validates_and_its_first_run_resolves(path, monkeypatch, capsys):
    """The file passes wandb's schema, and the first run's command (with its overrides) parses in the CLI."""
    from distill.cli import main as cli_main

    monkeypatch.chdir(REPO)
    sweep = run_sweep(path, runs_dir=str(REPO / "runs" / "never-written"), dry_run=True)
    assert sweep.runs and not (REPO / "runs" / "never-written").exists()
    command = sweep.runs[0].command
    args = command[command.index("fit"):]
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_:
        cli_main([*args, "--print_config"])
    assert exit_.value.code == 0
    assert_params(yaml.safe_load(capsys.readouterr().out), sweep.runs[0].params)


def holds(node, value) -> bool:
    """`node` equals `value`, where a mapping in `value` needs only its own keys (defaults fill the rest)."""
    if isinstance(value, dict):
        return isinstance(node, dict) and all(k in node and holds(node[k], v) for k, v in value.items())
    if isinstance(value, list):
        return isinstance(node, list) and len(node) == len(value) and all(map(holds, node, value))
    return node == value


def assert_params(printed: dict, params: dict) -> None:
    """Each dotted key of `params` holds its value in the printed config."""
    for key, value in params.items():
        node = printed
        for part in key.split("."):
            node = node[int(part)] if isinstance(node, list) else node[part]
        assert holds(node, value), (key, node, value)


@real_engine
@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.stem)
def test_every_run_of_every_shipped_sweep_parses_as_wandb_agent_starts_it(path, monkeypatch, capsys):
    """wandb's own `create_sweep_command_args` writes each value with Python's str() (a null is `None`); the
    agent fills `${program}` and `${args}` with it as below. Every run parses, into its own directory."""
    from wandb.sdk.launch.sweeps.utils import create_sweep_command_args

    from distill.entry import main as cli_main

    monkeypatch.chdir(REPO)
    sweep = run_sweep(path, runs_dir=str(REPO / "runs" / "never-written"), dry_run=True)
    capsys.readouterr()
    for i, run in enumerate(sweep.runs):
        macros = {**create_sweep_command_args({"args": {k: {"value": v} for k, v in run.params.items()}}),
                  "program": [sweep.spec.program]}
        argv = [word for token in sweep.spec.command
                for word in (macros[token[2:-1]] if token.startswith("${") else [token])]
        monkeypatch.setenv("WANDB_SWEEP_ID", "sw33p")
        monkeypatch.setenv("WANDB_RUN_ID", f"run{i}")
        with pytest.raises(SystemExit) as exit_:
            cli_main([*argv[1:], "--print_config"])
        out, err = capsys.readouterr()
        assert exit_.value.code == 0, f"{' '.join(argv)}\n{err[-3000:]}"
        printed = yaml.safe_load(out)
        assert printed["trainer"]["default_root_dir"] == f"runs/sweeps/sw33p/run{i}"
        assert_params(printed, run.params)
    assert not (REPO / "runs" / "never-written").exists()
