"""Training progress: on a terminal Lightning's rich bar with an epoch total that follows max_steps; written to a file
(nohup, a SLURM `.out`), one flushed line per interval (`LineProgress`)."""
from __future__ import annotations

import math
import sys
import time
from datetime import timedelta
from typing import Any, TextIO

from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import ProgressBar, RichProgressBar


def progress_bar(stream: TextIO | None = None) -> ProgressBar:
    """The rich bar when `stream` (default stdout) is a terminal, else `LineProgress`."""
    return StepRichProgressBar() if (stream or sys.stdout).isatty() else LineProgress()


def epoch_count(trainer: Trainer) -> int | None:
    """Epochs the fit runs: max_epochs or the epochs max_steps takes, whichever ends it first (None: unbounded)."""
    counts = [trainer.max_epochs] if trainer.max_epochs is not None and trainer.max_epochs >= 0 else []
    batches = trainer.num_training_batches
    if trainer.max_steps > 0 and 0 < batches < math.inf:
        counts.append(math.ceil(trainer.max_steps / math.ceil(batches / trainer.accumulate_grad_batches)))
    return min(counts) if counts else None


def epoch_text(trainer: Trainer) -> str:
    """`<current>/<last>` epoch as Lightning counts them (from 0), with the last one that max_steps implies."""
    count = epoch_count(trainer)
    return f"{trainer.current_epoch}" + (f"/{count - 1}" if count else "")


class StepRichProgressBar(RichProgressBar):
    """Lightning's rich bar; a step-limited fit reads `Epoch 0/2`, not `Epoch 0/-2`."""

    def on_train_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        super().on_train_epoch_start(trainer, pl_module)
        if self.progress is not None and self.train_progress_bar_id is not None:
            text = f"Epoch {epoch_text(trainer)}"  # padded as Lightning pads it, so the bars do not flicker
            self.progress.update(self.train_progress_bar_id, description=f"{text:{len(self.validation_description)}}")


def _clock(seconds: float) -> str:
    return str(timedelta(seconds=round(seconds))) if math.isfinite(seconds) else "?"


class LineProgress(ProgressBar):
    """A line every `every_n_steps` optimizer steps (default: the trainer's `log_every_n_steps`) or `every_seconds`,
    whichever comes first: step/total, epoch, the progress-bar metrics (loss, val PSNR), it/s, elapsed, ETA.
    Also a line when the fit starts, when training starts after the set-up (warm start), after each validation and
    at the end. Every line is flushed, so a log file shows it at once."""

    def __init__(self, every_n_steps: int | None = None, every_seconds: float = 30.0,
                 stream: TextIO | None = None) -> None:
        super().__init__()
        self.every_n_steps = every_n_steps
        self.every_seconds = every_seconds
        self.stream = stream  # None: sys.stdout when a line is written
        self.enabled = True
        self.fit_started = self.started = self.last_line = 0.0
        self.first_step = self.last_step = 0

    def disable(self) -> None:
        self.enabled = False

    def enable(self) -> None:
        self.enabled = True

    def print(self, *args: Any, **kwargs: Any) -> None:
        if self.enabled:
            print(*args, file=self.stream or sys.stdout, flush=True, **kwargs)

    def metrics_text(self, trainer: Trainer, pl_module: LightningModule, prefix: str = "") -> str:
        """The progress-bar metrics whose names start with `prefix`, as `name value` pairs."""
        metrics = self.get_metrics(trainer, pl_module)
        return " | ".join(f"{k} {v:#.4g}" if isinstance(v, float) else f"{k} {v}"
                          for k, v in metrics.items() if k != "v_num" and k.startswith(prefix))

    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.fit_started = time.monotonic()
        then = f"training to step {trainer.max_steps}" if trainer.max_steps > 0 else "training"
        self.print(f"fit: set-up (any warm start, sanity check), then {then}")

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.started = self.last_line = time.monotonic()
        self.first_step = self.last_step = trainer.global_step
        self.print(f"train: from step {trainer.global_step}/{self.total(trainer)}, "
                   f"{_clock(self.started - self.fit_started)} after the fit started")

    def total(self, trainer: Trainer) -> int | float:
        """The optimizer steps the fit ends at (inf when nothing bounds it)."""
        return trainer.max_steps if trainer.max_steps > 0 else trainer.estimated_stepping_batches

    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        step, now, total = trainer.global_step, time.monotonic(), self.total(trainer)
        every = max(1, self.every_n_steps or trainer.log_every_n_steps)
        if step == self.last_step or not (step % every == 0 or step >= total
                                          or now - self.last_line >= self.every_seconds):
            return
        self.last_step, self.last_line = step, now
        elapsed = now - self.started
        rate = (step - self.first_step) / elapsed if elapsed > 0 else 0.0
        parts = [f"train: step {step}/{total}" + (f" ({100 * step / total:.0f}%)" if math.isfinite(total) else ""),
                 f"epoch {epoch_text(trainer)}",
                 self.metrics_text(trainer, pl_module),
                 f"{rate:.3g} it/s", f"elapsed {_clock(elapsed)}",
                 f"ETA {_clock((total - step) / rate if rate > 0 else math.inf)}"]
        self.print(" | ".join(p for p in parts if p))

    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if not trainer.sanity_checking:
            self.print(" | ".join(p for p in (f"val: step {trainer.global_step}",
                                              self.metrics_text(trainer, pl_module, "val")) if p))

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.print(f"train: ended at step {trainer.global_step}/{self.total(trainer)} after "
                   f"{_clock(time.monotonic() - self.started)}")
