"""The `spikedistill` entry point: LightningCLI for fit/validate/test/predict, plus the extra subcommands."""
from __future__ import annotations

import importlib
import os
import sys
import warnings
from pathlib import Path
from typing import Any, Callable

from lightning.pytorch import Trainer
from lightning.pytorch.callbacks import BasePredictionWriter, Callback, ModelCheckpoint
from lightning.pytorch.cli import LightningCLI
from lightning.pytorch.loggers import CSVLogger, WandbLogger

from distill.checkpointing import AtomicCheckpointIO
from distill.prediction import PNGWriter

# extra subcommand -> "module:function" taking argv (imported lazily so `fit` starts fast)
EXTRA_COMMANDS: dict[str, tuple[str, str]] = {
    "energy": ("distill.energy_command:main", "per-layer MACs/ACs/energy of teacher and student, and their ratio"),
    "leaderboard": ("distill.leaderboard:main", "tables (md, latex, csv) from every results.json under a folder"),
    "sweep": ("distill.sweep:main", "expand a wandb-format sweep file into runs, locally or on SLURM"),
    "plot": ("distill.plots:main", "convergence curves, firing rates, energy breakdown and image grids"),
    "export": ("distill.export:main", "save a run's trained network alone as a plain state dict"),
}
LIGHTNING_COMMANDS = {
    "fit": "train (and then test on the held-out split), writing results.json into the run directory",
    "validate": "score a model on the validation split",
    "test": "score a model on the test split and write results.json",
    "predict": "run a model on the predict split",
}


def default_run_dir(config_paths: list[Any] | None) -> str:
    """`runs/<recipe>`; layered recipes join their names (`runs/quickstart+quickstart_nohint`)."""
    if config_paths:
        return str(Path("runs") / "+".join(Path(str(p)).stem for p in config_paths))
    return str(Path("runs") / "default")


class SpikeDistillCLI(LightningCLI):
    """LightningCLI with omegaconf interpolation, per-run directories, default loggers and atomic checkpoints."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("subclass_mode_model", True)
        kwargs.setdefault("subclass_mode_data", True)
        kwargs.setdefault("auto_configure_optimizers", False)
        kwargs.setdefault("save_config_kwargs", {"overwrite": True})
        kwargs.setdefault("parser_kwargs", {"parser_mode": "omegaconf"})
        super().__init__(*args, **kwargs)

    def before_instantiate_classes(self) -> None:
        config = self.config[self.subcommand] if self.subcommand else self.config
        if not config.trainer.default_root_dir:
            config.trainer.default_root_dir = default_run_dir(config.get("config"))
        if self.subcommand == "predict" and config.get("return_predictions") is None:
            config.return_predictions = False  # images are written by PNGWriter, not kept in memory

    def _instantiate_trainer(self, config: dict[str, Any], callbacks: list[Callback]) -> Trainer:
        """Add the defaults a run needs unless the recipe set its own: CSV + offline wandb loggers,
        a `last.ckpt` in `<run>/checkpoints`, and checkpoints written atomically."""
        root = Path(config["default_root_dir"])
        if config.get("logger") in (None, True):
            config["logger"] = [
                CSVLogger(save_dir=str(root), name="csv"),
                WandbLogger(save_dir=str(root), name=root.name, project="spikedistill", offline=True),
            ]
        user_callbacks = list(config.get("callbacks") or []) + list(callbacks)
        if config.get("enable_checkpointing", True) is not False and not any(
            isinstance(c, ModelCheckpoint) for c in user_callbacks
        ):
            callbacks = list(callbacks) + [
                ModelCheckpoint(dirpath=root / "checkpoints", filename="best-{step}", monitor="val/psnr",
                                mode="max", save_top_k=1, save_last=True)
            ]
        if not config.get("plugins"):
            config["plugins"] = [AtomicCheckpointIO()]
        if self.subcommand == "predict" and not any(isinstance(c, BasePredictionWriter) for c in user_callbacks):
            callbacks = list(callbacks) + [PNGWriter()]
        return super()._instantiate_trainer(config, callbacks)

    def after_instantiate_classes(self) -> None:
        self._dump_config()
        if self.model is not None:
            self.model.run_config = self.config_dump

    def after_fit(self) -> None:
        """Score the fitted model on the held-out split, write results.json, print the table."""
        if self.trainer.interrupted:
            return
        self.trainer.test(self.model, datamodule=self.datamodule, verbose=False)
        self._report()

    def after_test(self) -> None:
        self._report()

    def _report(self) -> None:
        if self.trainer.is_global_zero:
            from distill.report import print_results

            print_results(Path(self.trainer.default_root_dir))


def run_lightning(argv: list[str] | None) -> None:
    """fit / validate / test / predict through LightningCLI (`None` reads sys.argv)."""
    SpikeDistillCLI(args=argv)


def print_help() -> None:
    lines = ["usage: spikedistill <command> [options]", "", "commands:"]
    for name, text in LIGHTNING_COMMANDS.items():
        lines.append(f"  {name:<12}{text}")
    for name, (_, text) in EXTRA_COMMANDS.items():
        lines.append(f"  {name:<12}{text}")
    lines += ["", "`spikedistill <command> --help` shows a command's options;",
              "`spikedistill fit --print_config` prints a full recipe."]
    print("\n".join(lines))


def load_command(name: str) -> Callable[[list[str]], Any]:
    module, function = EXTRA_COMMANDS[name][0].split(":")
    return getattr(importlib.import_module(module), function)


def main(argv: list[str] | None = None) -> None:
    """Dispatch to an extra subcommand or to LightningCLI."""
    words = list(sys.argv[1:] if argv is None else argv)
    os.environ.setdefault("WANDB_MODE", "offline")
    # the frozen teacher is in eval mode on purpose
    warnings.filterwarnings("ignore", message=r"Found \d+ module\(s\) in eval mode")
    if not words or words[0] in ("-h", "--help"):
        print_help()
        return
    if words[0] in EXTRA_COMMANDS:
        load_command(words[0])(words[1:])
        return
    run_lightning(argv)


if __name__ == "__main__":
    main()
