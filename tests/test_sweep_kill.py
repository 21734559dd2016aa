"""The quickstart grid (hint / no hint x 2 seeds) through the local executor with real fits: the whole sweep is
killed with SIGKILL in the middle of its second run, started again, and ends with four finished runs; the
finished run is skipped, the killed one resumes from its last.ckpt, and the leaderboard reads all four."""
import csv
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import yaml
from cli_helpers import REPO, cli_env, wait_for

from distill.leaderboard import main as leaderboard

GRID = REPO / "recipes" / "sweeps" / "quickstart_grid.yaml"
MAX_STEPS, VAL_EVERY, HOLD_AT = 5, 2, 3

pytestmark = pytest.mark.skipif(
    __import__("importlib").util.find_spec("sweeps") is None, reason="wandb's sweep engine is not installed")


def tiny_grid(folder):
    """The shipped grid file with a tiny-data overlay and a callback that parks the second run at step 3."""
    overlay = folder / "tiny_data.yaml"
    overlay.write_text(yaml.safe_dump({
        "data": {"init_args": {"patch_size": 16, "patches_per_epoch": 32, "batch_size": 8, "eval_size": 32}},
        "trainer": {"enable_progress_bar": False, "callbacks": [{
            "class_path": "cli_helpers.HoldInNthRun",
            "init_args": {"ledger": str(folder / "starts.txt"), "marker": str(folder / "held"), "nth": 2,
                          "step": HOLD_AT}}]},
    }))
    sweep = yaml.safe_load(GRID.read_text())
    at = sweep["command"].index("recipes/quickstart_hint.yaml") + 1
    sweep["command"][at:at] = ["--config", str(overlay)]
    sweep["parameters"]["trainer.max_steps"] = {"value": MAX_STEPS}
    sweep["parameters"]["trainer.val_check_interval"] = {"value": VAL_EVERY}
    path = folder / "grid.yaml"
    path.write_text(yaml.safe_dump(sweep, sort_keys=False))
    return path


def start_sweep(path, runs_dir, log):
    with open(log, "a") as out:
        return subprocess.Popen([sys.executable, "-m", "distill.cli", "sweep", str(path), "--runs-dir", str(runs_dir)],
                                cwd=REPO, env=cli_env(OMP_NUM_THREADS="1"), stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)  # its own process group: the kill takes the fit too


@pytest.mark.slow  # `spikedistill sweep` subprocesses, about a minute
def test_quickstart_grid_killed_mid_run_resumes_and_finishes(tmp_path):
    path, runs_dir, log = tiny_grid(tmp_path), tmp_path / "runs", tmp_path / "sweep.log"
    sweep = start_sweep(path, runs_dir, log)
    wait_for(tmp_path / "held", sweep, timeout=240)
    held_run = (tmp_path / "held").read_text().strip()
    os.killpg(sweep.pid, signal.SIGKILL)
    assert sweep.wait(timeout=30) == -signal.SIGKILL

    manifest = json.loads((runs_dir / "sweep.json").read_text())
    assert [r["status"] for r in manifest["runs"]] == ["finished", "running", "pending", "pending"]
    first, second = (runs_dir / r["name"] for r in manifest["runs"][:2])
    assert str(second) == held_run and not (second / "results.json").exists()
    assert (second / "checkpoints" / "last.ckpt").exists()
    first_results = (first / "results.json").read_bytes()

    again = start_sweep(path, runs_dir, log)
    assert again.wait(timeout=300) == 0, log.read_text()[-3000:]

    manifest = json.loads((runs_dir / "sweep.json").read_text())
    runs = manifest["runs"]
    assert [r["status"] for r in runs] == ["finished"] * 4
    assert (first / "results.json").read_bytes() == first_results  # skipped, not run again
    assert runs[1]["resumed_from"] == str(second / "checkpoints" / "last.ckpt")
    starts = [line.rsplit(" ", 1) for line in (tmp_path / "starts.txt").read_text().splitlines()]
    assert [(os.path.basename(d), int(s)) for d, s in starts] == [
        (runs[0]["name"], 0), (runs[1]["name"], 0), (runs[1]["name"], VAL_EVERY), (runs[2]["name"], 0),
        (runs[3]["name"], 0)]  # the killed run restarts from the step of its last validation checkpoint

    grid = set()
    for run in runs:
        results = json.loads((runs_dir / run["name"] / "results.json").read_text())
        assert results["run"]["global_step"] == MAX_STEPS
        config = results["config"]
        hints = run["params"]["model.init_args.hints"]
        assert [{k: h[k] for k in hint} for h, hint in zip(config["model"]["init_args"]["hints"], hints)] == hints
        assert len(config["model"]["init_args"]["hints"]) == len(hints)
        assert config["seed_everything"] == run["params"]["seed_everything"]
        grid.add((len(run["params"]["model.init_args.hints"]), run["params"]["seed_everything"]))
    assert grid == {(0, 0), (0, 1), (1, 0), (1, 1)}

    table = tmp_path / "board.csv"
    leaderboard([str(runs_dir), "--format", "csv", "--output", str(table), "--no-progress"])
    rows = list(csv.DictReader(table.open()))
    assert sorted((row["distill"], row["seeds"]) for row in rows) == [("1 hint", "2"), ("none", "2")]
