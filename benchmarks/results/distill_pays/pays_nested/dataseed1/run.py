"""The selected arm's own spread: strict+select_nested+twin_hint and its control strict+twin_hint with data seed 1
(other crops and noise draws, paired: the same in both arms) and seed_everything 1, the 400-spiking-step budget.
Run from a checkout: PYTHONPATH=. python run.py RUNS_DIR NESTED_TEACHER"""
import argparse
import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from benchmarks import distill_pays
from distill.io import atomic_write_json

runs, teacher = Path(sys.argv[1]), Path(sys.argv[2])
args = argparse.Namespace(system="gray", steps=400, plain_steps=1000, twin_steps=1000, strict_twin_steps=1700,
                          val_every=100, eval_size=256, train=distill_pays.DEFAULT_TRAIN.resolve(),
                          eval=distill_pays.DEFAULT_EVAL.resolve(), nested_teacher=teacher)


def run(arm: str) -> str:
    run_dir = runs / arm / "d1"
    run_dir.mkdir(parents=True, exist_ok=True)
    if not (run_dir / "results.json").is_file():
        cmd = [str(Path(sys.executable).with_name("spikedistill")), *distill_pays.arm_args(arm, 1, args, run_dir),
               "--data.init_args.seed=1"]
        env = dict(os.environ, WANDB_MODE="disabled", OMP_NUM_THREADS="1")
        with open(run_dir / "fit.log", "a") as log:
            subprocess.check_call(cmd, cwd=distill_pays.REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
    if not (run_dir / "anchor.json").is_file():
        atomic_write_json(run_dir / "anchor.json", distill_pays.anchor_score(run_dir, args.eval, "gray"))
    return f"{arm}: {json.loads((run_dir / 'anchor.json').read_text())['anchor_psnr']}"


with ThreadPoolExecutor(2) as pool:
    print(*pool.map(run, ["strict+select_nested+twin_hint", "strict+twin_hint"]), sep="\n")
