"""Checkpoints written to a temporary name and renamed, so a kill never leaves a truncated .ckpt; a `last.ckpt`
that always holds the latest step; and no checkpoint of non-finite weights."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.plugins.io import TorchCheckpointIO

from distill.errors import TrainingError
from distill.io import atomic_path


def check_finite_weights(checkpoint: dict[str, Any], where: str) -> None:
    """TrainingError naming the non-finite weights of `checkpoint` (saved at `where`), so that it is not written
    over the last good one."""
    bad = [name for name, value in checkpoint.get("state_dict", {}).items()
           if isinstance(value, torch.Tensor) and value.is_floating_point() and not torch.isfinite(value).all()]
    if bad:
        shown = ", ".join(bad[:5]) + (f" ... and {len(bad) - 5} more" if len(bad) > 5 else "")
        raise TrainingError(
            f"non-finite weights at {where} in {shown}; the checkpoint was not written, so the last good one is "
            "kept. Lower the learning rate or check the data and loss weights"
        )


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's torch checkpoint IO with an atomic save (temp file, fsync, rename)."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any = None) -> None:
        with atomic_path(path) as tmp:
            torch.save(checkpoint, tmp)


class LatestCheckpoint(ModelCheckpoint):
    """``<dirpath>/last.ckpt`` after every validation and at the end of training, whatever the monitored metric.

    Lightning's ``save_last`` only refreshes ``last.ckpt`` when a new best is saved, so a run whose PSNR stopped
    rising would resume, and export, from its best step instead of its latest.
    """

    def __init__(self, dirpath: str | Path) -> None:
        super().__init__(dirpath=dirpath, filename="last", monitor=None, save_top_k=1, enable_version_counter=False)
        self.saved_step: int | None = None

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_validation_end(trainer, pl_module)
        if not trainer.sanity_checking:
            self.saved_step = trainer.global_step

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_train_end(trainer, pl_module)
        if trainer.global_step > 0 and self.saved_step != trainer.global_step:  # the last steps had no validation
            trainer.save_checkpoint(Path(self.dirpath) / "last.ckpt")
            self.saved_step = trainer.global_step
