"""`spikedistill leaderboard RUNS_DIR`: one table (Markdown, LaTeX/booktabs or CSV) from every results.json.

Runs are grouped into rows by their resolved config with the seed (and run directory, loggers,
callbacks, checkpoint path) left out, so the seeds of one setting are aggregated as mean ± std
(sample std, n - 1). Each row shows the student (or single model), its teacher class, task, dataset, σ,
T and its distillation setting (hints / output distillation). A hint run's *no-hint twin* is the
row whose config differs only in ``model.init_args.hints`` / ``model.init_args.output_distillation``
and which uses neither; the steps column then shows "hint steps / twin steps" to a convergence target.

The LaTeX is a booktabs ``tabular`` with a note that explains its abbreviations (``n/r``, ``T/S``, ...);
its first line names the preamble it needs, and ``--standalone`` writes a whole article that compiles as
it is (the table scaled down to the text width when wider, ``--landscape`` for a landscape page).

Usage::

    spikedistill leaderboard runs --format md|latex|csv [--columns psnr,ssim,...] [--bold-best] [--output FILE]
    spikedistill leaderboard runs --standalone [--landscape] --output table.tex
"""
from __future__ import annotations

import argparse
import csv
import io
import json
import math
import statistics
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

from distill.errors import ConfigError, SpikeDistillError
from distill.formatting import si
from distill.io import atomic_write_text
from distill.results import RESULTS_NAME


#: config keys (dotted, prefixes) that do not define a setting: seeds are aggregated, the rest is bookkeeping
IGNORED_KEYS = (
    "seed_everything",
    "data.init_args.seed",  # seeds of the data (crops, evaluation noise) aggregate like the global seed
    "config",
    "ckpt_path",
    "trainer.default_root_dir",
    "trainer.logger",
    "trainer.callbacks",
    "trainer.enable_progress_bar",
    "trainer.enable_model_summary",
    "trainer.plugins",
    "return_predictions",
)
#: config keys in which a hint run and its no-hint twin differ
DISTILL_KEYS = ("model.init_args.hints", "model.init_args.output_distillation")

PROGRESS_MIN_RUNS = 20


# ---------------------------------------------------------------------------------------------------
# reading runs


@dataclass
class Run:
    """One results.json."""

    path: Path
    data: dict[str, Any]

    @property
    def name(self) -> str:
        return str((self.data.get("run") or {}).get("name") or self.path.parent.name)

    @property
    def config(self) -> dict[str, Any]:
        config = self.data.get("config")
        return config if isinstance(config, dict) else {}

    @property
    def student_role(self) -> str:
        metrics = self.data.get("metrics") or {}
        return "student" if "student" in metrics else "model"

    @property
    def seed(self) -> Any:
        return self.config.get("seed_everything")

    def metric(self, role: str, name: str) -> float | None:
        return _number(((self.data.get("metrics") or {}).get(role) or {}).get(name))

    def teacher_name(self) -> str | None:
        teacher = ((self.config.get("model") or {}).get("init_args") or {}).get("teacher")
        if isinstance(teacher, dict) and teacher.get("class_path"):
            return str(teacher["class_path"]).rsplit(".", 1)[-1]
        source = self.data.get("teacher_source")
        if isinstance(source, dict) and source.get("path"):
            return Path(str(source["path"])).stem
        return None

    def active_hints(self) -> list[dict[str, Any]]:
        hints = self.data.get("hints") or []
        return [h for h in hints if isinstance(h, dict) and (_number(h.get("weight")) or 0) > 0]

    def output_distillation(self) -> bool:
        od = ((self.config.get("model") or {}).get("init_args") or {}).get("output_distillation")
        if isinstance(od, dict):
            weight = _number((od.get("init_args") or od).get("weight"))
            return weight is None or weight > 0
        return bool(od)

    def distill_label(self) -> str:
        parts = []
        n = len(self.active_hints())
        if n:
            parts.append(f"{n} hint" + ("s" if n > 1 else ""))
        if self.output_distillation():
            parts.append("output")
        if parts:
            return " + ".join(parts)
        return "none" if self.student_role == "student" else "alone"

    def uses_distillation(self) -> bool:
        return bool(self.active_hints()) or self.output_distillation()

    def protocol(self) -> str:
        protocol = self.data.get("metric_protocol") or {}
        space = "Y" if protocol.get("y_channel") else ("gray" if self.data.get("channels") == 1 else "RGB")
        return f"{space}, crop {protocol.get('crop_border', 0)}"

    def steps_to(self, label: str) -> float | None:
        targets = (self.data.get("convergence") or {}).get("targets") or {}
        return _number((targets.get(label) or {}).get("step"))

    def target_labels(self) -> list[str]:
        return list(((self.data.get("convergence") or {}).get("targets") or {}).keys())


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def warn(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr)


def find_results(runs_dir: str | Path) -> list[Path]:
    """Every results.json under `runs_dir` (recursively), sorted."""
    root = Path(runs_dir)
    if not root.exists():
        raise ConfigError(f"runs folder {str(root)!r} does not exist")
    if root.is_file():
        return [root] if root.name == RESULTS_NAME else []
    return sorted(p for p in root.rglob(RESULTS_NAME) if p.is_file())


def read_run(path: Path) -> Run | None:
    """The run in `path`, or None (with a warning naming the file) when it cannot be used."""
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError) as exc:
        warn(f"skipping {path}: cannot be read ({exc})")
        return None
    except json.JSONDecodeError as exc:
        warn(f"skipping {path}: invalid JSON ({exc.msg} at line {exc.lineno}, column {exc.colno})")
        return None
    if not isinstance(data, dict) or not isinstance(data.get("metrics"), dict):
        warn(f"skipping {path}: not a spikedistill results.json (no 'metrics' object)")
        return None
    return Run(path, data)


def load_runs(runs_dir: str | Path, progress: bool | None = None) -> tuple[list[Run], int]:
    """Readable runs under `runs_dir` and how many results.json were skipped. Shows a bar for many runs."""
    paths = find_results(runs_dir)
    show = len(paths) >= PROGRESS_MIN_RUNS if progress is None else progress
    if show:
        from tqdm import tqdm

        iterator: Iterable[Path] = tqdm(paths, desc="reading results.json", unit="run", file=sys.stderr)
    else:
        iterator = paths
    runs = [run for run in (read_run(p) for p in iterator) if run is not None]
    return runs, len(paths) - len(runs)


# ---------------------------------------------------------------------------------------------------
# grouping


def flatten(config: Any, prefix: str = "") -> dict[str, Any]:
    """Nested dicts/lists -> {dotted key: leaf value}."""
    flat: dict[str, Any] = {}
    if isinstance(config, dict) and config:
        for key, value in config.items():
            flat.update(flatten(value, f"{prefix}{key}."))
    elif isinstance(config, list) and config:
        for i, value in enumerate(config):
            flat.update(flatten(value, f"{prefix}{i}."))
    else:
        flat[prefix[:-1]] = config if not isinstance(config, (dict, list)) else None
    return flat


def _matches(key: str, prefixes: Sequence[str]) -> bool:
    return any(key == p or key.startswith(p + ".") for p in prefixes)


def setting_key(run: Run, extra_ignored: Sequence[str] = ()) -> str:
    """A canonical string of the run's config without the seed and bookkeeping keys."""
    flat = {k: v for k, v in flatten(run.config).items() if not _matches(k, IGNORED_KEYS + tuple(extra_ignored))}
    identity = {
        "model": run.data.get("model"), "teacher": run.teacher_name(), "task": run.data.get("task"),
        "dataset": run.data.get("dataset"), "sigma": run.data.get("sigma"), "T": run.data.get("timesteps"),
    }
    if extra_ignored:  # a twin also compares the distillation *labels* away
        return json.dumps({"identity": identity, "config": flat}, sort_keys=True, default=str)
    return json.dumps({"identity": identity, "distill": run.distill_label(), "config": flat},
                      sort_keys=True, default=str)


@dataclass
class Group:
    """Runs of one setting (they differ only in the seed)."""

    runs: list[Run]
    twin: "Group | None" = None
    variant: str = ""

    @property
    def first(self) -> Run:
        return self.runs[0]

    def values(self, fn: Callable[[Run], float | None]) -> list[float]:
        return [v for v in (fn(run) for run in self.runs) if v is not None]

    @property
    def label_key(self) -> tuple:
        r = self.first
        return (r.data.get("model"), r.teacher_name(), r.data.get("task"), r.data.get("dataset"),
                str(r.data.get("sigma")), r.data.get("timesteps"), r.distill_label(), str(r.data.get("channels")))

    @property
    def block_key(self) -> tuple:
        r = self.first
        return (str(r.data.get("task")), str(r.data.get("dataset")), str(r.data.get("sigma")),
                str(r.data.get("channels")))


def group_runs(runs: Sequence[Run]) -> list[Group]:
    """Runs grouped by setting, sorted by task, dataset, σ, model, T and distillation; twins linked."""
    by_key: dict[str, list[Run]] = {}
    for run in runs:
        by_key.setdefault(setting_key(run), []).append(run)
    groups = [Group(sorted(rs, key=lambda r: (str(r.seed), str(r.path)))) for rs in by_key.values()]
    groups.sort(key=lambda g: tuple(str(x) for x in g.label_key) + (str(g.first.path),))
    # twins: same config once hints / output distillation are left out, and the twin uses neither
    plain: dict[str, Group] = {}
    for g in groups:
        if not g.first.uses_distillation():
            plain.setdefault(setting_key(g.first, DISTILL_KEYS), g)
    for g in groups:
        if g.first.uses_distillation():
            g.twin = plain.get(setting_key(g.first, DISTILL_KEYS))
    _name_variants(groups)
    return groups


def _name_variants(groups: list[Group]) -> None:
    """Groups with the same visible labels get a `variant` naming the config values that differ."""
    by_label: dict[tuple, list[Group]] = {}
    for g in groups:
        by_label.setdefault(g.label_key, []).append(g)
    for same in by_label.values():
        if len(same) < 2:
            continue
        flats = [{k: v for k, v in flatten(g.first.config).items() if not _matches(k, IGNORED_KEYS)} for g in same]
        keys = sorted({k for f in flats for k in f
                       if len({json.dumps(x.get(k, "<unset>"), default=str) for x in flats}) > 1})
        for g, f in zip(same, flats):
            own = [k for k in keys if k in f]  # a `null` here vs a sub-config there: name the null once
            parts = [f"{_short_key(k)}={_short_value(f[k])}" for k in own[:3]]
            g.variant = ", ".join(parts) + (", ..." if len(own) > 3 else "") if parts else g.first.name


def _short_key(key: str) -> str:
    """`model.init_args.hints.0.schedule.kind` -> `hints[0].schedule.kind`; `data.init_args.sigma` -> `data.sigma`."""
    parts = [p for p in key.split(".") if p != "init_args"]
    index = max((i for i, p in enumerate(parts) if p.isdigit() and i > 0), default=None)
    if index is None:
        return ".".join(parts[-2:])
    return ".".join([f"{parts[index - 1]}[{parts[index]}]", *parts[index + 1:]])


def _short_value(value: Any) -> Any:
    """File paths by their last two parts (a run's folder and file say enough in a table cell)."""
    if isinstance(value, str) and "/" in value:
        return "/".join(value.rstrip("/").split("/")[-2:])
    return value


# ---------------------------------------------------------------------------------------------------
# columns


def mean_std(values: Sequence[float]) -> tuple[float | None, float | None]:
    if not values:
        return None, None
    if len(values) == 1:
        return values[0], None
    return statistics.fmean(values), statistics.stdev(values)


@dataclass
class Cell:
    """One table cell: display text, its sortable value (mean) and CSV fields."""

    text: str
    value: float | None = None
    csv: dict[str, Any] = field(default_factory=dict)


def _stat_cell(key: str, values: Sequence[float], digits: int | None, suffix: str = "") -> Cell:
    """mean ± std with `digits` decimals (None: three significant digits of the mean)."""
    mean, std = mean_std(values)
    if mean is None:
        return Cell("—", None, {f"{key}_mean": "", f"{key}_std": ""})
    if digits is None:
        digits = max(0, 2 - math.floor(math.log10(abs(mean)))) if mean else 2
    text = f"{mean:.{digits}f}{suffix}" + (f" ± {std:.{digits}f}" if std is not None else "")
    return Cell(text, mean, {f"{key}_mean": round(mean, 6), f"{key}_std": "" if std is None else round(std, 6)})


def _scalar_cell(key: str, values: Sequence[float], fmt: Callable[[float], str]) -> Cell:
    mean, _ = mean_std(values)
    if mean is None:
        return Cell("—", None, {key: ""})
    return Cell(fmt(mean), mean, {key: round(mean, 6)})


def _text_cell(key: str, text: Any) -> Cell:
    text = "—" if text is None or text == "" else str(text)
    return Cell(text, None, {key: "" if text == "—" else text})


def _seed_count(group: Group) -> str:
    """Distinct seeds; repeats of a seed (the same setting run twice) are named, since they are in the mean."""
    seeds = len({json.dumps(r.seed, default=str) for r in group.runs})
    return str(seeds) if seeds == len(group.runs) else f"{seeds} ({len(group.runs)} runs)"


def _student_params(run: Run) -> float | None:
    params = run.data.get("params") or {}
    return _number(params.get(run.student_role))


def _energy_uj(run: Run) -> float | None:
    energy = run.data.get("energy") or {}
    return _number(energy.get(f"{run.student_role}_uj"))


def _delta_psnr(run: Run) -> float | None:
    student, teacher = run.metric(run.student_role, "psnr"), run.metric("teacher", "psnr")
    return None if student is None or teacher is None else student - teacher


def _steps_cell(group: Group, target: str) -> Cell:
    def steps(g: Group) -> tuple[str, float | None]:
        values = g.values(lambda r: r.steps_to(target))
        if not values:
            return "n/r", None  # not reached
        mean = statistics.fmean(values)
        text = f"{mean:.0f}" + (f" ({len(values)}/{len(g.runs)})" if len(values) < len(g.runs) else "")
        return text, mean

    own_text, own = steps(group)
    csv_fields: dict[str, Any] = {"steps": "" if own is None else round(own, 1), "steps_twin": ""}
    # a mean over only the seeds that got there is shown, but never ranked as the best
    rank = own if own is not None and len(group.values(lambda r: r.steps_to(target))) == len(group.runs) else None
    if group.twin is None:
        return Cell(own_text, rank, csv_fields)
    twin_text, twin = steps(group.twin)
    csv_fields["steps_twin"] = "" if twin is None else round(twin, 1)
    return Cell(f"{own_text} / {twin_text}", rank, csv_fields)


@dataclass
class Column:
    key: str
    header: str
    numeric: bool
    best: str | None  # "max" | "min" | None
    cell: Callable[[Group], Cell]


def build_columns(groups: Sequence[Group], target: str | None) -> dict[str, Column]:
    protocols = sorted({r.protocol() for g in groups for r in g.runs})
    on = f", {protocols[0]}" if len(protocols) == 1 else ""
    target_text = target or "target"
    return {
        "model": Column("model", "Model", False, None, lambda g: _text_cell("model", g.first.data.get("model"))),
        "teacher": Column("teacher", "Teacher", False, None, lambda g: _text_cell("teacher", g.first.teacher_name())),
        "task": Column("task", "Task", False, None, lambda g: _text_cell("task", g.first.data.get("task"))),
        "dataset": Column("dataset", "Dataset", False, None, lambda g: _text_cell("dataset", g.first.data.get("dataset"))),
        "sigma": Column("sigma", "σ", True, None, lambda g: _text_cell("sigma", _fmt_sigma(g.first.data.get("sigma")))),
        "timesteps": Column("timesteps", "T", True, None, lambda g: _text_cell("timesteps", g.first.data.get("timesteps"))),
        "distill": Column("distill", "Distillation", False, None, lambda g: _text_cell("distill", g.first.distill_label())),
        "variant": Column("variant", "Variant", False, None, lambda g: _text_cell("variant", g.variant)),
        "seeds": Column("seeds", "Seeds", True, None, lambda g: _text_cell("seeds", _seed_count(g))),
        "protocol": Column("protocol", "Protocol", False, None, lambda g: _text_cell("protocol", g.first.protocol())),
        "psnr": Column("psnr", f"PSNR (dB{on})", True, "max",
                       lambda g: _stat_cell("psnr", g.values(lambda r: r.metric(r.student_role, "psnr")), 2)),
        "ssim": Column("ssim", f"SSIM{' (' + on[2:] + ')' if on else ''}", True, "max",
                       lambda g: _stat_cell("ssim", g.values(lambda r: r.metric(r.student_role, "ssim")), 4)),
        "delta_psnr": Column("delta_psnr", "Δ PSNR to teacher (dB)", True, "max",
                             lambda g: _stat_cell("delta_psnr", g.values(_delta_psnr), 2)),
        "params": Column("params", "Params", True, "min",
                         lambda g: _scalar_cell("params", g.values(_student_params), si)),
        "param_ratio": Column("param_ratio", "Param ratio (T/S)", True, "max",
                              lambda g: _scalar_cell("param_ratio", g.values(
                                  lambda r: _number((r.data.get("params") or {}).get("ratio"))), lambda v: f"{v:.1f}×")),
        "energy_uj": Column("energy_uj", f"Energy / {_energy_image(groups)} (µJ)", True, "min",
                            lambda g: _stat_cell("energy_uj", g.values(_energy_uj), None)),
        "energy_ratio": Column("energy_ratio", "Energy ratio (T/S)", True, "max",
                               lambda g: _scalar_cell("energy_ratio", g.values(
                                   lambda r: _number((r.data.get("energy") or {}).get("ratio"))), lambda v: f"{v:.1f}×")),
        "steps": Column("steps", f"Steps to {target_text} (hint / no hint)", True, "min",
                        lambda g: _steps_cell(g, target_text)),
    }


def _energy_image(groups: Sequence[Group]) -> str:
    """What the energy column is per: ``256×256 image`` when every run measured one image size."""
    sizes = {tuple(size) for g in groups for r in g.runs
             if isinstance(size := (r.data.get("energy") or {}).get("image_size"), list) and len(size) == 3}
    if len(sizes) == 1:
        _, height, width = next(iter(sizes))
        return f"{height}×{width} image"
    return "image, sizes differ" if sizes else "image"


def _fmt_sigma(sigma: Any) -> Any:
    value = _number(sigma)
    if value is None:
        return "blind" if sigma is None else sigma
    return f"{value:g}"


DEFAULT_COLUMNS = ("model", "teacher", "task", "dataset", "sigma", "timesteps", "distill", "seeds", "psnr", "ssim",
                   "delta_psnr", "params", "param_ratio", "energy_uj", "energy_ratio", "steps")


def default_target(runs: Sequence[Run]) -> str | None:
    """The convergence target for the steps column: the first teacher-relative label (``teacher-1dB``)
    that most runs have, else the first absolute one."""
    counts: dict[str, int] = {}
    for run in runs:
        for label in run.target_labels():
            counts[label] = counts.get(label, 0) + 1
    if not counts:
        return None
    order = list(counts)
    return max(order, key=lambda k: (counts[k], k.startswith("teacher-"), -order.index(k)))


# ---------------------------------------------------------------------------------------------------
# the table


@dataclass
class Table:
    columns: list[Column]
    rows: list[list[Cell]]
    blocks: list[tuple]
    bold: set[tuple[int, int]] = field(default_factory=set)


def build_table(groups: Sequence[Group], columns: Sequence[str] | None = None, target: str | None = None,
                bold_best: bool = False) -> Table:
    available = build_columns(groups, target)
    chosen = list(columns) if columns else list(DEFAULT_COLUMNS)
    if not columns:
        if any(g.variant for g in groups):
            chosen.insert(chosen.index("distill") + 1, "variant")
        if len({r.protocol() for g in groups for r in g.runs}) > 1:
            chosen.insert(chosen.index("psnr"), "protocol")
    unknown = [c for c in chosen if c not in available]
    if unknown:
        raise ConfigError(f"unknown column(s) {unknown}; choose from: {', '.join(available)}")
    cols = [available[c] for c in chosen]
    rows = [[c.cell(g) for c in cols] for g in groups]
    table = Table(cols, rows, [g.block_key for g in groups])
    if bold_best:
        for j, col in enumerate(cols):
            if col.best is None:
                continue
            for block in set(table.blocks):
                idx = [i for i, b in enumerate(table.blocks) if b == block and rows[i][j].value is not None]
                if len(idx) < 2:
                    continue
                values = [rows[i][j].value for i in idx]
                if all(math.isclose(v, values[0], rel_tol=1e-9) for v in values):
                    continue  # a tie across the whole block singles nothing out
                best = max(values) if col.best == "max" else min(values)
                table.bold.update((i, j) for i in idx if math.isclose(rows[i][j].value, best, rel_tol=1e-9))
    return table


def render_markdown(table: Table) -> str:
    def esc(text: str) -> str:
        return text.replace("|", "\\|")

    lines = ["| " + " | ".join(esc(c.header) for c in table.columns) + " |",
             "|" + "|".join("---:" if c.numeric else ":---" for c in table.columns) + "|"]
    for i, row in enumerate(table.rows):
        cells = [f"**{esc(c.text)}**" if (i, j) in table.bold else esc(c.text) for j, c in enumerate(row)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


_LATEX_SPECIAL = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                  "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}
_LATEX_UNICODE = {"±": r"$\pm$", "×": r"$\times$", "σ": r"$\sigma$", "Δ": r"$\Delta$", "µ": r"$\mu$",
                  "μ": r"$\mu$", "—": "--"}


def latex_escape(text: str) -> str:
    """Escape LaTeX specials (``_ % & # $ { } ~ ^ \\``) and spell the table's Unicode symbols in math."""
    out = []
    for ch in str(text):
        out.append(_LATEX_SPECIAL.get(ch) or _LATEX_UNICODE.get(ch) or ch)
    return "".join(out)


#: what a LaTeX fragment needs in the document's preamble
LATEX_PREAMBLE = r"\usepackage{booktabs}"
#: abbreviations of a column, explained in the LaTeX table note when the column is shown
COLUMN_NOTES = {
    "sigma": "σ: noise level",
    "timesteps": "T: timesteps of the spiking network",
    "delta_psnr": "Δ PSNR: student minus teacher",
    "param_ratio": "T/S: teacher over student",
    "energy_ratio": "T/S: teacher over student",
    "steps": "steps: training steps until the validation PSNR first reached the target, this row / its "
             "no-hint twin; n/r: not reached; (k/n): only k of n seeds reached it, the mean is over those",
}
STAT_COLUMNS = ("psnr", "ssim", "delta_psnr", "energy_uj")


def latex_note(table: Table) -> str:
    """The table note: mean ± std, missing values and the abbreviations of the shown columns."""
    keys = [c.key for c in table.columns]
    notes = ["mean ± sample standard deviation over the seeds"] if any(k in STAT_COLUMNS for k in keys) else []
    if any(cell.text == "—" for row in table.rows for cell in row):
        notes.append("—: not available")
    for key in keys:
        if key in COLUMN_NOTES and COLUMN_NOTES[key] not in notes:
            notes.append(COLUMN_NOTES[key])
    return latex_escape("; ".join(notes) + ".") if notes else ""


def latex_tabular(table: Table) -> str:
    """The booktabs tabular, a block rule between task/dataset/σ/colour blocks."""
    spec = "".join("r" if c.numeric else "l" for c in table.columns)
    lines = [f"\\begin{{tabular}}{{{spec}}}", r"\toprule",
             " & ".join(latex_escape(c.header) for c in table.columns) + r" \\", r"\midrule"]
    previous = None
    for i, (row, block) in enumerate(zip(table.rows, table.blocks)):
        if previous is not None and block != previous:
            lines.append(r"\midrule")
        previous = block
        cells = [f"\\textbf{{{latex_escape(c.text)}}}" if (i, j) in table.bold else latex_escape(c.text)
                 for j, c in enumerate(row)]
        lines.append(" & ".join(cells) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}"]
    return "\n".join(lines) + "\n"


def _note_paragraph(table: Table) -> str:
    note = latex_note(table)
    return f"\\par\\smallskip\n{{\\footnotesize {note}\\par}}\n" if note else ""


def render_latex(table: Table) -> str:
    """The tabular and its note, for a document whose preamble has `LATEX_PREAMBLE`."""
    header = (f"% spikedistill leaderboard: needs {LATEX_PREAMBLE} in the preamble; --standalone writes a whole "
              "document, the table scaled down to the page\n")
    return header + latex_tabular(table) + _note_paragraph(table)


def latex_document(table: Table, landscape: bool = False) -> str:
    """A whole article with the table, scaled down to the text width when it is wider, and its note."""
    geometry = "landscape,margin=2cm" if landscape else "margin=2cm"
    return "\n".join([
        r"\documentclass{article}",
        f"\\usepackage[{geometry}]{{geometry}}",
        LATEX_PREAMBLE,
        r"\usepackage{graphicx}",
        r"\newsavebox{\leaderboard}",
        r"\begin{document}",
        r"\begin{table}[ht]",
        r"\centering",
        r"\sbox{\leaderboard}{" + latex_tabular(table).rstrip("\n") + "}",
        r"\ifdim\wd\leaderboard>\linewidth\resizebox{\linewidth}{!}{\usebox{\leaderboard}}\else\usebox{\leaderboard}\fi",
        _note_paragraph(table).rstrip("\n"),
        r"\end{table}",
        r"\end{document}",
        "",
    ])


def render_csv(table: Table) -> str:
    fieldnames: list[str] = []
    records = []
    for row in table.rows:
        record: dict[str, Any] = {}
        for cell in row:
            record.update(cell.csv)
        records.append(record)
        for key in record:
            if key not in fieldnames:
                fieldnames.append(key)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=fieldnames, lineterminator="\n")
    writer.writeheader()
    writer.writerows(records)
    return buffer.getvalue()


RENDERERS = {"md": render_markdown, "latex": render_latex, "csv": render_csv}
_SUFFIX_FORMATS = {".md": "md", ".markdown": "md", ".tex": "latex", ".csv": "csv"}


def leaderboard(runs_dir: str | Path, fmt: str = "md", columns: Sequence[str] | None = None,
                bold_best: bool = False, target: str | None = None, progress: bool | None = None,
                standalone: bool = False, landscape: bool = False) -> tuple[str, int, int, int]:
    """The rendered table (a whole LaTeX document with `standalone`), and the numbers of rows, runs read
    and files skipped."""
    if fmt not in RENDERERS:
        raise ConfigError(f"format {fmt!r} is not allowed: use one of {', '.join(RENDERERS)}")
    if standalone and fmt != "latex":
        raise ConfigError(f"--standalone writes a LaTeX document: use it with --format latex, not {fmt}")
    if landscape and not standalone:
        raise ConfigError("--landscape sets the page of a --standalone document: add --standalone")
    runs, skipped = load_runs(runs_dir, progress)
    if not runs:
        raise ConfigError(f"no readable {RESULTS_NAME} under {str(runs_dir)!r}"
                          + (f" ({skipped} skipped, see the warnings above)" if skipped else ""))
    groups = group_runs(runs)
    table = build_table(groups, columns, target or default_target(runs), bold_best)
    text = latex_document(table, landscape) if standalone else RENDERERS[fmt](table)
    return text, len(groups), len(runs), skipped


def parse_columns(values: Sequence[str] | None) -> list[str] | None:
    if not values:
        return None
    return [c.strip() for v in values for c in v.split(",") if c.strip()]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="spikedistill leaderboard",
        description="One table from every results.json under RUNS_DIR: seeds aggregated as mean ± std, "
                    "hint runs paired with their no-hint twins.",
    )
    parser.add_argument("runs_dir", metavar="RUNS_DIR", help="folder searched recursively for results.json")
    parser.add_argument("--format", choices=sorted(RENDERERS), default=None,
                        help="md (default, or from the --output suffix), latex (a booktabs tabular; "
                             "its first line names the preamble it needs) or csv")
    parser.add_argument("--columns", nargs="+", default=None, metavar="COL",
                        help=f"columns in order, space- or comma-separated; default: {','.join(DEFAULT_COLUMNS)}; "
                             "also available: variant, protocol")
    parser.add_argument("--bold-best", action="store_true",
                        help="bold the best value of each column within each task/dataset/σ/colour block")
    parser.add_argument("--target", default=None,
                        help="convergence target label for the steps column (default: the most common, "
                             "e.g. teacher-1dB)")
    parser.add_argument("--standalone", action="store_true",
                        help="LaTeX: a whole article that compiles as it is (the table scaled down to the page "
                             "width when wider); implies --format latex")
    parser.add_argument("--landscape", action="store_true", help="with --standalone: a landscape page")
    parser.add_argument("--output", "-o", default=None, help="write to FILE (atomically) instead of stdout")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser


def main(argv: list[str]) -> None:
    args = build_parser().parse_args(argv)
    implied = "latex" if args.standalone else "md"
    fmt = args.format or (_SUFFIX_FORMATS.get(Path(args.output).suffix.lower(), implied) if args.output else implied)
    try:
        text, rows, runs, skipped = leaderboard(args.runs_dir, fmt, parse_columns(args.columns), args.bold_best,
                                                args.target, False if args.no_progress else None,
                                                args.standalone, args.landscape)
    except SpikeDistillError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(2) from exc
    summary = f"leaderboard: {rows} row(s) from {runs} run(s)" + (f", {skipped} skipped" if skipped else "")
    if args.output:
        atomic_write_text(args.output, text)
        print(f"{summary} -> {args.output} ({fmt})")
    else:
        sys.stdout.write(text)
        sys.stdout.flush()
        print(f"{summary} -> stdout ({fmt})", file=sys.stderr)
