#!/usr/bin/env python
"""The energy-quality frontier (issue 17): spiking students over T, width and a firing-rate target, gray sigma 25.

Points: every run of ``recipes/sweeps/energy_frontier.yaml`` (the strict quickstart student, ``quickstart_hint_alone.yaml``
on ``quickstart.yaml``: T in {1, 2, 4} x width {16, 24} x rate target {none, 0.1}), planned by the engine of
``spikedistill sweep`` (the same run names and commands), plus the ANN twin of each width
(``teachers.twins.DnCNNTwin``, ReLU, trained alone for the twin + spiking steps) as a reference.

Every run gets the data and budget of ``benchmarks/distill_pays.py``'s strict arm (train on ``--train``, validate on
centre crops of ``--eval``; 1700 twin + 400 spiking steps), so T = 4, width 24, no target is that arm at seed 0. Runs
go through the real CLI (``distill.sweep.run_job``: a finished run is skipped, an interrupted one resumes from its
last.ckpt), and are scored on the full ``--eval`` images by ``../shared/anchors/protocol.py`` (``anchor.json``), the
shipped teacher once (``teacher_anchor.json``). Energy per image is the run's results.json ``energy`` block (its
constants, 45 nm fp32 in the recipe), measured on the run's first test image, whose size the outputs state; the
teacher's is measured on the same image. ``summary.json``, ``summary.md`` (every point, the Pareto set) and
``frontier.png`` (anchor PSNR against energy per image, log x, teacher and ANN twins marked; a nested teacher's
narrow network is the ANN twin of students that start from it) are rewritten as runs land.

Example::

    python benchmarks/energy_frontier.py --runs-dir runs/energy_frontier
    python benchmarks/energy_frontier.py --runs-dir runs/energy_frontier --table-only
    python benchmarks/energy_frontier.py --smoke     # every point at 2 + 2 steps, into runs/energy_frontier_smoke
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from matplotlib.figure import Figure  # noqa: E402

from benchmarks.common import REPO, anchor_psnr, machine_info, machine_line, md_table  # noqa: E402
from benchmarks.distill_pays import DEFAULT_EVAL, DEFAULT_TRAIN, anchor_score  # noqa: E402
from benchmarks.score_teacher import Nested  # noqa: E402
from distill.io import atomic_write_json, atomic_write_text  # noqa: E402
from distill.plots import new_figure, save_figure  # noqa: E402
from distill.results import RESULTS_NAME  # noqa: E402
from distill.sweep import build_command, load_sweep, prepare, run_job, run_name  # noqa: E402

SWEEP_FILE = "recipes/sweeps/energy_frontier.yaml"
WIDTH = "model.init_args.student.init_args.features"
TWIN = "teachers.twins.DnCNNTwin"
MODE = "gray"  # the anchor protocol's mode for the sweep's data (gray, sigma 25)
SIGMA = 25.0  # the sweep's noise level, in 8-bit units
#: what --smoke adds to every spiking run: a warm start that costs nothing
SMOKE_WARM_START = ["--model.init_args.warm_start.calibration_patches=2", "--model.init_args.warm_start.eval_images=1"]


@dataclass
class Point:
    """One run of the frontier: a spiking student of the sweep, or the ANN twin of one width."""

    name: str
    kind: str  # "student" | "ann_twin"
    run_dir: Path
    command: list[str]


def shared_overrides(args: argparse.Namespace) -> list[str]:
    """Every run's data and validation options (after the sweep's parameters, as `spikedistill sweep -- ...`)."""
    data = "--data.init_args."
    return [f"{data}train=[{args.train}]", f"{data}val=[{args.eval}]", f"{data}eval_size={args.eval_size}",
            f"--trainer.val_check_interval={args.val_every}", "--trainer.enable_progress_bar=false"]


def scheduler_class(recipes: list[str]) -> str:
    """The class path of the learning-rate scheduler that the last of `recipes` naming one sets."""
    import yaml

    found = ""
    for recipe in recipes:
        model = (yaml.safe_load((REPO / recipe).read_text()) or {}).get("model") or {}
        found = ((model.get("init_args") or {}).get("scheduler") or {}).get("class_path", found)
    return found


def steps(count: int, scheduler: str = "CosineAnnealingLR") -> list[str]:
    """`count` optimizer steps with the recipe's schedule stretched over all of them (OneCycleLR: `total_steps`
    one more than the steps, as the recipes set it; otherwise the cosine's `T_max`)."""
    length = f"total_steps={count + 1}" if scheduler.endswith("OneCycleLR") else f"T_max={count}"
    return [f"--trainer.max_steps={count}", f"--model.init_args.scheduler.init_args.{length}"]


def twin_params(width: int, args: argparse.Namespace) -> dict[str, Any]:
    """The ANN twin of the `width` student in the sweep's base recipe: trained alone, no warm start, for as many
    steps as a spiking run's twin and spiking phases together."""
    total = args.twin_steps + args.steps
    return {"model.init_args.student": TWIN, WIDTH: width, "model.init_args.warm_start": None,
            "trainer.max_steps": total, "model.init_args.scheduler.init_args.T_max": total}


def plan(args: argparse.Namespace) -> list[Point]:
    """The sweep's runs (with the budget) and one ANN twin per width of the sweep."""
    shared = shared_overrides(args)
    budget = [*steps(args.steps, scheduler_class(load_sweep(args.sweep).recipes)),
              f"--model.init_args.warm_start.twin_steps={args.twin_steps}", *(SMOKE_WARM_START if args.smoke else [])]
    sweep, _ = prepare(args.sweep, str(args.runs_dir), overrides=[*shared, *budget])
    points = [Point(run.name, "student", Path(run.run_dir), run.command) for run in sweep.runs]
    spec = sweep.spec
    for width in spec.config["parameters"].get(WIDTH, {}).get("values", []):  # a fixed width: no twin reference
        params = twin_params(width, args)
        name = run_name(f"{spec.name}-ann_twin", params, shared)
        run_dir = args.runs_dir / name
        points.append(Point(name, "ann_twin", run_dir, build_command(spec, params, str(run_dir), shared)))
    return points


def finish(point: Point, args: argparse.Namespace) -> dict[str, Any]:
    """Fit (or resume, or skip) one point and score it on the anchor protocol; returns its row."""
    job = {"name": point.name, "run_dir": str(point.run_dir), "command": point.command, "cwd": str(REPO),
           "sweep": "energy_frontier"}
    outcome = run_job(job)  # skips a run whose results.json is valid, resumes one that left a last.ckpt
    if outcome["status"] != "finished":
        raise RuntimeError(f"{point.name} failed (exit {outcome['returncode']}); see {point.run_dir / 'sweep.log'}")
    anchor = point.run_dir / "anchor.json"
    if not anchor.is_file():
        atomic_write_json(anchor, anchor_score(point.run_dir, args.eval, MODE))
    return row(point)


def image_size(report: dict[str, Any]) -> tuple[int, int]:
    """(H, W) of the image an energy report was measured on: its first layer's output (neither DnCNN nor the
    students down-sample there)."""
    height, width = report["layers"][0]["output_shape"][-2:]
    return int(height), int(width)


def rate_label(regularizer: dict[str, Any] | None) -> str:
    """The rate regulariser of a run, in a table cell."""
    if regularizer is None:
        return "none"
    if regularizer["kind"] == "l1":
        return f"l1 x{regularizer['weight']:g}"
    return f"{regularizer['target']} (x{regularizer['weight']:g})"


def row(point: Point) -> dict[str, Any]:
    """What the tables and the plot need from one finished, scored point."""
    results = json.loads((point.run_dir / RESULTS_NAME).read_text())
    init = results["config"]["model"]["init_args"]
    energy = results["energy"]
    return {
        "name": point.name, "kind": point.kind, "timesteps": results["timesteps"],
        "features": init["student"]["init_args"]["features"], "rate_target": rate_label(init.get("rate_regularizer")),
        "twin_hint": float((init.get("warm_start") or {}).get("twin_hint_weight") or 0.0),
        "anchor_psnr": json.loads((point.run_dir / "anchor.json").read_text())["anchor_psnr"],
        "energy_uj": energy["student_uj"], "teacher_uj": energy["teacher_uj"], "ratio": energy["ratio"],
        "mean_firing_rate": energy.get("mean_firing_rate"), "constants": energy["constants"]["name"],
        "image_size": image_size(energy["student"]), "teacher_image_size": image_size(energy["teacher"]),
        "seconds": results["convergence"]["train_seconds"], "teacher": init["teacher"],
    }


def nested_energy_uj(network: Any, image_size: tuple[int, int], constants: str) -> float:
    """Energy per image of a nested DnCNN's narrow network (an ANN: every conv is MACs, whatever the image holds; a
    blind one reads the sweep's level as its noise-map channel)."""
    import torch

    from distill.energy import measure_energy

    nested = Nested(network)
    kwargs = {"sigma": torch.full((1,), SIGMA / 255)} if nested.needs_sigma else None
    return measure_energy(nested, torch.zeros(1, network.in_channels, *image_size), constants,
                          model_kwargs=kwargs).energy_uj


def teacher_score(rows: list[dict[str, Any]], args: argparse.Namespace) -> dict[str, Any]:
    """The runs' teacher on the anchor protocol (built from a run's recipe), cached in `teacher_anchor.json`; with
    its nested network too when it has one: that is the students' ANN twin when they start from it by weight
    selection (the distilled sweep), scored and measured on the runs' image."""
    from distill.export import build_network

    spec = rows[0]["teacher"]
    network = build_network(spec["class_path"], spec["init_args"], "the runs' teacher")
    score = {**anchor_psnr(network, args.eval, MODE, SIGMA), "teacher": spec}
    if getattr(network, "nested_features", None):
        score["nested"] = {"features": network.nested_features, "levels": network.nested_levels,
                           **anchor_psnr(Nested(network), args.eval, MODE, SIGMA),
                           "energy_uj": nested_energy_uj(network, rows[0]["image_size"], rows[0]["constants"])}
    return score


def nested_line(teacher: dict[str, Any], teacher_uj: float) -> str:
    """The teacher's nested network as the students' ANN-twin reference, in one sentence."""
    nested = teacher["nested"]
    levels = f"{nested['levels']}-level activations" if nested.get("levels") else "ReLU"
    return (f"ANN twin: the teacher's nested network (width {nested['features']}, {levels}; the students' start by "
            f"weight selection): {nested['anchor_psnr']:.2f} dB ({nested['anchor_psnr'] - teacher['anchor_psnr']:+.2f} "
            f"vs the teacher), {nested['energy_uj']:,.1f} µJ / image ({teacher_uj / nested['energy_uj']:.1f}x less "
            f"than the teacher).")


def pareto(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The rows no other row beats (at most the energy and at least the PSNR, one strictly), by energy."""
    def beaten(r: dict[str, Any]) -> bool:
        return any(o["energy_uj"] <= r["energy_uj"] and o["anchor_psnr"] >= r["anchor_psnr"]
                   and (o["energy_uj"] < r["energy_uj"] or o["anchor_psnr"] > r["anchor_psnr"]) for o in rows)

    return sorted((r for r in rows if not beaten(r)), key=lambda r: r["energy_uj"])


def measured_on(rows: list[dict[str, Any]]) -> str:
    """The one image size and constants every energy was measured with; an error if the runs disagree."""
    sizes = {size for r in rows for size in (r["image_size"], r["teacher_image_size"])}
    constants = {r["constants"] for r in rows}
    if len(sizes) != 1 or len(constants) != 1:
        raise RuntimeError(f"the runs measured energy on different images or constants ({sizes}, {constants}); "
                           "one frontier needs one --eval-size and one energy preset")
    (height, width), = sizes
    return f"{height}x{width} gray image, {constants.pop()}"


def table(rows: list[dict[str, Any]], teacher_psnr: float | None) -> str:
    """A markdown table of `rows`, by energy."""
    cells = []
    for r in sorted(rows, key=lambda r: r["energy_uj"]):
        delta = None if teacher_psnr is None else f"{r['anchor_psnr'] - teacher_psnr:+.2f}"
        rate = r["mean_firing_rate"]
        cells.append([r["name"], "ANN" if r["kind"] == "ann_twin" else r["timesteps"], r["features"],
                      "—" if r["kind"] == "ann_twin" else r["rate_target"],
                      "—" if r["kind"] == "ann_twin" else f"{r['twin_hint']:g}", f"{r['anchor_psnr']:.2f}", delta,
                      f"{r['energy_uj']:,.1f}", f"{r['ratio']:.1f}x", None if rate is None else f"{rate:.3f}",
                      f"{r['seconds']:.0f}"])
    return md_table(["point", "T", "width", "rate target", "twin hint", "anchor PSNR (dB)", "vs teacher (dB)",
                     "energy / image (µJ)", "teacher / point", "mean rate", "train s"], cells)


def summarise(rows: list[dict[str, Any]], teacher: dict[str, Any] | None, args: argparse.Namespace) -> str:
    """The markdown report: the references, the Pareto set, every point and the issue's target."""
    students = [r for r in rows if r["kind"] == "student"]
    twins = [r for r in rows if r["kind"] == "ann_twin"]
    teacher_psnr = None if teacher is None else teacher["anchor_psnr"]
    teacher_uj = rows[0]["teacher_uj"]
    lines = [f"Machine: {machine_line(machine_info())}", "",
             f"Budget: twin {args.twin_steps} + spiking {args.steps} steps"
             f"{f' (ANN twins: {args.twin_steps + args.steps} steps alone)' if twins else ''}; "
             f"validation crops {args.eval_size} px; anchor = full {args.eval.name} images, "
             f"anchors/protocol.py, {MODE} sigma {SIGMA:g}.",
             f"Energy per image: {measured_on(rows)} (each run's first test image, a centre crop of the first "
             f"{args.eval.name} image); teacher {teacher_uj:,.1f} µJ / image on the same image, "
             f"anchor {'not scored yet' if teacher_psnr is None else f'{teacher_psnr:.2f} dB'}.", ""]
    if students:
        front = pareto(students)
        lines += ["Pareto set (spiking students):", "", table(front, teacher_psnr)]
        if teacher_psnr is not None:
            lines += [target_line(students, teacher_psnr), ""]
    if twins:
        lines += ["ANN twins (references):", "", table(twins, teacher_psnr)]
    if teacher is not None and teacher.get("nested"):
        lines += [nested_line(teacher, teacher_uj), ""]
    lines += ["Every point:", "", table(rows, teacher_psnr)]
    return "\n".join(lines)


def target_line(students: list[dict[str, Any]], teacher_psnr: float) -> str:
    """Whether a point is at >= 50x less energy than the teacher within 1 dB of it (issue 17), else the nearest."""
    def point(r: dict[str, Any]) -> str:
        return f"{r['name']} ({r['ratio']:.1f}x, {r['anchor_psnr'] - teacher_psnr:+.2f} dB)"

    def psnr(r: dict[str, Any]) -> float:
        return r["anchor_psnr"]

    at_ratio = [r for r in students if r["ratio"] >= 50]
    near = [r for r in students if r["anchor_psnr"] >= teacher_psnr - 1.0]
    goal = "Target (>= 50x less energy than the teacher, within 1.0 dB of it)"
    hit = [r for r in at_ratio if r in near]
    if hit:
        return f"{goal} met by {point(max(hit, key=psnr))}."
    nearest = ([f"best at >= 50x: {point(max(at_ratio, key=psnr))}"] if at_ratio else []) + \
        ([f"cheapest within 1 dB: {point(max(near, key=lambda r: r['ratio']))}"] if near else [])
    return f"{goal} not met; {'; '.join(nearest) or 'no point is at either'}."


def frontier_figure(rows: list[dict[str, Any]], teacher: dict[str, Any] | None,
                    title: str = "strict quickstart recipe") -> Figure:
    """Anchor PSNR against energy per image (log x): students by T (colour), width and twin hint (marker) and rate
    target (filled: with one), the Pareto set joined, the ANN twins and the teacher marked."""
    fig = new_figure(7.5, 4.8)
    ax = fig.subplots()
    students = [r for r in rows if r["kind"] == "student"]
    widths = sorted({r["features"] for r in rows})
    markers = dict(zip(widths, "os^vD"))
    kinds = sorted({(r["features"], r["twin_hint"]) for r in students})
    student_markers = dict(zip(kinds, "osD^vP"))
    for i, timesteps in enumerate(sorted({r["timesteps"] for r in students})):
        for width, hint in kinds:
            for targeted in (False, True):
                group = [r for r in students if r["timesteps"] == timesteps and r["features"] == width
                         and r["twin_hint"] == hint and (r["rate_target"] != "none") == targeted]
                if group:
                    ax.scatter([r["energy_uj"] for r in group], [r["anchor_psnr"] for r in group], s=46,
                               marker=student_markers[width, hint], edgecolors=f"C{i}", linewidths=1.5,
                               facecolors=f"C{i}" if targeted else "none",
                               label=f"T={timesteps}, width {width}{f', twin hint {hint:g}' if hint else ''}"
                                     f"{', rate target' if targeted else ''}")
    if students:
        front = pareto(students)
        ax.plot([r["energy_uj"] for r in front], [r["anchor_psnr"] for r in front], color="0.4", linestyle="--",
                linewidth=1, label="Pareto set", zorder=0)
    for r in (r for r in rows if r["kind"] == "ann_twin"):
        ax.scatter([r["energy_uj"]], [r["anchor_psnr"]], marker=markers[r["features"]], s=70, color="0.3",
                   label=f"ANN twin, width {r['features']}")
    if teacher is not None and teacher.get("nested"):
        nested = teacher["nested"]
        ax.scatter([nested["energy_uj"]], [nested["anchor_psnr"]], marker="P", s=70, color="0.3",
                   label=f"ANN twin: the teacher's nested network, width {nested['features']}")
    if teacher is not None:
        ax.scatter([rows[0]["teacher_uj"]], [teacher["anchor_psnr"]], marker="*", s=180, color="black",
                   label="teacher")
    ax.set_xscale("log")
    ax.set_xlabel(f"energy per image (µJ; {measured_on(rows)})")
    ax.set_ylabel("PSNR (dB), photos-eval, anchor protocol, σ = 25")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, loc="best")
    fig.suptitle(f"energy-quality frontier: spiking DnCNN students ({title})")
    return fig


def lacks_nested(teacher: dict[str, Any]) -> bool:
    """Whether a cached teacher score predates the nested-network reference (a nested teacher without it)."""
    return bool(teacher["teacher"]["init_args"].get("nested_features")) and "nested" not in teacher


def write_summary(rows: list[dict[str, Any]], args: argparse.Namespace) -> None:
    """summary.json, summary.md and frontier.png of the rows so far; the teacher is scored once (not with
    --table-only, which only reads what is there)."""
    teacher_file = args.runs_dir / "teacher_anchor.json"
    if not args.table_only and (not teacher_file.is_file() or lacks_nested(json.loads(teacher_file.read_text()))):
        atomic_write_json(teacher_file, teacher_score(rows, args))
    teacher = json.loads(teacher_file.read_text()) if teacher_file.is_file() else None
    students = [r for r in rows if r["kind"] == "student"]
    atomic_write_json(args.runs_dir / "summary.json", {
        "args": {k: str(v) for k, v in vars(args).items()}, "energy_measured_on": measured_on(rows),
        "teacher": teacher, "rows": rows, "pareto": [r["name"] for r in pareto(students)]})
    atomic_write_text(args.runs_dir / "summary.md", summarise(rows, teacher, args))
    title = "strict quickstart recipe" if args.sweep == SWEEP_FILE else Path(args.sweep).stem
    save_figure(frontier_figure(rows, teacher, title), args.runs_dir / "frontier.png")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs-dir", type=Path, default=None,
                        help="default: runs/energy_frontier (runs/energy_frontier_smoke with --smoke)")
    parser.add_argument("--sweep", default=SWEEP_FILE,
                        help=f"the sweep file of the spiking points (default {SWEEP_FILE}; "
                             "recipes/sweeps/energy_frontier_distilled.yaml: the distilled quickstart, with --twin-steps 0)")
    parser.add_argument("--train", type=Path, default=DEFAULT_TRAIN)
    parser.add_argument("--eval", type=Path, default=DEFAULT_EVAL)
    parser.add_argument("--twin-steps", type=int, default=1700, help="warm-start twin steps (distill_pays' strict arm)")
    parser.add_argument("--steps", type=int, default=400, help="spiking fine-tune steps")
    parser.add_argument("--val-every", type=int, default=100)
    parser.add_argument("--eval-size", type=int, default=256, help="validation/test crops: also the energy image")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1, help="torch threads per run")
    parser.add_argument("--table-only", action="store_true", help="summarise the scored runs; run nothing")
    parser.add_argument("--smoke", action="store_true",
                        help="every point at 2 twin + 2 spiking steps, 64 px crops: checks the pipeline end to end")
    args = parser.parse_args(argv)
    if args.smoke:
        args.twin_steps, args.steps, args.val_every, args.eval_size = 2, 2, 2, 64
    default = "energy_frontier_smoke" if args.smoke else "energy_frontier"
    args.runs_dir = (args.runs_dir or REPO / "runs" / default).resolve()
    args.train, args.eval = args.train.resolve(), args.eval.resolve()
    os.chdir(REPO)  # the sweep file names its recipes from the repository root
    points = plan(args)
    rows: list[dict[str, Any]] = []

    def land(result: dict[str, Any]) -> None:
        rows.append(result)
        write_summary(rows, args)
        print(f"landed {result['name']}: {result['anchor_psnr']:.2f} dB, {result['energy_uj']:,.1f} µJ / image",
              flush=True)

    args.runs_dir.mkdir(parents=True, exist_ok=True)
    failed: list[str] = []
    if args.table_only:
        for point in points:
            if (point.run_dir / "anchor.json").is_file():
                land(row(point))
    else:
        import torch

        os.environ.update(WANDB_MODE="disabled", WANDB_SILENT="true", OMP_NUM_THREADS=str(args.threads))
        torch.set_num_threads(args.threads)  # the anchor scoring in this process
        started = time.time()
        with ThreadPoolExecutor(args.jobs) as pool:
            futures = {pool.submit(finish, point, args): point for point in points}
            for future in as_completed(futures):
                try:
                    land(future.result())
                except Exception as exc:  # noqa: BLE001 - one failed point must not stop the others
                    failed.append(f"{futures[future].name}: {exc}")
                    print(f"failed {failed[-1]}", flush=True)
        print(f"done in {time.time() - started:.0f} s")
    print((args.runs_dir / "summary.md").read_text() if rows else "no finished runs")
    if failed:
        raise SystemExit(f"{len(failed)} point(s) failed:\n" + "\n".join(failed))


if __name__ == "__main__":
    main()
