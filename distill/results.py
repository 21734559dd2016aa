"""results.json: one self-describing record per run, written atomically."""
from __future__ import annotations

import math
import platform
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # only an annotation: torch costs ~0.9 s of every command's start
    from torch import nn

from distill.io import atomic_write_json

RESULTS_NAME = "results.json"
_PACKAGES = ("spikedistill", "torch", "lightning", "snntorch", "torchmetrics", "numpy")


def versions() -> dict[str, str | None]:
    """Installed versions of the packages that decide a run's numbers."""
    found: dict[str, str | None] = {"python": platform.python_version()}
    for name in _PACKAGES:
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            found[name] = None
    return found


def run_metadata(trainer: Any, datamodule: Any, network: nn.Module, config: dict[str, Any]) -> dict[str, Any]:
    """What identifies a run: its name and directory, the task and data, the model and T, config, versions."""
    run_dir = Path(trainer.default_root_dir)
    return {
        "run": {
            "name": run_dir.name,
            "dir": str(run_dir.resolve()),
            "global_step": trainer.global_step,
            "epochs": trainer.current_epoch,
            "world_size": trainer.world_size,
        },
        "task": getattr(datamodule, "task", None),
        "dataset": getattr(datamodule, "dataset_name", None),
        "sigma": getattr(datamodule, "sigma", None),
        "channels": getattr(datamodule, "channels", None),
        "model": type(network).__name__,
        "timesteps": getattr(network, "timesteps", None),
        "config": config,
        "versions": versions(),
    }


def _json_safe(value: Any) -> Any:
    """Replace NaN/Inf (not valid JSON) by None, recursively."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


def write_results(path: str | Path, results: dict[str, Any]) -> Path:
    """Write `results` as JSON to `path` atomically and return the path."""
    atomic_write_json(path, _json_safe(results))
    return Path(path)
