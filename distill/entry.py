"""The `spikedistill` console entry point: help and the extra subcommands start without Lightning;
fit / validate / test / predict load the LightningCLI of `distill.cli` only when they run."""
from __future__ import annotations

import ast
import importlib
import json
import os
import sys
import warnings
from pathlib import Path
from typing import Any, Callable, Mapping

from distill.errors import SpikeDistillError

#: Set to 1 to get Python tracebacks instead of one-paragraph `error: ...` messages.
DEBUG_ENV = "SPIKEDISTILL_DEBUG"

# extra subcommand -> "module:function" taking argv (imported lazily so `fit` starts fast)
EXTRA_COMMANDS: dict[str, tuple[str, str]] = {
    "energy": ("distill.energy_command:main", "per-layer MACs/ACs/energy of teacher and student, and their ratio"),
    "leaderboard": ("distill.leaderboard:main", "tables (md, latex, csv) from every results.json under a folder"),
    "sweep": ("distill.sweep:main", "expand a wandb-format sweep file into runs, locally or on SLURM"),
    "plot": ("distill.plots:main", "convergence curves, firing rates, energy breakdown and image grids"),
    "data": ("distill.data_command:main", "data check FOLDER --layout flat|paired: validate dataset folders"),
    "export": ("distill.export:main", "a trained network alone: network file, weights, NIR, TorchScript, torch.export"),
}
LIGHTNING_COMMANDS = {
    "fit": "train (and then test on the held-out split), writing results.json into the run directory",
    "validate": "score a model on the validation split",
    "test": "score a model on the test split and write results.json",
    "predict": "run a model on the predict split",
}
#: where `wandb agent` runs go: runs/sweeps/<WANDB_SWEEP_ID>/<WANDB_RUN_ID>
AGENT_RUNS_DIR = Path("runs") / "sweeps"


def print_help() -> None:
    """The list of commands."""
    lines = ["usage: spikedistill <command> [options]", "", "commands:"]
    for name, text in LIGHTNING_COMMANDS.items():
        lines.append(f"  {name:<12}{text}")
    for name, (_, text) in EXTRA_COMMANDS.items():
        lines.append(f"  {name:<12}{text}")
    lines += ["", "`spikedistill <command> --help` shows a command's options;",
              "`spikedistill fit --print_config` prints a full recipe."]
    print("\n".join(lines))


def load_command(name: str) -> Callable[[list[str]], Any]:
    """The `main(argv)` of extra subcommand `name`."""
    module, function = EXTRA_COMMANDS[name][0].split(":")
    return getattr(importlib.import_module(module), function)


def user_error(exc: BaseException) -> BaseException | None:
    """The error behind `exc` that is the user's to fix, if any: a SpikeDistillError (possibly wrapped by
    jsonargparse) or Lightning's MisconfigurationException (an invalid Trainer setting)."""
    error = project_error(exc)
    if error is None and "lightning" in sys.modules:  # without Lightning loaded, it raised none of its errors
        from lightning.fabric.utilities.exceptions import MisconfigurationException

        error = exc if isinstance(exc, MisconfigurationException) else None
    return error


def project_error(exc: BaseException) -> SpikeDistillError | None:
    """The SpikeDistillError behind `exc` (itself, or found along its cause/context chain), if any.

    jsonargparse wraps errors raised while building a recipe's classes in its own ValueError.
    """
    pending: list[BaseException | None] = [exc]
    seen: set[int] = set()
    while pending:
        current = pending.pop(0)
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, SpikeDistillError):
            return current
        pending += [current.__cause__, current.__context__]
    return None


def python_nulls(words: list[str]) -> list[str]:
    """`--key=None`, and lists or dicts holding None as Python prints them, turned into YAML's null / JSON.

    `wandb agent` writes each sweep value with Python's `str()` (wandb's `create_sweep_command_args`), so a
    `null` of a sweep file arrives as `None`, which jsonargparse would read as the string "None".
    """
    return [_python_null(word) for word in words]


def _python_null(word: str) -> str:
    key, sep, value = word.partition("=")
    if not (word.startswith("--") and sep):
        return word
    if value == "None":
        return f"{key}=null"
    if value.startswith(("[", "{")) and "None" in value:
        try:
            return f"{key}={json.dumps(ast.literal_eval(value))}"
        except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):  # not a Python literal
            return word
    return word


def under_wandb_agent(env: Mapping[str, str] = os.environ) -> bool:
    """Whether this process is a run that `wandb agent` started (it sets WANDB_SWEEP_ID and WANDB_RUN_ID)."""
    return bool(env.get("WANDB_SWEEP_ID") and env.get("WANDB_RUN_ID"))


def agent_run_dir(words: list[str], env: Mapping[str, str] = os.environ) -> list[str]:
    """Under `wandb agent` each run gets its own directory, `runs/sweeps/<sweep id>/<run id>`, unless the command
    names one."""
    if not under_wandb_agent(env) or any(word.startswith("--trainer.default_root_dir") for word in words):
        return words
    return [*words, f"--trainer.default_root_dir={AGENT_RUNS_DIR / env['WANDB_SWEEP_ID'] / env['WANDB_RUN_ID']}"]


def main(argv: list[str] | None = None) -> None:
    """Dispatch to an extra subcommand or to LightningCLI.

    A user error (`user_error`: a SpikeDistillError, also when jsonargparse wrapped it, or an invalid
    Trainer setting) is printed as one `error: ...` paragraph on stderr and exits with status 2;
    `SPIKEDISTILL_DEBUG=1` re-raises it. Anything else is a bug and keeps its traceback.
    """
    try:
        _dispatch(argv)
    except Exception as exc:  # noqa: BLE001 - only user errors are turned into messages
        error = user_error(exc)
        if error is None or os.environ.get(DEBUG_ENV, "") not in ("", "0"):
            raise
        sys.stdout.flush()
        print(f"error: {error}\n(set {DEBUG_ENV}=1 for the traceback)", file=sys.stderr)
        sys.exit(2)


def _dispatch(argv: list[str] | None) -> None:
    words = list(sys.argv[1:] if argv is None else argv)
    if not under_wandb_agent():  # an agent's run reports to its sweep: online unless WANDB_MODE says otherwise
        os.environ.setdefault("WANDB_MODE", "offline")
    # the frozen teacher is in eval mode on purpose
    warnings.filterwarnings("ignore", message=r"Found \d+ module\(s\) in eval mode")
    if not words or words[0] in ("-h", "--help"):
        print_help()
        return
    if words[0] in EXTRA_COMMANDS:
        load_command(words[0])(words[1:])
        return
    from distill.cli import run_lightning

    run_lightning(agent_run_dir(python_nulls(words)))
