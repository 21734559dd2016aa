"""`spikedistill plot RUNS_DIR`: figures from every results.json under a folder, saved as PNG (atomically).

* ``convergence_<setting>.png``: validation PSNR vs optimizer step and vs training seconds
  (``convergence.history``), every run of one setting (model, teacher, task, data, σ, T) in one
  figure, so each hint run is drawn over its no-hint twin; the teacher's PSNR is a horizontal line
  (its validation PSNR, recovered from the ``teacher-<d>dB`` targets, else its test PSNR).
* ``firing_rates_<run>.png``: per-layer firing rates (results.json ``firing_rates``), when present.
* ``energy_<run>.png``: per-layer energy of teacher and student (``energy.<role>.layers``, the rows
  of ``distill.energy.EnergyReport``) on one shared scale, coloured by kind (MAC / AC / neuron).
* ``samples_<run>.png``: degraded | teacher | student | clean, with a zoomed crop where the
  student's error is largest, from ``<run>/samples/<name>_{input,teacher,student,target}.png``.

`log_figures_to_loggers(trainer, figures)` logs figures to the trainer's loggers (wandb's
``log_image``) and `run_figures(results, run_dir)` builds the per-run figures, for use during fit.
Figures are built with the object-oriented API on the Agg canvas: no pyplot, no global backend.
"""
from __future__ import annotations

import argparse
import math
import re
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Patch, Rectangle

from distill.errors import ConfigError, SpikeDistillError
from distill.formatting import slug
from distill.io import atomic_path
from distill.leaderboard import Group, Run, group_runs, load_runs

SAMPLE_ROLES = ("input", "teacher", "student", "target")
SAMPLE_TITLES = {"input": "degraded", "teacher": "teacher", "student": "student", "target": "clean"}
KIND_COLORS = {"analog": "#d62728", "spike": "#1f77b4", "neuron": "#7f7f7f"}
KIND_LABELS = {"analog": "MACs (analog input)", "spike": "ACs (spike input)", "neuron": "neuron updates"}
MAX_SAMPLE_ROWS = 3


def new_figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), dpi=110, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def save_figure(fig: Figure, path: str | Path) -> Path:
    """Save `fig` as PNG at `path`, atomically."""
    target = Path(path)
    with atomic_path(target) as tmp:
        fig.savefig(tmp, format="png")
    return target


def figure_to_array(fig: Figure) -> np.ndarray:
    """RGB uint8 array ``[H, W, 3]`` of a rendered figure (what image loggers accept)."""
    canvas = fig.canvas if isinstance(fig.canvas, FigureCanvasAgg) else FigureCanvasAgg(fig)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()


# ---------------------------------------------------------------------------------------------------
# convergence


def teacher_val_psnr(run: Run) -> tuple[float | None, str]:
    """The teacher's validation PSNR (``convergence.reference_psnr``), else its test PSNR."""
    reference = (run.data.get("convergence") or {}).get("reference_psnr")
    if isinstance(reference, (int, float)):
        return float(reference), "teacher (val)"
    return run.metric("teacher", "psnr"), "teacher (test)"


def _history(run: Run) -> list[dict[str, float]]:
    history = (run.data.get("convergence") or {}).get("history") or []
    return [h for h in history if isinstance(h, dict) and isinstance(h.get("psnr"), (int, float))]


def convergence_figures(groups: Sequence[Group]) -> dict[str, Figure]:
    """One figure per setting: every group (hint runs and their no-hint twin) and seed, vs step and seconds."""
    settings: dict[tuple, list[Group]] = {}
    for group in groups:
        if any(_history(r) for r in group.runs):
            settings.setdefault(group.label_key[:6], []).append(group)
    figures: dict[str, Figure] = {}
    for key, members in settings.items():
        model, teacher, task, dataset, sigma, timesteps = key
        fig = new_figure(10, 3.8)
        ax_step, ax_time = fig.subplots(1, 2, sharey=True)
        # the no-hint twin first, so the hint runs are drawn over it
        members = sorted(members, key=lambda g: g.first.uses_distillation())
        for i, group in enumerate(members):
            color = f"C{i}"
            label = group.first.distill_label() + (f" [{group.variant}]" if group.variant else "")
            for j, run in enumerate(group.runs):
                hist = _history(run)
                if not hist:
                    continue
                steps = [h.get("step", math.nan) for h in hist]
                seconds = [h.get("seconds", math.nan) for h in hist]
                psnr = [h["psnr"] for h in hist]
                style = dict(color=color, alpha=0.9 if j == 0 else 0.55, linewidth=1.6, marker="o", markersize=2.5)
                text = f"{label} ({len(group.runs)} seed{'s' if len(group.runs) > 1 else ''})" if j == 0 else None
                ax_step.plot(steps, psnr, label=text, **style)
                ax_time.plot(seconds, psnr, **style)
        teacher_psnr, teacher_label = None, ""
        for group in members:
            for run in group.runs:
                teacher_psnr, teacher_label = teacher_val_psnr(run)
                if teacher_psnr is not None:
                    break
            if teacher_psnr is not None:
                break
        if teacher_psnr is not None:
            for ax in (ax_step, ax_time):
                ax.axhline(teacher_psnr, color="black", linestyle="--", linewidth=1.2,
                           label=f"{teacher_label} {teacher_psnr:.2f} dB" if ax is ax_step else None)
        ax_step.set_xlabel("optimizer step")
        ax_time.set_xlabel("training time (s)")
        ax_step.set_ylabel("validation PSNR (dB)")
        for ax in (ax_step, ax_time):
            ax.grid(True, alpha=0.3)
        ax_step.legend(fontsize=8, loc="best")
        try:
            sigma_text = f"{float(sigma):g}"
        except (TypeError, ValueError):
            sigma_text = "blind"
        fig.suptitle(f"{model} from {teacher or 'no teacher'}: {task} on {dataset}, σ={sigma_text}, T={timesteps}")
        name = slug(f"convergence_{model}_{teacher}_{task}_{dataset}_s{sigma_text}_T{timesteps}")
        figures[name] = fig
    return figures


# ---------------------------------------------------------------------------------------------------
# per-run figures


def firing_rate_figure(results: Mapping[str, Any], title: str = "") -> Figure | None:
    rates = results.get("firing_rates")
    if not isinstance(rates, Mapping) or not rates:
        return None
    layers = [str(k) for k in rates]
    values = [float(v) if isinstance(v, (int, float)) else math.nan for v in rates.values()]
    fig = new_figure(7, 1.2 + 0.32 * len(layers))
    ax = fig.subplots()
    y = np.arange(len(layers))
    ax.barh(y, values, color="#1f77b4")
    for yi, v in zip(y, values):
        if math.isfinite(v):
            ax.text(v, yi, f" {100 * v:.1f}%", va="center", fontsize=8)
    ax.set_yticks(y, layers, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlim(0, max(max((v for v in values if math.isfinite(v)), default=0) * 1.25, 0.05))
    ax.set_xlabel("firing rate (spikes per neuron per step)")
    ax.grid(True, axis="x", alpha=0.3)
    fig.suptitle(f"firing rates per layer{': ' + title if title else ''}")
    return fig


def energy_rows(results: Mapping[str, Any], role: str) -> list[dict[str, Any]]:
    report = (results.get("energy") or {}).get(role)
    if not isinstance(report, Mapping):
        return []
    rows = report.get("layers") or report.get("rows") or []
    return [r for r in rows if isinstance(r, Mapping) and isinstance(r.get("energy_pj"), (int, float))]


def energy_figure(results: Mapping[str, Any], title: str = "") -> Figure | None:
    """Per-layer energy of each network, side by side on one shared x scale, so that bar lengths compare across
    networks (a student 38x cheaper than its teacher draws 38x shorter)."""
    roles = [role for role in ("teacher", "student", "model") if energy_rows(results, role)]
    if not roles:
        return None
    height = 1.4 + 0.3 * max(len(energy_rows(results, r)) for r in roles)
    fig = new_figure(5.2 * len(roles), height)
    axes = np.atleast_1d(fig.subplots(1, len(roles), sharex=True))
    kinds_seen: set[str] = set()
    for ax, role in zip(axes, roles):
        rows = energy_rows(results, role)
        energy_nj = [float(r["energy_pj"]) * 1e-3 for r in rows]
        kinds = [str(r.get("kind") or ("analog" if r.get("input_rate") is None else "spike")) for r in rows]
        kinds_seen.update(kinds)
        y = np.arange(len(rows))
        ax.barh(y, energy_nj, color=[KIND_COLORS.get(k, "#2ca02c") for k in kinds])
        ax.set_yticks(y, [str(r.get("layer")) for r in rows], fontsize=8)
        ax.invert_yaxis()
        total_uj = sum(energy_nj) * 1e-3
        uj = (results.get("energy") or {}).get(f"{role}_uj")
        total = float(uj) if isinstance(uj, (int, float)) else total_uj
        ax.set_title(f"{role}: {total:,.0f} µJ / image" if total >= 100 else f"{role}: {total:.3g} µJ / image",
                     fontsize=10)
        ax.set_xlabel("energy per image (nJ)")
        ax.grid(True, axis="x", alpha=0.3)
    handles = [Patch(color=KIND_COLORS.get(k, "#2ca02c"), label=KIND_LABELS.get(k, k)) for k in sorted(kinds_seen)]
    axes[-1].legend(handles=handles, fontsize=8, loc="lower right")
    constants = ((results.get("energy") or {}).get("constants") or {}).get("name")
    ratio = (results.get("energy") or {}).get("ratio")
    extra = f", teacher/student {ratio:.1f}x" if isinstance(ratio, (int, float)) else ""
    fig.suptitle(f"energy per layer{': ' + title if title else ''} ({constants or 'constants ?'}{extra})")
    return fig


def _load_png(path: Path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as im:
        im = im.convert("L") if im.mode in ("1", "L", "I;16", "I", "F") else im.convert("RGB")
        return np.asarray(im)


def find_samples(run_dir: str | Path) -> dict[str, dict[str, Path]]:
    """``{name: {role: path}}`` from ``<run_dir>/samples/<name>_<role>.png``."""
    folder = Path(run_dir) / "samples"
    found: dict[str, dict[str, Path]] = {}
    if not folder.is_dir():
        return found
    for path in sorted(folder.glob("*.png")):
        m = re.fullmatch(r"(.+)_(input|teacher|student|target)", path.stem)
        if m:
            found.setdefault(m.group(1), {})[m.group(2)] = path
    return {name: roles for name, roles in found.items() if len(roles) >= 2}


def worst_crop(error: np.ndarray, size: int) -> tuple[int, int]:
    """Top-left corner of the `size` x `size` window with the largest summed error."""
    h, w = error.shape
    integral = np.pad(error.cumsum(0).cumsum(1), ((1, 0), (1, 0)))
    sums = integral[size:, size:] - integral[:-size, size:] - integral[size:, :-size] + integral[:-size, :-size]
    y, x = np.unravel_index(int(np.argmax(sums)), sums.shape)
    return int(y), int(x)


def _psnr(a: np.ndarray, b: np.ndarray) -> float | None:
    if a.shape != b.shape:
        return None
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return math.inf if mse == 0 else 10 * math.log10(255.0 ** 2 / mse)


def sample_grid_figure(run_dir: str | Path, title: str = "") -> Figure | None:
    """degraded | teacher | student | clean per sample name, each with a zoomed crop row below."""
    samples = find_samples(run_dir)
    if not samples:
        return None
    names = list(samples)[:MAX_SAMPLE_ROWS]
    roles = [r for r in SAMPLE_ROLES if any(r in samples[n] for n in names)]
    fig = new_figure(2.6 * len(roles), 2 * 2.6 * len(names) + 0.4)
    axes = np.atleast_2d(fig.subplots(2 * len(names), len(roles)))
    for i, name in enumerate(names):
        images = {role: _load_png(path) for role, path in samples[name].items()}
        ref = images.get("target")
        probe = images.get("student", images.get("teacher"))
        h, w = next(iter(images.values())).shape[:2]
        size = max(8, min(h, w) // 4)
        if ref is not None and probe is not None and probe.shape == ref.shape:
            err = np.abs(probe.astype(np.float32) - ref.astype(np.float32))
            y, x = worst_crop(err if err.ndim == 2 else err.mean(2), size)
        else:
            y, x = (h - size) // 2, (w - size) // 2
        for j, role in enumerate(roles):
            full_ax, crop_ax = axes[2 * i, j], axes[2 * i + 1, j]
            for ax in (full_ax, crop_ax):
                ax.set_xticks([])
                ax.set_yticks([])
            image = images.get(role)
            if image is None:
                full_ax.set_axis_off()
                crop_ax.set_axis_off()
                continue
            kwargs = {"cmap": "gray", "vmin": 0, "vmax": 255} if image.ndim == 2 else {}
            full_ax.imshow(image, **kwargs)
            full_ax.add_patch(Rectangle((x - 0.5, y - 0.5), size, size, fill=False, edgecolor="red", linewidth=1.2))
            crop_ax.imshow(image[y : y + size, x : x + size], interpolation="nearest", **kwargs)
            text = SAMPLE_TITLES[role]
            if ref is not None and role != "target":
                value = _psnr(image, ref)
                if value is not None:
                    text += f" {value:.2f} dB"
            full_ax.set_title(text, fontsize=9)
            if j == 0:
                full_ax.set_ylabel(name, fontsize=9)
                crop_ax.set_ylabel(f"zoom {size}x{size}", fontsize=8)
    fig.suptitle(f"samples{': ' + title if title else ''}")
    return fig


def run_figures(results: Mapping[str, Any], run_dir: str | Path | None = None, title: str = "") -> dict[str, Figure]:
    """The per-run figures available for one run: energy, firing rates, and samples (if `run_dir` has them)."""
    figures: dict[str, Figure | None] = {
        "energy": energy_figure(results, title),
        "firing_rates": firing_rate_figure(results, title),
        "samples": sample_grid_figure(run_dir, title) if run_dir is not None else None,
    }
    return {k: v for k, v in figures.items() if v is not None}


# ---------------------------------------------------------------------------------------------------
# logging during fit


def log_figures_to_loggers(trainer: Any, figures: Mapping[str, Figure], step: int | None = None,
                           prefix: str = "figures/") -> int:
    """Log `figures` to every logger of `trainer` that takes images (WandbLogger.log_image; TensorBoard's
    add_figure). Loggers without images (CSV) are skipped. Returns how many images were logged."""
    loggers = list(getattr(trainer, "loggers", None) or [])
    logged = 0
    for logger in loggers:
        if callable(getattr(logger, "log_image", None)):
            for name, fig in figures.items():
                kwargs = {"step": step} if step is not None else {}
                logger.log_image(key=f"{prefix}{name}", images=[figure_to_array(fig)], **kwargs)
                logged += 1
        elif type(logger).__name__ == "TensorBoardLogger":
            for name, fig in figures.items():
                logger.experiment.add_figure(f"{prefix}{name}", fig, global_step=step)
                logged += 1
    return logged


# ---------------------------------------------------------------------------------------------------
# the command


def make_plots(runs_dir: str | Path, output: str | Path | None = None,
               progress: bool | None = None) -> tuple[list[Path], list[str], int]:
    """Write every figure for the runs under `runs_dir`; return the files, notes, and runs read."""
    runs, skipped = load_runs(runs_dir, progress)
    if not runs:
        raise ConfigError(f"no readable results.json under {str(runs_dir)!r}"
                          + (f" ({skipped} skipped, see the warnings above)" if skipped else ""))
    out = Path(output) if output else Path(runs_dir) / "plots"
    written: list[Path] = []
    notes: list[str] = []
    for name, fig in convergence_figures(group_runs(runs)).items():
        written.append(save_figure(fig, out / f"{name}.png"))
    if not written:
        notes.append("no run has a convergence history: convergence plots skipped")
    root = Path(runs_dir)
    no_samples = []
    for run in runs:
        run_dir = run.path.parent
        try:
            label = slug(str(run_dir.relative_to(root))) if run_dir != root else slug(run.name)
        except ValueError:
            label = slug(run.name)
        if label == "run":
            label = slug(run.name)
        for kind, fig in run_figures(run.data, run_dir, run.name).items():
            written.append(save_figure(fig, out / f"{kind}_{label}.png"))
        if not find_samples(run_dir):
            no_samples.append(run.name)
    if no_samples:
        notes.append(f"no samples/ images in {len(no_samples)} run(s) ({', '.join(no_samples[:3])}"
                     f"{', ...' if len(no_samples) > 3 else ''}): image grid skipped")
    return written, notes, len(runs)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="spikedistill plot",
        description="Convergence curves (hint runs over their no-hint twins), firing rates, energy per layer "
                    "and image grids from every results.json under RUNS_DIR.",
    )
    parser.add_argument("runs_dir", metavar="RUNS_DIR")
    parser.add_argument("--output", "-o", default=None, help="folder for the PNGs (default: RUNS_DIR/plots)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser


def main(argv: list[str]) -> None:
    args = build_parser().parse_args(argv)
    try:
        written, notes, runs = make_plots(args.runs_dir, args.output, False if args.no_progress else None)
    except SpikeDistillError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(2) from exc
    for note in notes:
        print(f"note: {note}")
    out = Path(args.output) if args.output else Path(args.runs_dir) / "plots"
    print(f"plot: {len(written)} figure(s) from {runs} run(s) -> {out}")
