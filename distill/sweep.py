"""`spikedistill sweep FILE`: expand a wandb-format sweep file into runs and run them locally or on SLURM.

The sweep file is wandb's own format, so the same file also works with ``wandb sweep FILE`` and
``wandb agent``::

    name: quickstart_grid                # optional, default: the file name
    method: grid                         # grid | random | bayes
    metric: {name: test/student_psnr, goal: maximize}
    run_cap: 4                           # optional cap (random and bayes need it or --max-runs)
    program: spikedistill
    command: [${program}, fit, --config, recipes/quickstart_hint.yaml, ${args}]
    parameters:
      seed_everything: {values: [0, 1]}
      trainer.max_steps: {value: 300}

The base recipe is read from ``command`` (everything but the macros); each parameter, keyed by its
dotted CLI key, is passed as ``--key=value``; overrides after ``--`` (``spikedistill sweep FILE --
--trainer.max_steps=5``) are added to every run. Expansion uses wandb's sweep engine (the ``sweeps``
package, optional extra ``pip install 'spikedistill[sweeps]'``): ``schema_violations_from_proposed_config``
validates the file and ``next_run`` proposes the runs offline. Each run is named
``<sweep>-<8 hex of the SHA-1 of its sorted params (and the overrides, if any)>`` and gets
``--trainer.default_root_dir RUNS_DIR/<name>``. ``RUNS_DIR/sweep.json`` (written atomically) lists every
run, its params, command, status and seconds.

* ``--executor local`` (default): runs one after another as subprocesses (output in
  ``<run>/sweep.log``), skips runs whose results.json is valid, resumes an interrupted fit from
  ``<run>/checkpoints/last.ckpt``. For ``method: bayes`` each proposal sees the metric of the
  runs before it.
* ``--executor slurm``: one job array through ``submitit.AutoExecutor`` (logs in
  ``RUNS_DIR/slurm/``), with ``--trainer.num_nodes`` / ``--trainer.devices`` set from ``--nodes`` /
  ``--gpus``. Each task runs a `SweepJob`, which submitit checkpoints: on SLURM's timeout or preemption
  signal (submitit's, USR2) the task is requeued and resumes with ``--ckpt_path=last``. Each task
  skips/resumes the same way when it starts. Bayes proposals are then made up front from the runs
  finished so far.
"""
from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import random
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Protocol, Sequence

import submitit

from distill.errors import ConfigError, SpikeDistillError
from distill.formatting import slug
from distill.io import atomic_write_json
from distill.results import RESULTS_NAME

EXTRA = "pip install 'spikedistill[sweeps]'"
MANIFEST_NAME = "sweep.json"
METHODS = ("grid", "random", "bayes")
GRID_LIMIT = 10_000  # grid points proposed at most (guards against an accidental huge grid)
LIGHTNING_COMMANDS = ("fit", "validate", "test", "predict")
ARG_MACROS = ("${args}", "${args_no_hyphens}")
KNOWN_MACROS = ("${env}", "${interpreter}", "${program}") + ARG_MACROS
#: keys the sweep sets itself, with the sweep option that sets them (under --executor slurm also SLURM_KEYS)
RESERVED_KEYS = {"trainer.default_root_dir": "--runs-dir"}
SLURM_KEYS = {"trainer.num_nodes": "--nodes", "trainer.devices": "--gpus"}


# ---------------------------------------------------------------------------------------------------
# the sweep engine (wandb's `sweeps` package), injectable for tests


@dataclass
class PastRun:
    """A run the engine has proposed before, with its state and metric (for grid de-duplication and bayes)."""

    params: dict[str, Any]
    state: str = "pending"  # pending | running | finished | failed
    metric: float | None = None


class SweepEngine(Protocol):
    def violations(self, config: dict[str, Any]) -> list[str]:
        """Human-readable problems of the sweep config (empty if valid)."""

    def propose(self, config: dict[str, Any], past: Sequence[PastRun], n: int) -> list[dict[str, Any]]:
        """Up to `n` new parameter dicts ({dotted key: value}); fewer when the search space is exhausted."""


def _missing_engine(exc: BaseException | None = None) -> ConfigError:
    detail = f" ({type(exc).__name__}: {exc})" if exc is not None and not isinstance(exc, ModuleNotFoundError) else ""
    return ConfigError(
        "expanding a sweep needs wandb's sweep engine, the optional `sweeps` extra, which is not installed"
        f"{detail}: {EXTRA} (it pins numpy<2, so it is not installed by default)"
    )


class WandbSweepEngine:
    """wandb's offline sweep engine: `sweeps.schema_violations_from_proposed_config` and `sweeps.next_run`."""

    def __init__(self, module: Any = None) -> None:
        if module is None:
            try:
                import warnings

                with warnings.catch_warnings():  # sweeps 0.3 still uses pydantic v1 config names
                    warnings.simplefilter("ignore", UserWarning)
                    import sweeps as module  # noqa: PLC0415
            except ImportError as exc:
                raise _missing_engine(exc) from exc
        self.sweeps = module

    def violations(self, config: dict[str, Any]) -> list[str]:
        return [str(v) for v in self.sweeps.schema_violations_from_proposed_config(config)]

    def propose(self, config: dict[str, Any], past: Sequence[PastRun], n: int) -> list[dict[str, Any]]:
        metric = (config.get("metric") or {}).get("name")
        runs = []
        for i, run in enumerate(past):
            state = run.state if run.state in ("pending", "running", "finished", "failed") else "pending"
            summary = {metric: run.metric} if metric and run.metric is not None else {}
            runs.append(self.sweeps.SweepRun(name=f"past-{i}", state=state, config=_engine_config(run.params),
                                             summary_metrics=summary))
        proposed: list[dict[str, Any]] = []
        for _ in range(n):
            suggestion = self.sweeps.next_run(config, runs)
            if suggestion is None:
                break
            params = {key: value["value"] for key, value in suggestion.config.items()}
            proposed.append(params)
            runs.append(self.sweeps.SweepRun(name=f"new-{len(proposed)}", state="pending", config=suggestion.config))
        return proposed


def _engine_config(params: dict[str, Any]) -> dict[str, Any]:
    return {key: {"value": value} for key, value in params.items()}


def load_engine() -> SweepEngine:
    """wandb's sweep engine, or ConfigError naming the extra to install."""
    return WandbSweepEngine()


@contextlib.contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Seed Python's and numpy's global RNGs (which the engine samples from) and restore them after."""
    state = random.getstate()
    np = sys.modules.get("numpy")
    np_state = np.random.get_state() if np is not None else None
    random.seed(seed)
    if np is not None:
        np.random.seed(seed % 2**32)
    try:
        yield
    finally:
        random.setstate(state)
        if np is not None and np_state is not None:
            np.random.set_state(np_state)


# ---------------------------------------------------------------------------------------------------
# the sweep file


@dataclass
class SweepSpec:
    path: Path
    name: str
    config: dict[str, Any]
    program: str
    command: list[str]
    method: str
    digest: str

    @property
    def base_args(self) -> list[str]:
        """The command without its macros, e.g. ``["fit", "--config", "recipes/quickstart_hint.yaml"]``."""
        return [t for t in self.command if t not in KNOWN_MACROS]

    @property
    def recipes(self) -> list[str]:
        args = self.base_args
        found = [args[i + 1] for i, t in enumerate(args[:-1]) if t in ("--config", "-c")]
        return found + [t.split("=", 1)[1] for t in args if t.startswith("--config=")]

    @property
    def subcommand(self) -> str | None:
        return next((t for t in self.base_args if not t.startswith("-")), None)

    @property
    def run_cap(self) -> int | None:
        cap = self.config.get("run_cap")
        return cap if isinstance(cap, int) and not isinstance(cap, bool) and cap > 0 else None


def load_sweep(path: str | os.PathLike) -> SweepSpec:
    """Read and check a wandb-format sweep file (not the parameters: the engine validates those)."""
    import yaml

    file = Path(path)
    try:
        config = yaml.safe_load(file.read_text())
    except FileNotFoundError as exc:
        raise ConfigError(f"sweep file {str(file)!r} does not exist") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"sweep file {str(file)!r} cannot be read: {exc}") from exc
    except yaml.YAMLError as exc:
        hint = ""
        if "${" in file.read_text() and "flow" in str(exc):
            hint = ("; in a [flow, list] quote the macros (\"${program}\", \"${args}\") or write `command:` "
                    "as a block list (- ${program})")
        raise ConfigError(f"sweep file {str(file)!r} is not valid YAML{hint}: {exc}") from exc
    if not isinstance(config, dict):
        raise ConfigError(f"sweep file {str(file)!r} must be a mapping with method, parameters, program, command")
    method = config.get("method")
    if method not in METHODS:
        raise ConfigError(f"sweep file {str(file)!r}: method={method!r} is not allowed; use one of {', '.join(METHODS)}")
    parameters = config.get("parameters")
    if not isinstance(parameters, dict) or not parameters:
        raise ConfigError(f"sweep file {str(file)!r}: `parameters` must map dotted CLI keys "
                          f"(e.g. seed_everything, trainer.max_steps) to {{values: [...]}} or {{value: ...}}")
    program = config.get("program")
    command = config.get("command")
    example = "command: [${program}, fit, --config, recipes/quickstart_hint.yaml, ${args}]"
    if not isinstance(program, str) or not program:
        raise ConfigError(f"sweep file {str(file)!r}: `program` is missing; use program: spikedistill")
    if not isinstance(command, list) or not all(isinstance(t, (str, int, float)) for t in command):
        raise ConfigError(f"sweep file {str(file)!r}: `command` must list the base recipe, e.g. {example}")
    command = [str(t) for t in command]
    unknown = [t for t in command if t.startswith("${") and t not in KNOWN_MACROS]
    if unknown:
        raise ConfigError(f"sweep file {str(file)!r}: command macro(s) {unknown} are not supported; "
                          f"use {', '.join(KNOWN_MACROS)}")
    if "${program}" not in command or not any(t in ARG_MACROS for t in command):
        raise ConfigError(f"sweep file {str(file)!r}: `command` needs ${{program}} and ${{args}}, e.g. {example}")
    digest = hashlib.sha1(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()
    spec = SweepSpec(file, slug(str(config.get("name") or file.stem), fallback="sweep"), config, program, command, method, digest)
    if program == "spikedistill" and spec.subcommand not in LIGHTNING_COMMANDS:
        raise ConfigError(f"sweep file {str(file)!r}: the command must run one of {', '.join(LIGHTNING_COMMANDS)} "
                          f"(got {spec.subcommand!r}), e.g. {example}")
    return spec


# ---------------------------------------------------------------------------------------------------
# runs


def format_value(value: Any) -> str:
    """A CLI value jsonargparse reads back as the same value (bools/None as YAML, containers as JSON)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, (list, dict)):
        return json.dumps(value)
    return str(value)


def run_name(sweep: str, params: dict[str, Any], overrides: Sequence[str] = ()) -> str:
    """`<sweep>-<8 hex>` of the sorted params, and of the overrides when there are any."""
    key: Any = {"params": params, "overrides": list(overrides)} if overrides else params
    digest = hashlib.sha1(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()
    return f"{sweep}-{digest[:8]}"


def launcher(program: str) -> list[str]:
    """How to start `program`: the spikedistill CLI through this interpreter, a script, or a command."""
    if program in ("spikedistill", "distill.cli"):
        return [sys.executable, "-m", "distill.cli"]
    if program.endswith(".py"):
        return [sys.executable, program]
    return [program]


def build_command(spec: SweepSpec, params: dict[str, Any], run_dir: str, overrides: Sequence[str] = (),
                  launch: Sequence[str] = ()) -> list[str]:
    """The run's argv: the command with its macros filled, then `overrides`, the run directory and the
    executor's `launch` options (without ``--ckpt_path``, which is added when the run starts)."""
    argv: list[str] = []
    interpreter = False
    for token in spec.command:
        if token == "${env}":
            continue  # wandb's `/usr/bin/env`: the subprocess inherits the environment anyway
        if token == "${interpreter}":
            argv.append(sys.executable)
            interpreter = True
        elif token == "${program}":
            argv += [spec.program] if interpreter else launcher(spec.program)
        elif token == "${args}":
            argv += [f"--{key}={format_value(value)}" for key, value in params.items()]
        elif token == "${args_no_hyphens}":
            argv += [f"{key}={format_value(value)}" for key, value in params.items()]
        else:
            argv.append(token)
    return [*argv, *overrides, f"--trainer.default_root_dir={run_dir}", *launch]


def check_keys(spec: SweepSpec, overrides: Sequence[str], executor: str) -> None:
    """Overrides are CLI options, and neither they nor the parameters set a key the sweep sets itself."""
    if overrides and not overrides[0].startswith("--"):
        raise ConfigError(f"overrides after `--` are CLI options such as --trainer.max_steps=5; got {overrides[0]!r}")
    reserved = {**RESERVED_KEYS, **(SLURM_KEYS if executor == "slurm" else {})}
    given = list(spec.config["parameters"]) + [t[2:].split("=", 1)[0] for t in overrides if t.startswith("--")]
    for key in given:
        if key in reserved:
            raise ConfigError(f"{key} is set by `spikedistill sweep` itself (use {reserved[key]}); "
                              f"remove it from the parameters of {str(spec.path)!r} and from the overrides")


def valid_results(run_dir: str | Path) -> dict[str, Any] | None:
    """The run's results.json if it is present and valid JSON with `metrics`, else None."""
    path = Path(run_dir) / RESULTS_NAME
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and isinstance(data.get("metrics"), dict) else None


def last_checkpoint(run_dir: str | Path) -> Path | None:
    path = Path(run_dir) / "checkpoints" / "last.ckpt"
    return path if path.is_file() else None


def read_metric(results: dict[str, Any] | None, name: str | None) -> float | None:
    """The sweep metric from results.json: a dotted path (``metrics.student.psnr``) or a logged name
    (``test/student_psnr``, ``test/psnr`` = the trained network's PSNR)."""
    if not results or not name:
        return None
    value: Any = results
    for part in name.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    if value is None:
        metrics = results.get("metrics") or {}
        role_default = "student" if "student" in metrics else "model"
        m = re.fullmatch(r"(val|test)/(?:(\w+)_)?(psnr|ssim)", name)
        if m and m.group(1) == "test":
            value = (metrics.get(m.group(2) or role_default) or {}).get(m.group(3))
        elif m and m.group(3) == "psnr" and m.group(2) in (None, role_default):
            history = (results.get("convergence") or {}).get("history") or []
            value = history[-1]["psnr"] if history else None  # the last validation, as wandb would see
        else:
            raise ConfigError(
                f"sweep metric {name!r} is not in results.json; use a dotted path such as metrics.student.psnr, "
                f"test/<role>_psnr|ssim, or val/psnr (the trained network's last validation PSNR)"
            )
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


@dataclass
class SweepRunInfo:
    name: str
    params: dict[str, Any]
    run_dir: str
    command: list[str]
    status: str = "pending"
    returncode: int | None = None
    metric: float | None = None
    job_id: str | None = None
    seconds: float | None = None
    resumed_from: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "dir": self.run_dir, "params": self.params, "status": self.status,
                "returncode": self.returncode, "metric": self.metric, "job_id": self.job_id,
                "seconds": self.seconds, "resumed_from": self.resumed_from, "command": self.command,
                "error": self.extra.get("error")}


def restore(run: SweepRunInfo, item: dict[str, Any]) -> None:
    """Take over what a previous manifest knew of `run`; whether it finished or was interrupted is
    what its folder says (`refresh`), a submitted or failed run stays so."""
    if run.status == "pending" and item.get("status") in ("submitted", "failed"):
        run.status = item["status"]
    run.job_id = item.get("job_id")
    run.returncode = item.get("returncode")
    run.seconds = item.get("seconds")
    run.resumed_from = item.get("resumed_from")
    if item.get("error"):
        run.extra["error"] = item["error"]


def refresh(run: SweepRunInfo, metric_name: str | None) -> SweepRunInfo:
    """Status from the run folder: finished (valid results.json), interrupted (last.ckpt) or as it was."""
    results = valid_results(run.run_dir)
    if results is not None:
        run.status = "finished"
        run.metric = read_metric(results, metric_name)
    elif last_checkpoint(run.run_dir) is not None and run.status in ("pending", "finished"):
        run.status = "interrupted"
    elif run.status == "finished":
        run.status = "pending"
    return run


# ---------------------------------------------------------------------------------------------------
# the sweep


@dataclass
class Sweep:
    spec: SweepSpec
    runs_dir: Path
    engine: SweepEngine
    runs: list[SweepRunInfo] = field(default_factory=list)
    executor: str = "local"
    overrides: list[str] = field(default_factory=list)  # after `--`: in every run's command and name
    launch: list[str] = field(default_factory=list)  # the executor's options, in every run's command

    @property
    def manifest_path(self) -> Path:
        return self.runs_dir / MANIFEST_NAME

    @property
    def metric_name(self) -> str | None:
        return (self.spec.config.get("metric") or {}).get("name")

    def limit(self, max_runs: int | None) -> int:
        limit = max_runs if max_runs is not None else self.spec.run_cap
        if limit is None:
            if self.spec.method != "grid":
                raise ConfigError(f"method: {self.spec.method} never runs out of proposals: give --max-runs N "
                                  f"or run_cap: N in {self.spec.path}")
            return GRID_LIMIT
        if limit < 1:
            raise ConfigError(f"--max-runs={limit} must be >= 1")
        return limit

    def validate(self) -> None:
        problems = self.engine.violations(self.spec.config)
        if problems:
            raise ConfigError(f"sweep file {str(self.spec.path)!r} is not a valid wandb sweep: " + "; ".join(problems))

    def new_run(self, params: dict[str, Any]) -> SweepRunInfo:
        name = base = run_name(self.spec.name, params, self.overrides)
        taken = {r.name for r in self.runs}
        k = 2
        while name in taken:  # the same params proposed twice (random/bayes): keep both runs
            name, k = f"{base}-{k}", k + 1
        run_dir = str(self.runs_dir / name)
        command = build_command(self.spec, params, run_dir, self.overrides, self.launch)
        return refresh(SweepRunInfo(name, params, run_dir, command), self.metric_name)

    def past(self) -> list[PastRun]:
        out = []
        for run in self.runs:
            state = {"finished": "finished", "failed": "failed"}.get(run.status, "pending")
            out.append(PastRun(run.params, state, run.metric))
        return out

    def propose(self, n: int) -> list[SweepRunInfo]:
        with seeded(int(self.spec.digest[:8], 16) + len(self.runs)):
            proposals = self.engine.propose(self.spec.config, self.past(), n) if n > 0 else []
        added = []
        for params in proposals:
            run = self.new_run(params)
            self.runs.append(run)
            added.append(run)
        return added

    def load_manifest(self) -> None:
        """Reuse the runs of a previous invocation of the same sweep file (keeps random/bayes stable)."""
        try:
            data = json.loads(self.manifest_path.read_text())
        except (OSError, ValueError):
            return
        if not isinstance(data, dict) or data.get("digest") != self.spec.digest:
            if self.manifest_path.exists():
                print(f"note: {self.manifest_path} is from another version of the sweep file; planning anew",
                      file=sys.stderr)
            return
        for item in data.get("runs") or []:
            run = self.new_run(dict(item.get("params") or {}))
            if item.get("name") == run.name:  # other overrides name other runs, with nothing to take over
                restore(run, item)
            self.runs.append(run)

    def plan(self, max_runs: int | None, incremental: bool) -> int:
        """Fill `runs` up to the limit (bayes with `incremental` proposes later, one run at a time)."""
        self.validate()
        limit = self.limit(max_runs)
        del self.runs[limit:]
        if not (incremental and self.spec.method == "bayes"):
            self.propose(limit - len(self.runs))
        return limit

    def write_manifest(self) -> None:
        atomic_write_json(self.manifest_path, {
            "name": self.spec.name,
            "file": str(self.spec.path),
            "digest": self.spec.digest,
            "method": self.spec.method,
            "metric": self.spec.config.get("metric"),
            "executor": self.executor,
            "overrides": self.overrides,
            "cwd": os.getcwd(),
            "updated": time.strftime("%Y-%m-%dT%H:%M:%S"),
            "counts": self.counts(),
            "runs": [r.to_dict() for r in self.runs],
        })

    def counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for run in self.runs:
            counts[run.status] = counts.get(run.status, 0) + 1
        return counts


def command_for_start(run_dir: str | Path, command: Sequence[str]) -> tuple[list[str], str | None]:
    """The command with ``--ckpt_path`` added when an interrupted fit left ``checkpoints/last.ckpt``
    (unless it names one already, as a requeued SLURM task does)."""
    argv = list(command)
    given = next((t.split("=", 1)[1] for t in argv if t.startswith("--ckpt_path=")), None)
    if given is not None:
        return argv, given
    ckpt = last_checkpoint(run_dir)
    if ckpt is not None and "fit" in argv:
        argv.append(f"--ckpt_path={ckpt}")
        return argv, str(ckpt)
    return argv, None


def run_job(job: dict[str, Any]) -> dict[str, Any]:
    """Run one sweep run: skip if finished, resume from last.ckpt if interrupted, log to
    ``<run>/sweep.log``. Returns status and return code."""
    cwd = Path(job.get("cwd") or os.getcwd())
    run_dir = cwd / job["run_dir"]  # an absolute run_dir stays as it is
    if valid_results(run_dir) is not None:
        return {"name": job["name"], "status": "finished", "returncode": 0, "skipped": True, "resumed_from": None}
    argv, resumed = command_for_start(run_dir, job["command"])
    run_dir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    with open(run_dir / "sweep.log", "a") as log:
        log.write(f"\n$ {' '.join(argv)}\n")
        log.flush()
        proc = subprocess.run(argv, cwd=cwd, stdout=log, stderr=subprocess.STDOUT,
                              env={**os.environ, "WANDB_RUN_GROUP": job.get("sweep", "")})
    ok = proc.returncode == 0 and valid_results(run_dir) is not None
    return {"name": job["name"], "status": "finished" if ok else "failed", "returncode": proc.returncode,
            "skipped": False, "resumed_from": resumed, "seconds": round(time.perf_counter() - started, 3)}


def resumed(job: dict[str, Any]) -> dict[str, Any]:
    """`job` resuming its fit with ``--ckpt_path=last`` (the newest last.ckpt or SLURM hpc checkpoint)."""
    command = list(job["command"])
    if "fit" in command and not any(t.startswith("--ckpt_path") for t in command):
        command.append("--ckpt_path=last")
    return {**job, "command": command}


class SweepJob(submitit.helpers.Checkpointable):
    """What a SLURM array task runs: `run_job`. On SLURM's timeout or preemption signal submitit calls
    `checkpoint` and requeues the task with the job it returns, which resumes the fit."""

    def __call__(self, job: dict[str, Any]) -> dict[str, Any]:
        return run_job(job)

    def checkpoint(self, job: dict[str, Any]) -> submitit.helpers.DelayedSubmission:
        return submitit.helpers.DelayedSubmission(self, resumed(job))


def _job(sweep: Sweep, run: SweepRunInfo) -> dict[str, Any]:
    return {"name": run.name, "run_dir": run.run_dir, "command": run.command, "cwd": os.getcwd(),
            "sweep": sweep.spec.name}


def _apply(run: SweepRunInfo, outcome: dict[str, Any], metric_name: str | None) -> None:
    run.status = outcome["status"]
    run.returncode = outcome.get("returncode")
    run.seconds = outcome.get("seconds", run.seconds)
    run.resumed_from = outcome.get("resumed_from")
    run.metric = read_metric(valid_results(run.run_dir), metric_name)


def run_local(sweep: Sweep, limit: int, progress: bool = True) -> None:
    """Run the sweep's runs one after another; bayes proposes each next run from the finished ones."""
    from tqdm import tqdm

    bar = tqdm(total=limit if limit < GRID_LIMIT else len(sweep.runs), desc=f"sweep {sweep.spec.name}", unit="run",
               file=sys.stderr, disable=not progress)
    index = 0
    try:
        while True:
            if index >= len(sweep.runs):
                if sweep.spec.method != "bayes" or len(sweep.runs) >= limit or not sweep.propose(1):
                    break
            run = sweep.runs[index]
            index += 1
            bar.set_postfix_str(run.name)
            if run.status == "finished":
                bar.update()
                continue
            run.status = "running"
            sweep.write_manifest()
            _apply(run, run_job(_job(sweep, run)), sweep.metric_name)
            sweep.write_manifest()
            bar.update()
    finally:
        bar.close()
        for run in sweep.runs:
            if run.status == "running":
                run.status = "interrupted" if last_checkpoint(run.run_dir) else "pending"
        sweep.write_manifest()


@dataclass
class SlurmOptions:
    partition: str | None = None
    time: int = 60
    gpus: int = 0
    nodes: int = 1
    cpus_per_task: int = 2
    mem_gb: float | None = None
    array_parallelism: int | None = None
    cluster: str = "slurm"  # "local" runs the array with submitit's LocalExecutor (tests, laptops)
    wait: bool = False
    resubmit: bool = False
    account: str | None = None
    qos: str | None = None
    constraint: str | None = None
    setup: list[str] = field(default_factory=list)  # shell lines run before the task (module load, ...)

    @property
    def tasks_per_node(self) -> int:
        """One task per GPU (Lightning DDP under SLURM), one per node without GPUs."""
        return max(1, self.gpus)

    def trainer_args(self) -> list[str]:
        """The trainer's nodes and devices as SLURM allocates them (Lightning refuses a mismatch)."""
        return [f"--trainer.num_nodes={self.nodes}", f"--trainer.devices={self.tasks_per_node}"]

    def executor_parameters(self, name: str, tasks: int) -> dict[str, Any]:
        """submitit's AutoExecutor parameters for a job array of `tasks` runs."""
        parameters: dict[str, Any] = {
            "name": name,
            "timeout_min": self.time,
            "nodes": self.nodes,
            "gpus_per_node": self.gpus,
            "tasks_per_node": self.tasks_per_node,
            "cpus_per_task": self.cpus_per_task,
            "slurm_array_parallelism": self.array_parallelism or tasks,
        }
        optional = {"slurm_partition": self.partition, "mem_gb": self.mem_gb, "slurm_account": self.account,
                    "slurm_qos": self.qos, "slurm_constraint": self.constraint, "slurm_setup": self.setup}
        return {**parameters, **{key: value for key, value in optional.items() if value}}


def run_slurm(sweep: Sweep, options: SlurmOptions) -> list[Any]:
    """Submit every unfinished run as one job array through submitit; return the jobs."""
    if options.cluster == "slurm" and shutil.which("sbatch") is None:
        raise ConfigError("--executor slurm needs SLURM's sbatch on PATH (run it on a login node); "
                          "use --executor local, or --submitit-cluster local to try the job array here")
    queued = [run for run in sweep.runs if run.status == "submitted" and not options.resubmit]
    if queued:
        print(f"note: {len(queued)} run(s) were already submitted (jobs "
              f"{', '.join(sorted({str(r.job_id) for r in queued}))}) and are not submitted again; "
              "pass --resubmit once those jobs have ended", file=sys.stderr)
    skip = {run.name for run in queued}
    todo = [run for run in sweep.runs if run.status != "finished" and run.name not in skip]
    if not todo:
        return []
    executor = submitit.AutoExecutor(folder=str(sweep.runs_dir / "slurm"), cluster=options.cluster)
    executor.update_parameters(**options.executor_parameters(sweep.spec.name, len(todo)))
    jobs = executor.map_array(SweepJob(), [_job(sweep, run) for run in todo])
    for run, job in zip(todo, jobs):
        run.job_id, run.status = str(job.job_id), "submitted"
    sweep.write_manifest()
    if options.wait:
        for run, job in zip(todo, jobs):
            try:
                _apply(run, job.result(), sweep.metric_name)
            except Exception as exc:  # noqa: BLE001 - a crashed array task must not hide the others
                run.status, run.extra["error"] = "failed", f"{type(exc).__name__}: {exc}"
        sweep.write_manifest()
    return jobs


def prepare(path: str | os.PathLike, runs_dir: str | None = None, executor: str = "local",
            max_runs: int | None = None, engine: SweepEngine | None = None, overrides: Sequence[str] = (),
            launch: Sequence[str] = ()) -> tuple[Sweep, int]:
    """The sweep with its runs planned (from a previous manifest where there is one), and its run limit."""
    spec = load_sweep(path)
    check_keys(spec, overrides, executor)
    for recipe in spec.recipes:
        if not Path(recipe).exists():
            raise ConfigError(f"the base recipe {recipe!r} named in the command of {str(spec.path)!r} does not exist "
                              f"(paths are relative to the working directory {os.getcwd()})")
    sweep = Sweep(spec, Path(runs_dir or Path("runs") / "sweeps" / spec.name), engine or load_engine(),
                  executor=executor, overrides=list(overrides), launch=list(launch))
    sweep.load_manifest()
    limit = sweep.plan(max_runs, incremental=executor == "local")
    return sweep, limit


def run_sweep(path: str | os.PathLike, executor: str = "local", runs_dir: str | None = None,
              max_runs: int | None = None, dry_run: bool = False, slurm: SlurmOptions | None = None,
              engine: SweepEngine | None = None, progress: bool = True, overrides: Sequence[str] = ()) -> Sweep:
    """Plan the sweep and run it (or only print the plan with `dry_run`); `overrides` go to every run."""
    if executor not in ("local", "slurm"):
        raise ConfigError(f"executor={executor!r} is not allowed: use local or slurm")
    slurm = slurm or SlurmOptions()
    if slurm.nodes < 1 or slurm.gpus < 0:
        raise ConfigError(f"--nodes={slurm.nodes} --gpus={slurm.gpus}: use --nodes 1 or more and --gpus 0 or more")
    launch = slurm.trainer_args() if executor == "slurm" else []
    sweep, limit = prepare(path, runs_dir, executor, max_runs, engine, overrides, launch)
    if dry_run:
        print_plan(sweep, limit)
        return sweep
    sweep.runs_dir.mkdir(parents=True, exist_ok=True)
    sweep.write_manifest()
    if executor == "local":
        run_local(sweep, limit, progress)
    else:
        run_slurm(sweep, slurm)
    return sweep


def print_plan(sweep: Sweep, limit: int) -> None:
    for run in sweep.runs:
        argv, resumed = command_for_start(run.run_dir, run.command)
        note = "skip (finished)" if run.status == "finished" else ("resume" if resumed else "run")
        print(f"[{note}] {run.name}: {' '.join(argv)}")
    if sweep.spec.method == "bayes" and sweep.executor == "local" and len(sweep.runs) < limit:
        print(f"(bayes: {limit - len(sweep.runs)} more run(s) are proposed one at a time from the finished ones)")


def summary(sweep: Sweep, dry_run: bool) -> str:
    counts = ", ".join(f"{n} {status}" for status, n in sorted(sweep.counts().items())) or "no runs"
    if dry_run:
        return f"sweep {sweep.spec.name}: dry run, {len(sweep.runs)} run(s) planned ({counts}); nothing written"
    text = f"sweep {sweep.spec.name}: {len(sweep.runs)} run(s): {counts}; runs in {sweep.runs_dir}, " \
           f"manifest {sweep.manifest_path}"
    jobs = sorted({r.job_id.split("_")[0] for r in sweep.runs if r.job_id})
    if sweep.executor == "slurm" and jobs:
        text += f"; job array {', '.join(jobs)}, logs in {sweep.runs_dir / 'slurm'}"
    failed = [r for r in sweep.runs if r.status == "failed"]
    if failed:
        text += f"; failed: {', '.join(r.name for r in failed)} (see <run>/sweep.log)"
    return text


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="spikedistill sweep",
        usage="spikedistill sweep FILE [options] [-- OVERRIDE ...]",
        description="Expand a wandb-format sweep file (method, metric, parameters, program, command) with "
                    f"wandb's sweep engine ({EXTRA}) and run it locally or as a SLURM job array. "
                    "Options after `--` (e.g. -- --trainer.max_steps=5) are added to every run.",
    )
    parser.add_argument("file", metavar="FILE", help="sweep YAML (the same file works with `wandb sweep`)")
    parser.add_argument("--executor", choices=("local", "slurm"), default="local")
    parser.add_argument("--runs-dir", default=None, help="default: runs/sweeps/<sweep name>")
    parser.add_argument("--max-runs", type=int, default=None,
                        help="run at most N runs (required for random/bayes unless the file sets run_cap)")
    parser.add_argument("--dry-run", action="store_true", help="print the runs and their commands; run nothing")
    slurm = parser.add_argument_group("slurm executor")
    slurm.add_argument("--partition", default=None)
    slurm.add_argument("--time", type=int, default=60, help="time limit per run in minutes")
    slurm.add_argument("--gpus", type=int, default=0, help="GPUs per node (one task each; = trainer.devices)")
    slurm.add_argument("--nodes", type=int, default=1, help="nodes per run (= trainer.num_nodes)")
    slurm.add_argument("--cpus-per-task", type=int, default=2)
    slurm.add_argument("--mem-gb", type=float, default=None)
    slurm.add_argument("--array-parallelism", type=int, default=None, help="array tasks running at once")
    slurm.add_argument("--account", default=None, help="SLURM account (sbatch --account)")
    slurm.add_argument("--qos", default=None, help="SLURM quality of service (sbatch --qos)")
    slurm.add_argument("--constraint", default=None, help="node features, e.g. a100 (sbatch --constraint)")
    slurm.add_argument("--setup", action="append", default=[], metavar="LINE",
                       help="shell line run in the job before the task, e.g. 'module load cuda' (repeatable)")
    slurm.add_argument("--wait", action="store_true", help="wait for the array to finish and report statuses")
    slurm.add_argument("--resubmit", action="store_true",
                       help="submit again runs the manifest lists as submitted (their jobs have ended)")
    slurm.add_argument("--submitit-cluster", choices=("slurm", "local"), default="slurm",
                       help="`local` runs the job array on this machine through submitit (to try a sweep)")
    return parser


def split_overrides(argv: list[str]) -> tuple[list[str], list[str]]:
    """The sweep's own options, and the run overrides after the first `--`."""
    if "--" not in argv:
        return argv, []
    at = argv.index("--")
    return argv[:at], argv[at + 1:]


def main(argv: list[str], engine: SweepEngine | None = None) -> None:
    """`spikedistill sweep FILE [options] [-- OVERRIDE ...]`."""
    own, overrides = split_overrides(argv)
    args = build_parser().parse_args(own)
    options = SlurmOptions(
        partition=args.partition, time=args.time, gpus=args.gpus, nodes=args.nodes, cpus_per_task=args.cpus_per_task,
        mem_gb=args.mem_gb, array_parallelism=args.array_parallelism, cluster=args.submitit_cluster, wait=args.wait,
        resubmit=args.resubmit, account=args.account, qos=args.qos, constraint=args.constraint, setup=args.setup)
    try:
        sweep = run_sweep(args.file, args.executor, args.runs_dir, args.max_runs, args.dry_run, options, engine,
                          overrides=overrides)
    except SpikeDistillError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(2) from exc
    print(summary(sweep, args.dry_run))
    if any(r.status == "failed" for r in sweep.runs):
        raise SystemExit(1)
