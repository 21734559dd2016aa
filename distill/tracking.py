"""The run's default loggers: CSV, wandb in the mode WANDB_MODE or `--wandb_mode` picks (offline unless asked),
TensorBoard on request; and `WandbConfig`, which hands wandb the whole run config."""
from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path
from typing import Any, Mapping

from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.loggers import CSVLogger, Logger, TensorBoardLogger, WandbLogger

from distill.entry import under_wandb_agent
from distill.errors import ConfigError

WANDB_MODES = ("online", "offline", "disabled")
#: the older names wandb still accepts for its modes
_ALIASES = {"dryrun": "offline", "run": "online"}


def wandb_mode(choice: str | None = None, env: Mapping[str, str] = os.environ) -> str:
    """`choice` (the recipe's or `--wandb_mode`), else WANDB_MODE, else online under `wandb agent`, else offline."""
    given = choice if choice is not None else env.get("WANDB_MODE", "")
    mode = _ALIASES.get(given.strip().lower(), given.strip().lower())
    if not mode:
        return "online" if under_wandb_agent(env) else "offline"
    if mode not in WANDB_MODES:
        source = "wandb_mode" if choice is not None else "WANDB_MODE"
        raise ConfigError(f"{source}={given!r} is not allowed: use one of {', '.join(WANDB_MODES)}")
    return mode


def tensorboard_available() -> bool:
    """Whether Lightning's TensorBoardLogger can write (tensorboard or tensorboardX is installed)."""
    return any(importlib.util.find_spec(name) is not None for name in ("tensorboard", "tensorboardX"))


def default_loggers(root: Path, mode: str, tensorboard: bool = False) -> list[Logger]:
    """CSV in `<root>/csv`, wandb in `<root>/wandb` unless `mode` is disabled, TensorBoard in `<root>/tensorboard`."""
    loggers: list[Logger] = [CSVLogger(save_dir=str(root), name="csv")]
    if mode != "disabled":
        loggers.append(WandbLogger(save_dir=str(root), name=root.name, offline=mode == "offline", mode=mode,
                                   project=os.environ.get("WANDB_PROJECT", "spikedistill")))
    if tensorboard:
        if not tensorboard_available():
            raise ConfigError("tensorboard=true needs the tensorboard package: pip install 'spikedistill[tensorboard]'"
                              " (without it, csv/version_N/metrics.csv, `spikedistill plot` and `spikedistill "
                              "leaderboard` are the local view)")
        loggers.append(TensorBoardLogger(save_dir=str(root), name="tensorboard"))
    return loggers


def finish_wandb(exit_code: int = 0) -> None:
    """Close the wandb run this process started, if any (its files are complete, and the next run is a new one)."""
    wandb = sys.modules.get("wandb")
    if wandb is not None and wandb.run is not None:
        wandb.finish(exit_code=exit_code)


class WandbConfig(Callback):
    """Put `config` (the whole run config: seed, data, model, trainer) into every wandb logger's run config."""

    def __init__(self) -> None:
        self.config: dict[str, Any] | None = None

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if self.config is None:
            return
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger):
                logger.log_hyperparams(self.config)
