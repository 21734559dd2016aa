#!/usr/bin/env python
"""Teacher-training levers as PSNR against CPU-minutes: one overlay of a teacher recipe per lever, each trained
through the real CLI on the same crops and noise, validated on centre crops of ``--eval`` as it trains (the curve)
and scored at the end on the full images with ``../shared/anchors/protocol.py``.

The levers that change a step's cost (patch size, bf16, loader workers) keep the baseline's step count, or for patch
size its pixel count, so their curves show what the extra or saved seconds buy. channels_last and ``torch.compile``
change neither the numbers nor the step count, only the step rate: ``benchmarks/teacher_speed.py`` measures that.
Runs resume from their last checkpoint and finished runs are skipped; ``summary.json`` / ``summary.md`` are
rewritten as runs land.

Example::

    python benchmarks/teacher_levers.py --runs-dir runs/teacher_levers --steps 3000
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import REPO, command_line, machine_info, machine_line, md_table  # noqa: E402
from benchmarks.distill_pays import DEFAULT_EVAL, DEFAULT_TRAIN, anchor_score  # noqa: E402
from distill.data.samples import SAMPLES_NAME  # noqa: E402
from distill.io import atomic_write_json, atomic_write_text  # noqa: E402
from distill.sweep import run_job  # noqa: E402

DEFAULT_RECIPE = "recipes/teachers/dncnn_quickstart.yaml"
BASE_PATCH = 48


def levers(steps: int, lr: float, train: Path) -> dict[str, tuple[int, int, list[str]]]:
    """Lever -> (steps, patch size, CLI overrides on top of the recipe); the baseline is L1, Adam, cosine."""
    loss = "--model.init_args.restoration_loss={class_path: distill.losses.RestorationLoss, init_args: {l1: 0.0, mse: 1.0}}"
    warmup = ("--model.init_args.scheduler={class_path: torch.optim.lr_scheduler.OneCycleLR, init_args: "
              f"{{max_lr: {lr}, total_steps: {steps}, pct_start: 0.05, cycle_momentum: false, final_div_factor: 100}}}}")
    return {
        "baseline": (steps, BASE_PATCH, []),
        "mse": (steps, BASE_PATCH, [loss]),
        "warmup": (steps, BASE_PATCH, [warmup]),
        # the average's horizon (1 / (1 - decay)) is 5 % of the run: Lightning's default 0.999 keeps 0.999^1500 = 22 %
        # of the initial weights in the average after 1500 steps, and scored at the noisy input (BENCHMARKS.md section 5)
        "ema": (steps, BASE_PATCH, ["--trainer.callbacks+=lightning.pytorch.callbacks.EMAWeightAveraging",
                                    f"--trainer.callbacks.decay={1 - 20 / steps:.6f}"]),
        "clip": (steps, BASE_PATCH, ["--trainer.gradient_clip_val=0.5"]),
        "bf16": (steps, BASE_PATCH, ["--trainer.precision=bf16-mixed"]),
        "workers": (steps, BASE_PATCH, ["--data.init_args.num_workers=1"]),
        # the same pixels per run: smaller crops buy more steps, larger ones fewer
        "patch32": (round(steps * (BASE_PATCH / 32) ** 2), 32, []),
        "patch64": (round(steps * (BASE_PATCH / 64) ** 2), 64, []),
        # more texture: the embedded scikit-image training photos beside --train, at patch32's steps
        "patch32+embedded": (round(steps * (BASE_PATCH / 32) ** 2), 32, [f"--data.init_args.train=[{train},{SAMPLES_NAME}]"]),
    }


def command(lever: str, args: argparse.Namespace, run_dir: Path) -> list[str]:
    """The full `spikedistill fit` argv of one lever's run."""
    steps, patch, extra = levers(args.steps, args.lr, args.train)[lever]
    data = "--data.init_args."
    scheduler = [] if lever == "warmup" else [f"--model.init_args.scheduler.init_args.T_max={steps}"]
    return [
        str(Path(sys.executable).with_name("spikedistill")), "fit", "--config", args.recipe,
        f"--seed_everything={args.seed}", f"{data}train=[{args.train}]", f"{data}val=[{args.eval}]",
        f"{data}eval_size={args.eval_size}", f"{data}patch_size={patch}", f"{data}batch_size={args.batch}",
        f"{data}patches_per_epoch={args.batch * steps}", f"--model.init_args.optimizer.init_args.lr={args.lr}",
        f"--trainer.max_steps={steps}", *scheduler, f"--trainer.val_check_interval={args.val_every}",
        "--trainer.enable_progress_bar=false", "--wandb_mode=disabled", f"--trainer.default_root_dir={run_dir}", *extra,
    ]


def run_one(lever: str, args: argparse.Namespace) -> dict[str, Any]:
    """Fit (or resume, or skip) one lever's run and score it on the anchor protocol; returns its row."""
    run_dir = args.runs_dir / lever
    os.environ["OMP_NUM_THREADS"] = str(args.threads)  # the fit subprocess inherits it
    outcome = run_job({"name": lever, "run_dir": str(run_dir), "command": command(lever, args, run_dir),
                       "cwd": str(REPO), "sweep": "teacher_levers"})
    if outcome["status"] != "finished":
        raise RuntimeError(f"lever {lever} failed (exit {outcome['returncode']}); see {run_dir / 'sweep.log'}")
    anchor = run_dir / "anchor.json"
    if not anchor.is_file():
        atomic_write_json(anchor, anchor_score(run_dir, args.eval, "gray"))
    results = json.loads((run_dir / "results.json").read_text())
    history = results["convergence"]["history"]
    return {"lever": lever, "anchor_psnr": json.loads(anchor.read_text())["anchor_psnr"],
            "psnr": results["metrics"]["model"]["psnr"], "seconds": results["convergence"]["train_seconds"],
            "steps": results["run"]["global_step"], "history": history}


def summarise(rows: list[dict[str, Any]], args: argparse.Namespace) -> str:
    """Markdown: the final scores against the baseline, and each lever's curve (validation PSNR at CPU-minutes)."""
    base = next((r for r in rows if r["lever"] == "baseline"), None)
    finals = [[r["lever"], r["steps"], f"{r['seconds'] / 60:.1f}", f"{r['anchor_psnr']:.2f}", f"{r['psnr']:.2f}",
               "" if base is None else f"{r['anchor_psnr'] - base['anchor_psnr']:+.2f}"] for r in rows]
    curves = [[r["lever"], " ".join(f"{h['seconds'] / 60:.1f}m:{h['psnr']:.2f}" for h in r["history"])] for r in rows]
    return "\n".join([
        f"# Teacher levers ({args.recipe}, {args.threads} thread(s) a run)", "", machine_line(machine_info()), "",
        f"`{command_line()}`", "",
        md_table(["lever", "steps", "train min", "anchor PSNR (dB)", "val-crop PSNR (dB)", "anchor vs baseline"], finals),
        "", "Validation PSNR (dB) on the crops at minutes of training:", "",
        md_table(["lever", "curve"], curves), ""])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs-dir", type=Path, default=REPO / "runs" / "teacher_levers")
    parser.add_argument("--recipe", default=DEFAULT_RECIPE, help="the teacher recipe the levers overlay")
    names = list(levers(1, 1.0, DEFAULT_TRAIN))
    parser.add_argument("--levers", nargs="+", default=names, choices=names)
    parser.add_argument("--train", type=Path, default=DEFAULT_TRAIN)
    parser.add_argument("--eval", type=Path, default=DEFAULT_EVAL)
    parser.add_argument("--steps", type=int, default=3000, help="the baseline's steps (48x48 crops)")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--val-every", type=int, default=500)
    parser.add_argument("--eval-size", type=int, default=256)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1, help="torch threads per run")
    args = parser.parse_args(argv)
    args.runs_dir, args.train, args.eval = args.runs_dir.resolve(), args.train.resolve(), args.eval.resolve()
    rows: list[dict[str, Any]] = []
    started = time.time()
    with ThreadPoolExecutor(args.jobs) as pool:
        for future in [pool.submit(run_one, lever, args) for lever in args.levers]:
            rows.append(future.result())
            atomic_write_json(args.runs_dir / "summary.json", {"machine": machine_info(), "command": command_line(),
                                                                 "args": {k: str(v) for k, v in vars(args).items()},
                                                                 "rows": rows})
            atomic_write_text(args.runs_dir / "summary.md", summarise(rows, args))
    print(f"done in {time.time() - started:.0f} s")
    print((args.runs_dir / "summary.md").read_text())


if __name__ == "__main__":
    main()
