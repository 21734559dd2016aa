#!/usr/bin/env python
"""Distillation quality at a fixed CPU step budget, through the real CLI.

For each system (default: one per seed system with a recipe: SPIDEN in gray and RGB, Spiking-UNet,
ESDNet on synthetic rain, Bridge) and each of its colour modes, at sigma = 25:

1. for SPIDEN, train the DnCNN teacher on ``--train`` (``spikedistill fit``) and export its weights
   (``spikedistill export``); the other systems use their recipes' shipped teachers;
2. for each seed: the student with hints (the system's recipe, teacher = the exported weights) and
   the same student without hints (its no-hint twin recipe), interleaved hint / no-hint per seed;
3. ``spikedistill leaderboard RUNS_DIR --format md`` for PSNR/SSIM, gap to the teacher, parameter and
   energy ratios; plus a table of steps and training seconds each student needs to reach the no-hint
   student's final PSNR (same seed), and their ratio, read from the validation history in results.json.

Validation and test both use ``--eval`` (the training-time validation only draws the convergence
curve; the scored model is the one after the last step, not a selected checkpoint). Evaluation
noise is fixed per image (data seed 0), and all seeds see the same training crops (the data seed
stays 0; ``seed_everything`` changes the initialisation), so hint and no-hint runs are paired.

Every run goes through ``distill.cli`` (the ``spikedistill`` entry point; a subprocess each with
``--jobs`` > 1), so each run directory holds the usual results.json, checkpoints and CSV logs; wandb is
disabled. ``--jobs 2`` (the default) runs two independent chains at once.

Example::

    python benchmarks/distill_quality.py --runs-dir runs/bench_quality \\
        --train ../shared/data/photos-train --eval ../shared/data/photos-eval
    python benchmarks/distill_quality.py --runs-dir runs/bench_quality --table-only
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import REPO, command_line, load, machine_info, machine_line, md_table  # noqa: E402
from distill.io import atomic_write_json  # noqa: E402

DEFAULT_TRAIN = REPO.parent / "shared" / "data" / "photos-train"
DEFAULT_EVAL = REPO.parent / "shared" / "data" / "photos-eval"
MANIFEST = "manifest.json"
COLOURS = {1: "gray", 3: "rgb"}
LEADERBOARD_COLUMNS = "model,teacher,task,dataset,sigma,timesteps,distill,seeds,protocol,psnr,ssim,delta_psnr,params," \
                      "param_ratio,energy_uj,energy_ratio"


@dataclass(frozen=True)
class System:
    """A distillation recipe with its no-hint twin, and where its teacher comes from (paths relative to the repo).

    ``teacher_recipe`` set: the teacher is trained here on ``--train`` for each colour (shared by every
    system with the same ``teacher_group``) and passed to the students through ``teacher_checkpoint_key``.
    ``teacher_recipe`` None: the recipe's own (shipped) teacher is used as is; ``requires`` lists its weights.
    """

    key: str
    label: str
    student_recipe: str
    nohint_recipe: str
    colours: tuple[int, ...] = (1, 3)
    task: str = "denoise"
    teacher_recipe: str | None = None
    teacher_group: str | None = None
    teacher_channel_keys: tuple[str, ...] = ("model.init_args.model.init_args.in_channels",)
    student_channel_keys: tuple[str, ...] = ("model.init_args.teacher.init_args.in_channels",
                                             "model.init_args.student.init_args.in_channels")
    teacher_checkpoint_key: str = "model.init_args.teacher.init_args.checkpoint"
    scheduler_key: str = "model.init_args.scheduler.init_args.T_max"
    #: extra overrides of the teacher's fit; DnCNN starts as the identity (zero_tail), without which the RGB
    #: teacher sits at the identity plateau for most of a 400-step budget
    teacher_overrides: tuple[str, ...] = ("--model.init_args.model.init_args.zero_tail=true",)
    requires: tuple[str, ...] = ()

    def missing(self) -> list[str]:
        paths = [self.student_recipe, self.nohint_recipe, *self.requires]
        if self.teacher_recipe:
            paths.append(self.teacher_recipe)
        return [p for p in paths if not (REPO / p).is_file()]

    def available(self) -> bool:
        return not self.missing()


SYSTEMS: dict[str, System] = {
    s.key: s
    for s in (
        System(
            key="spiden_quickstart",
            label="SPIDEN, quickstart-style: spiking DnCNN (LIF, T=4, 24 ch x 8) from a DnCNN (32 ch x 10) "
                  "trained here; 1 hint (recipes/quickstart_hint.yaml)",
            student_recipe="recipes/quickstart_hint.yaml", nohint_recipe="recipes/quickstart_hint_nohint.yaml",
            teacher_recipe="recipes/teachers/dncnn_quickstart.yaml", teacher_group="dncnn_32x10",
        ),
        System(
            key="spiden",
            label="SPIDEN: spiking DnCNN (IF, T=4, 24 ch x 10) from the same DnCNN trained here; 2 hints "
                  "(recipes/distill/spiden.yaml)",
            student_recipe="recipes/distill/spiden.yaml", nohint_recipe="recipes/distill/spiden_nohint.yaml",
            teacher_recipe="recipes/teachers/dncnn_quickstart.yaml", teacher_group="dncnn_32x10",
        ),
        System(
            key="spiking_unet",
            label="Spiking-UNet tiny converted from the shipped tiny U-Net, 2 decoder hints (recipes/distill/spiking_unet.yaml)",
            student_recipe="recipes/distill/spiking_unet.yaml", nohint_recipe="recipes/distill/spiking_unet_nohint.yaml",
            colours=(1,), requires=("teachers/pretrained/unet_tiny_gray_s25.pt",),
        ),
        System(
            key="esdnet",
            label="ESDNet tiny from the shipped ESDNetTwin, light synthetic rain (recipes/distill/esdnet.yaml)",
            student_recipe="recipes/distill/esdnet.yaml", nohint_recipe="recipes/distill/esdnet_nohint.yaml",
            colours=(3,), task="derain", requires=("teachers/pretrained/esdnet_twin_tiny_rain_light.pt",),
        ),
        System(
            key="bridge",
            label="Bridge: SpikerIR tiny from the shipped tiny Restormer, 3 decoder hints (recipes/distill/bridge.yaml)",
            student_recipe="recipes/distill/bridge.yaml", nohint_recipe="recipes/distill/bridge_nohint.yaml",
            colours=(3,), requires=("teachers/pretrained/restormer_tiny_rgb_s25.pt",),
        ),
    )
}
DEFAULT_SYSTEMS = ("spiden_quickstart", "spiking_unet", "esdnet", "bridge")  # one row per seed system


@dataclass
class Budget:
    teacher_steps: int
    student_steps: int
    val_every: int
    teacher_val_every: int
    eval_size: int | None


@dataclass
class Job:
    """One CLI invocation (a fit, or an export)."""

    name: str
    argv: list[str]
    run_dir: Path | None
    meta: dict[str, Any]

    def shell(self) -> str:
        words = ["spikedistill"] + self.argv
        return " ".join(w if all(c not in w for c in " []\"'") else f"'{w}'" for w in words)


def _data_overrides(train: Path, evaluation: Path, channels: int | None, sigma: float | None,
                    eval_size: int | None) -> list[str]:
    out = [
        f"--data.init_args.train={json.dumps([str(train)])}",
        f"--data.init_args.val={json.dumps([str(evaluation)])}",
        f"--data.init_args.test={json.dumps([str(evaluation)])}",
        f"--data.init_args.eval_size={'null' if eval_size is None else eval_size}",
    ]
    if channels is not None:
        out.insert(0, f"--data.init_args.channels={channels}")
    if sigma is not None:
        out.append(f"--data.init_args.sigma={sigma:g}")
    return out


def plan(systems: list[System], channels: list[int], seeds: list[int], budget: Budget, runs_dir: Path,
         train: Path, evaluation: Path, sigma: float = 25.0) -> list[Job]:
    """Every CLI call of the benchmark, in order: per system and colour, the teacher (once per teacher
    group and colour) and its export, then hint / no-hint per seed."""
    jobs: list[Job] = []
    common = ["--trainer.enable_progress_bar=false"]
    teachers: dict[tuple[str, int], Path] = {}
    for system in systems:
        for c in [c for c in channels if c in system.colours]:
            colour = COLOURS[c]
            set_channels = len(system.colours) > 1  # single-colour recipes already say their channels
            data = _data_overrides(train, evaluation, c if set_channels else None,
                                   sigma if system.task == "denoise" else None, budget.eval_size)
            teacher_pt = None
            if system.teacher_recipe:
                group = system.teacher_group or system.key
                teacher_pt = runs_dir / "teachers" / group / colour / "teacher.pt"
                if (group, c) not in teachers:
                    teachers[(group, c)] = teacher_pt
                    tdir = runs_dir / "teachers" / group / colour / "teacher_s0"
                    jobs.append(Job(
                        f"teachers/{group}/{colour}/teacher",
                        ["fit", "--config", system.teacher_recipe,
                         "--seed_everything=0", f"--trainer.default_root_dir={tdir}",
                         f"--trainer.max_steps={budget.teacher_steps}",
                         f"--trainer.val_check_interval={budget.teacher_val_every}",
                         f"--{system.scheduler_key}={budget.teacher_steps}",
                         *[f"--{k}={c}" for k in system.teacher_channel_keys], *system.teacher_overrides,
                         *data, *common],
                        tdir, {"system": system.key, "group": group, "colour": colour, "channels": c,
                               "role": "teacher", "seed": 0},
                    ))
                    jobs.append(Job(
                        f"teachers/{group}/{colour}/export",
                        ["export", str(tdir / "checkpoints" / "last.ckpt"), str(teacher_pt)],
                        None, {"system": system.key, "group": group, "colour": colour, "role": "export",
                               "output": str(teacher_pt)},
                    ))
            for seed in seeds:
                for role in ("hint", "nohint"):
                    rdir = runs_dir / system.key / colour / f"{role}_s{seed}"
                    configs = ["--config", system.student_recipe]
                    if role == "nohint":
                        configs += ["--config", system.nohint_recipe]
                    argv = ["fit", *configs, f"--seed_everything={seed}", f"--trainer.default_root_dir={rdir}",
                            f"--trainer.max_steps={budget.student_steps}",
                            f"--trainer.val_check_interval={budget.val_every}",
                            f"--{system.scheduler_key}={budget.student_steps}"]
                    if teacher_pt is not None:
                        argv.append(f"--{system.teacher_checkpoint_key}={teacher_pt}")
                    if set_channels:
                        argv += [f"--{k}={c}" for k in system.student_channel_keys]
                    jobs.append(Job(
                        f"{system.key}/{colour}/{role}_s{seed}", argv + data + common, rdir,
                        {"system": system.key, "colour": colour, "channels": c, "role": role, "seed": seed,
                         "teacher_group": system.teacher_group if system.teacher_recipe else None},
                    ))
    return jobs


def chains(jobs: list[Job]) -> list[list[Job]]:
    """Jobs split into chains that can run side by side: a trained teacher, its export and every student
    distilled from it form one chain (in plan order); each shipped-teacher system and colour is another.
    Longest chains first, so that `--jobs N` finishes close to the longest chain's time."""
    by_key: dict[tuple[str, str], list[Job]] = {}
    for job in jobs:
        owner = job.meta.get("teacher_group") or job.meta.get("group") or job.meta["system"]
        by_key.setdefault((owner, job.meta["colour"]), []).append(job)
    return sorted(by_key.values(), key=len, reverse=True)


def run_job(job: Job, log_dir: Path, isolate: bool = False) -> float:
    """Run one CLI call; returns wall seconds. Output goes to ``log_dir/<name>.log``.

    In-process (default): ``distill.cli.main(argv)``, the function behind ``spikedistill``, so the
    heavy imports (Lightning, wandb, matplotlib) are paid once. ``isolate=True``: a fresh
    ``python -m distill.cli`` subprocess per run.
    """
    log_path = log_dir / (job.name.replace("/", "__") + ".log")
    log_path.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    with open(log_path, "w") as fh:
        fh.write("$ " + job.shell() + "\n")
        fh.flush()
        if isolate:
            env = dict(os.environ, WANDB_MODE="disabled", WANDB_SILENT="true", PYTHONUNBUFFERED="1")
            proc = subprocess.run([sys.executable, "-m", "distill.cli", *job.argv], cwd=str(REPO), env=env,
                                  stdout=fh, stderr=subprocess.STDOUT)
            if proc.returncode != 0:
                tail = log_path.read_text()[-3000:]
                raise RuntimeError(f"{job.name} failed (exit {proc.returncode}); log {log_path}:\n{tail}")
        else:
            import contextlib
            import traceback

            from distill.cli import main as cli_main

            try:
                with contextlib.redirect_stdout(fh), contextlib.redirect_stderr(fh), _chdir(REPO):
                    cli_main(list(job.argv))
            except BaseException as exc:  # SystemExit from argument errors too
                fh.write(traceback.format_exc())
                fh.flush()
                raise RuntimeError(f"{job.name} failed ({exc!r}); log {log_path}") from exc
    return time.perf_counter() - t0


@contextlib.contextmanager
def _chdir(path: Path) -> Iterator[None]:
    previous = os.getcwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(previous)


# ---------------------------------------------------------------------------------------------------
# reading results


def read_results(run_dir: Path) -> dict[str, Any] | None:
    path = Path(run_dir) / "results.json"
    if not path.is_file():
        return None
    return json.loads(path.read_text())


def final_psnr(results: dict[str, Any]) -> float | None:
    metrics = results.get("metrics") or {}
    role = "student" if "student" in metrics else "model"
    return (metrics.get(role) or {}).get("psnr")


def first_reaching(history: list[dict[str, Any]], target: float) -> dict[str, Any] | None:
    """First validation entry whose PSNR reaches ``target`` (1e-9 slack for the run that set it)."""
    for entry in history:
        if entry.get("psnr") is not None and entry["psnr"] >= target - 1e-9:
            return entry
    return None


def _mean_std(values: list[float]) -> tuple[float | None, float | None]:
    values = [v for v in values if v is not None]
    if not values:
        return None, None
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else None)


def _pm(values: list[float], digits: int = 2) -> str | None:
    mean, std = _mean_std(values)
    if mean is None:
        return None
    return f"{mean:.{digits}f}" + (f" ± {std:.{digits}f}" if std is not None else "")


def summarize_runs(manifest: dict[str, Any]) -> list[dict[str, Any]]:
    """Per (system, colour): teacher, hint and no-hint scores; per seed, steps and seconds to reach the
    no-hint student's final PSNR; their ratio (no-hint / hint: > 1 means hints converge faster)."""
    groups: dict[tuple[str, str], dict[str, Any]] = {}
    teachers: dict[tuple[str, str], dict[str, Any]] = {}
    for entry in manifest.get("runs", []):
        if entry["role"] == "export":
            continue
        res = read_results(Path(entry["run_dir"]))
        if res is None:
            continue
        if entry["role"] == "teacher":
            teachers[(entry.get("group") or entry["system"], entry["colour"])] = res
            continue
        g = groups.setdefault((entry["system"], entry["colour"]),
                              {"hint": {}, "nohint": {}, "group": entry.get("teacher_group")})
        g[entry["role"]][entry["seed"]] = res
    out = []
    for (system, colour), g in sorted(groups.items()):
        row: dict[str, Any] = {"system": system, "colour": colour, "seeds": sorted(set(g["hint"]) | set(g["nohint"]))}
        any_run = next(iter(list(g["hint"].values()) + list(g["nohint"].values())), None)
        if any_run is not None:
            row["input"] = (any_run.get("metrics") or {}).get("input")
        t = teachers.get((g["group"], colour)) if g["group"] else None
        if t is not None:
            row["teacher"] = dict((t.get("metrics") or {}).get("model") or {}, source="trained here")
            row["teacher_steps"] = (t.get("run") or {}).get("global_step")
            row["teacher_seconds"] = (t.get("convergence") or {}).get("train_seconds")
        else:  # a shipped teacher: its scores on the same images, from the student runs
            scored = [r["metrics"]["teacher"] for r in list(g["hint"].values()) + list(g["nohint"].values())
                      if (r.get("metrics") or {}).get("teacher")]
            if scored:
                row["teacher"] = {"psnr": scored[0].get("psnr"), "ssim": scored[0].get("ssim"), "source": "shipped"}
        for role in ("hint", "nohint"):
            runs = g[role]
            row[role] = {
                "psnr": [final_psnr(r) for r in runs.values()],
                "ssim": [(r["metrics"].get("student") or {}).get("ssim") for r in runs.values()],
                "teacher_psnr": [(r["metrics"].get("teacher") or {}).get("psnr") for r in runs.values()],
                "param_ratio": [(r.get("params") or {}).get("ratio") for r in runs.values()],
                "energy_ratio": [(r.get("energy") or {}).get("ratio") for r in runs.values()],
                "steps": [(r.get("run") or {}).get("global_step") for r in runs.values()],
            }
        pairs = []
        for seed in row["seeds"]:
            h, n = g["hint"].get(seed), g["nohint"].get(seed)
            if h is None or n is None:
                continue
            target = final_psnr(n)
            if target is None:
                continue
            reach = {}
            for role, res in (("hint", h), ("nohint", n)):
                hit = first_reaching((res.get("convergence") or {}).get("history") or [], target)
                hist = (res.get("convergence") or {}).get("history") or []
                reach[role] = {
                    "step": None if hit is None else hit["step"],
                    "seconds": None if hit is None else hit["seconds"],
                    "best": max((e["psnr"] for e in hist if e.get("psnr") is not None), default=None),
                    "seconds_per_step": ((res.get("convergence") or {}).get("train_seconds") or 0)
                    / max(1, (res.get("run") or {}).get("global_step") or 1),
                }
            pair = {"seed": seed, "target_psnr": target, **reach}
            # the other direction: when does the no-hint student reach the hint student's final PSNR?
            hint_final = final_psnr(h)
            if hint_final is not None:
                back = first_reaching((n.get("convergence") or {}).get("history") or [], hint_final)
                pair["hint_final_psnr"] = hint_final
                pair["nohint_to_hint_final"] = None if back is None else {"step": back["step"], "seconds": back["seconds"]}
            if reach["hint"]["step"] and reach["nohint"]["step"]:
                pair["step_ratio"] = reach["nohint"]["step"] / reach["hint"]["step"]
                pair["seconds_ratio"] = (reach["nohint"]["seconds"] / reach["hint"]["seconds"]
                                         if reach["hint"]["seconds"] else None)
            pairs.append(pair)
        row["pairs"] = pairs
        out.append(row)
    return out


def render_summary(rows: list[dict[str, Any]]) -> str:
    """Scores table and the convergence (speed-up) table, Markdown."""
    headers = ["system", "colour", "seeds", "noisy input PSNR / SSIM", "teacher PSNR / SSIM (source)", "hint PSNR", "hint SSIM", "no-hint PSNR",
               "no-hint SSIM", "gap to teacher: hint / no-hint (dB)", "param ratio (T/S)", "energy ratio (T/S): hint / no-hint"]
    table = []
    for r in rows:
        t = r.get("teacher") or {}
        tp = t.get("psnr")
        gap_h = [p - tp for p in r["hint"]["psnr"] if p is not None] if tp is not None else []
        gap_n = [p - tp for p in r["nohint"]["psnr"] if p is not None] if tp is not None else []
        pr = _mean_std(r["hint"]["param_ratio"] + r["nohint"]["param_ratio"])[0]
        er = _mean_std(r["hint"]["energy_ratio"])[0]
        er_n = _mean_std(r["nohint"]["energy_ratio"])[0]
        table.append([
            r["system"], r["colour"], len(r["seeds"]),
            (f"{r['input']['psnr']:.2f} / {r['input']['ssim']:.4f}" if r.get("input") else None),
            f"{tp:.2f} / {t.get('ssim'):.4f} ({t.get('source', '?')})" if tp is not None else None,
            _pm(r["hint"]["psnr"]), _pm(r["hint"]["ssim"], 4), _pm(r["nohint"]["psnr"]), _pm(r["nohint"]["ssim"], 4),
            f"{_pm(gap_h)} / {_pm(gap_n)}", None if pr is None else f"{pr:.1f}×",
            None if er is None else f"{er:.1f}× / {er_n:.1f}×" if er_n is not None else f"{er:.1f}×",
        ])
    text = "### scores on the evaluation images (test split, after the last step)\n\n" + md_table(headers, table)
    headers2 = ["system", "colour", "seed", "target = no-hint final PSNR (dB)", "hint: steps / s to target",
                "no-hint: steps / s to target", "speed-up in steps (no-hint / hint)", "speed-up in seconds",
                "s/step hint / no-hint", "reverse: no-hint steps / s to the hint's final PSNR"]
    table2 = []
    for r in rows:
        for p in r["pairs"]:
            h, n = p["hint"], p["nohint"]

            def reach(x: dict[str, Any]) -> str:
                if x["step"] is None:
                    return f"not reached (best {x['best']:.2f} dB)" if x["best"] is not None else "not reached"
                return f"{x['step']} / {x['seconds']:.0f}"

            table2.append([
                r["system"], r["colour"], p["seed"], f"{p['target_psnr']:.2f}", reach(h), reach(n),
                f"{p['step_ratio']:.2f}×" if p.get("step_ratio") else "—",
                f"{p['seconds_ratio']:.2f}×" if p.get("seconds_ratio") else "—",
                f"{h['seconds_per_step']:.2f} / {n['seconds_per_step']:.2f}",
                ("not reached" if p.get("nohint_to_hint_final") is None else
                 f"{p['nohint_to_hint_final']['step']} / {p['nohint_to_hint_final']['seconds']:.0f} "
                 f"(hint final {p['hint_final_psnr']:.2f} dB)") if "hint_final_psnr" in p else "—",
            ])
        ratios = [p["step_ratio"] for p in r["pairs"] if p.get("step_ratio")]
        sratios = [p["seconds_ratio"] for p in r["pairs"] if p.get("seconds_ratio")]
        if ratios:
            table2.append([r["system"], r["colour"], "mean", "", "", "", _pm(ratios) + "×",
                           (_pm(sratios) + "×") if sratios else "—", "", ""])
    return (text + "\n### convergence: steps and training seconds to reach the no-hint student's final PSNR "
            "(same seed; validation every --val-every steps)\n\n" + md_table(headers2, table2))


def leaderboard(runs_dir: Path) -> str:
    """``spikedistill leaderboard RUNS_DIR --format md --columns ...`` (in-process), without the
    steps column: the convergence table below measures speed against the no-hint student instead."""
    from distill.leaderboard import main as leaderboard_main

    out = runs_dir / "leaderboard.md"
    leaderboard_main([str(runs_dir), "--format", "md", "--output", str(out), "--no-progress",
                      "--columns", LEADERBOARD_COLUMNS])
    return out.read_text()


# ---------------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description="Teacher vs student with hints vs student without hints, at a fixed step budget, through the "
                    "spikedistill CLI; tables from `spikedistill leaderboard` plus a convergence speed-up table.",
        epilog="Example: nice -n 5 python benchmarks/distill_quality.py --runs-dir runs/bench_quality",
    )
    p.add_argument("--train", type=Path, default=DEFAULT_TRAIN,
                   help=f"training image folder (default {DEFAULT_TRAIN}; e.g. BSD400 or DIV2K)")
    p.add_argument("--eval", type=Path, default=DEFAULT_EVAL,
                   help=f"validation + test image folder (default {DEFAULT_EVAL}; e.g. Set12 or BSD68)")
    p.add_argument("--runs-dir", type=Path, default=REPO / "runs" / "bench_quality",
                   help="where the run directories, logs, manifest.json and leaderboard.md go")
    p.add_argument("--systems", nargs="+", default=list(DEFAULT_SYSTEMS), choices=list(SYSTEMS),
                   help=f"systems to run (default: {' '.join(DEFAULT_SYSTEMS)}); " + "; ".join(
                       f"{k}: {s.label}" + ("" if s.available() else " [missing: " + ", ".join(s.missing()) + "]")
                       for k, s in SYSTEMS.items()))
    p.add_argument("--sigma", type=float, default=25.0, help="noise level of the denoising systems (default 25)")
    p.add_argument("--channels", nargs="+", type=int, default=[1, 3], choices=[1, 3], help="1 gray, 3 RGB (default both)")
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1], help="student seeds (default 0 1)")
    p.add_argument("--teacher-steps", type=int, default=400,
                   help="teacher optimizer steps (default 400: with --jobs 2 the default benchmark takes ~35 min on 2 cores)")
    p.add_argument("--student-steps", type=int, default=200, help="student optimizer steps (default 200)")
    p.add_argument("--val-every", type=int, default=25,
                   help="student validation interval in steps: the resolution of the convergence table (default 25)")
    p.add_argument("--teacher-val-every", type=int, default=100, help="teacher validation interval (default 100)")
    p.add_argument("--eval-size", type=int, default=192,
                   help="centre crop side of the evaluation images (0 = whole images; default 192, bounds CPU time)")
    p.add_argument("--threads", type=int, default=1,
                   help="torch intra-op threads for the runs (default 1; 0 = torch's default, one per core)")
    p.add_argument("--isolate", action="store_true",
                   help="with --jobs 1: run every CLI call in a fresh `python -m distill.cli` subprocess instead of "
                        "in-process (which pays the Lightning/wandb imports once)")
    p.add_argument("--jobs", type=int, default=2,
                   help="run this many independent chains at once (teacher + its students; each shipped-teacher "
                        "system; default 2, for 2 cores with --threads 1); implies --isolate when > 1")
    p.add_argument("--resume", action="store_true", help="skip runs whose results.json already exists")
    p.add_argument("--dry-run", action="store_true", help="print the commands and exit")
    p.add_argument("--table-only", action="store_true", help="only build the tables from RUNS_DIR/manifest.json")
    return p


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    runs_dir = args.runs_dir.resolve()
    budget = Budget(args.teacher_steps, args.student_steps, args.val_every, args.teacher_val_every,
                    args.eval_size or None)
    if args.jobs < 1:
        raise SystemExit(f"--jobs {args.jobs}: give 1 or more")
    systems = [SYSTEMS[k] for k in args.systems]
    for s in systems:
        if not s.available() and not args.table_only:
            raise SystemExit(f"system {s.key}: missing {', '.join(s.missing())}")
    jobs = plan(systems, args.channels, args.seeds, budget, runs_dir, args.train.resolve(), args.eval.resolve(),
                args.sigma)
    if args.dry_run:
        for job in jobs:
            print(job.shell())
        return
    manifest_path = runs_dir / MANIFEST
    os.environ.setdefault("WANDB_MODE", "disabled")
    os.environ.setdefault("WANDB_SILENT", "true")
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
        os.environ["OMP_NUM_THREADS"] = str(args.threads)  # for --isolate subprocesses
    if not args.table_only:
        for folder in (args.train, args.eval):
            if not folder.is_dir():
                raise SystemExit(f"image folder {folder} does not exist")
        runs_dir.mkdir(parents=True, exist_ok=True)
        info = machine_info()
        manifest: dict[str, Any] = {"machine": info, "command": command_line(), "budget": budget.__dict__, "runs": []}
        if manifest_path.is_file() and args.resume:
            manifest["runs"] = [r for r in json.loads(manifest_path.read_text()).get("runs", [])]
        done = {r["name"] for r in manifest["runs"]}
        print(f"# machine: {machine_line(info)}\n# command: {command_line()}", flush=True)
        started = time.perf_counter()
        lock = threading.Lock()

        def run_chain(chain: list[Job]) -> None:
            for job in chain:
                if args.resume and job.name in done and (job.run_dir is None or read_results(job.run_dir)):
                    print(f"skip {job.name} (done)", flush=True)
                    continue
                l0 = load()
                seconds = run_job(job, runs_dir / "logs", args.isolate or args.jobs > 1)
                entry = {"name": job.name, "run_dir": str(job.run_dir) if job.run_dir else None,
                         "command": job.shell(), "wall_seconds": round(seconds, 1), "load": [l0, load()], **job.meta}
                with lock:
                    manifest["runs"] = [r for r in manifest["runs"] if r["name"] != job.name] + [entry]
                    manifest["wall_seconds"] = round(time.perf_counter() - started, 1)
                    atomic_write_json(manifest_path, manifest)
                res = read_results(job.run_dir) if job.run_dir else None
                score = f" PSNR {final_psnr(res):.2f}" if res and final_psnr(res) is not None else ""
                print(f"{job.name}: {seconds:.0f} s{score} (load {l0} -> {load()})", flush=True)

        with ThreadPoolExecutor(max_workers=args.jobs) as pool:  # threads only wait on CLI subprocesses
            for future in [pool.submit(run_chain, chain) for chain in chains(jobs)]:
                future.result()
        print(f"total wall time {time.perf_counter() - started:.0f} s", flush=True)
    if not manifest_path.is_file():
        raise SystemExit(f"{manifest_path} does not exist: run the benchmark first (without --table-only)")
    manifest = json.loads(manifest_path.read_text())
    print(f"\n## spikedistill leaderboard {runs_dir} --format md --columns {LEADERBOARD_COLUMNS}\n")
    try:
        print(leaderboard(runs_dir))
    except SystemExit as exc:  # the leaderboard reports its own error (e.g. no results yet)
        print(f"(leaderboard failed with exit code {exc.code})")
    print(render_summary(summarize_runs(manifest)))
    (runs_dir / "summary.json").write_text(json.dumps(summarize_runs(manifest), indent=1, default=str))


if __name__ == "__main__":
    main()
