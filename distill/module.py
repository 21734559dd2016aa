"""LightningModule that trains one restoration network alone: teachers, and students without a teacher.

`DistillationModule` (distill/distillation.py) extends it with a frozen teacher, hints and output distillation.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Iterator

import lightning as L
import torch
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import Tensor, nn

from distill.convergence import ConvergenceTargets
from distill.checkpointing import check_finite_weights
from distill.data.base import align_loader_states, upgrade_loader_states
from distill.energy import resolve_constants
from distill.errors import ConfigError, TrainingError
from distill.losses import RestorationLoss
from distill.metrics import ScoresByRole
from distill.modeling import count_parameters, run_model, save_hyperparameters_without_networks
from distill.rate_regularizer import RateRegularizer
from distill.spike_losses import SpikeLosses
from distill.tiling import restore_tiled
from distill.warm_start import TwinHint, WarmStart, save_warm_start, saved_warm_start, start_warm


TRAIN_MEMORY_ADVICE = "lower data.init_args.batch_size or patch_size, or the student's timesteps or features"
EVAL_MEMORY_ADVICE = ("lower the student's timesteps or features, or set data.init_args.eval_size to score centre "
                      "crops (or lower batch_size)")


def is_out_of_memory(exc: BaseException) -> bool:
    """True for torch's out-of-memory errors (CUDA's OutOfMemoryError, the CPU allocator's RuntimeError)."""
    if isinstance(exc, getattr(torch, "OutOfMemoryError", ())):
        return True
    text = str(exc)
    return isinstance(exc, RuntimeError) and ("can't allocate memory" in text or "out of memory" in text.lower())


@contextmanager
def out_of_memory_as_error(stage: str, batch: dict[str, Any], network: nn.Module, advice: str) -> Iterator[None]:
    """Turn an allocation failure into a TrainingError naming the stage, the batch shape, T and what to lower."""
    try:
        yield
    except RuntimeError as exc:
        if not is_out_of_memory(exc):
            raise
        shape = list(batch["input"].shape) if isinstance(batch.get("input"), Tensor) else "?"
        first = (str(exc).strip().splitlines() or [""])[0][:200]
        raise TrainingError(
            f"out of memory in {stage}: a batch of shape {shape} through {type(network).__name__} "
            f"(timesteps={getattr(network, 'timesteps', None)}) needs more memory than there is ({first}); {advice}"
        ) from exc


def build_from_recipe(name: str, factory: Any, argument: Any) -> Any:
    """Call the recipe's optimizer/scheduler factory; torch's argument errors become a ConfigError."""
    try:
        return factory(argument)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"the {name} cannot be built from the recipe's model.init_args.{name}: {exc}") from exc


def check_finite_loss(terms: dict[str, Tensor], where: str) -> None:
    """TrainingError naming the non-finite loss terms at `where` (step, epoch, batch), if any."""
    bad = {name: float(value.detach()) for name, value in terms.items() if not torch.isfinite(value).all()}
    if bad:
        raise TrainingError(
            f"non-finite loss at {where}: {bad}; training stopped, the last good checkpoint is kept. Lower the "
            "learning rate or check the data and loss weights"
        )


def check_channels(datamodule: Any, network: nn.Module, role: str) -> None:
    """ConfigError unless the datamodule's images have the channels the network (in `role`) takes."""
    channels = getattr(datamodule, "channels", None)
    expected = getattr(network, "in_channels", None)
    if channels is not None and expected is not None and channels != expected:
        names = {1: "gray", 3: "RGB"}
        raise ConfigError(
            f"the data gives {channels}-channel ({names.get(channels, '?')}) images but the {role} expects "
            f"{expected} ({names.get(expected, '?')}); set data.init_args.channels: {expected} or build the "
            f"{role} with in_channels: {channels}"
        )


def check_schedule_length(scheduler: Any, steps: int) -> None:
    """ConfigError for a one-cycle schedule shorter than the run, before the first step (torch fails at total + 1)."""
    if isinstance(scheduler, torch.optim.lr_scheduler.OneCycleLR) and scheduler.total_steps < steps:
        raise ConfigError(f"scheduler OneCycleLR total_steps={scheduler.total_steps} is fewer than trainer.max_steps="
                          f"{steps}: it cannot step past its end; set model.init_args.scheduler.init_args.total_steps "
                          f">= {steps}")


class RestorationBase(L.LightningModule):
    """Forward, losses, training and evaluation steps and optimizers shared by every module; subclasses set
    `network`. Energy, convergence and the run report are callbacks (distill/callbacks.py)."""

    network_role = "model"
    scored_roles: tuple[str, ...] = ("input", "model")
    #: (tile size, overlap) of predict_step, set by the prediction writer (distill.prediction.PNGWriter)
    predict_tiles: tuple[int, int] | None = None

    def __init__(self, restoration_loss: RestorationLoss | None, optimizer: OptimizerCallable,
                 scheduler: LRSchedulerCallable | None, y_channel: bool, crop_border: int,
                 convergence: ConvergenceTargets | None, energy: str | dict[str, float],
                 rate_regularizer: RateRegularizer | None) -> None:
        super().__init__()
        self.restoration_loss = restoration_loss or RestorationLoss()
        self.rate_regularizer = rate_regularizer
        self.rate_targets: dict[str, float | None] = {}  # the penalised neurons, set in setup
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.scores = ScoresByRole(self.scored_roles, y_channel=y_channel, crop_border=crop_border, data_range=1.0)
        self.convergence_targets = convergence or ConvergenceTargets()  # read by ConvergenceMonitor
        self.energy_constants = resolve_constants(energy)  # read by EnergyMonitor
        self.val_scores: dict[str, dict[str, float]] = {}
        self.test_scores: dict[str, dict[str, float]] = {}
        self.warm_start: WarmStart | None = None  # set by subclasses that take the option
        self.warm_start_report: dict[str, Any] | None = None
        self.twin_hint: TwinHint | None = None  # warm_start.twin_hint_weight: a plain object, not a submodule
        self._twin_state: dict[str, Tensor] | None = None  # a resumed run's twin, rebuilt in on_fit_start

    # ---- what is trained and scored -------------------------------------------------------------
    @property
    def network(self) -> nn.Module:
        """The network being trained."""
        raise NotImplementedError

    def energy_models(self) -> dict[str, nn.Module]:
        """Networks whose energy is reported, by role."""
        return {self.network_role: self.network}

    def parameter_counts(self) -> dict[str, Any]:
        return {self.network_role: count_parameters(self.network)}

    def forward(self, x: Tensor, sigma: Tensor | None = None) -> Tensor:
        return run_model(self.network, x, sigma if sigma is not None else x.new_zeros(x.shape[0]))

    # ---- set-up -----------------------------------------------------------------------------------
    def setup(self, stage: str) -> None:
        check_channels(self.trainer.datamodule, self.network, self.network_role)
        if self.rate_regularizer is not None:
            self.rate_targets = self.rate_regularizer.targets(self.network)

    def on_fit_start(self) -> None:
        """Run the warm start once per run (a resumed run restores its report, and its twin for the twin hint)."""
        if self.warm_start is not None:
            self.warm_start_report, self.twin_hint = start_warm(self, self.warm_start, self.warm_start_report,
                                                                self._twin_state)

    def on_train_start(self) -> None:
        check_schedule_length(self.lr_schedulers(), self.trainer.max_steps)

    def configure_optimizers(self) -> Any:
        optimizer = build_from_recipe("optimizer", self.optimizer_factory, self.trainable_parameters())
        if self.scheduler_factory is None:
            return optimizer
        scheduler = build_from_recipe("scheduler", self.scheduler_factory, optimizer)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.network.parameters() if p.requires_grad]

    # ---- training ---------------------------------------------------------------------------------
    def compute_losses(self, batch: dict[str, Any]) -> tuple[Tensor, dict[str, Tensor]]:
        """Prediction and the weighted loss terms (their sum is the training loss)."""
        pred = run_model(self.network, batch["input"], batch["sigma"])
        loss, _ = self.restoration_loss(pred, batch["target"], self.global_step)
        terms = {"restoration": loss}
        # a network may restore in more than one way (a DnCNN's nested width): each way is trained as well
        auxiliary = getattr(self.network, "auxiliary_outputs", None)
        for name, extra in (auxiliary(batch["input"], batch["sigma"]) if auxiliary else {}).items():
            terms[name] = self.restoration_loss(extra, batch["target"], self.global_step)[0]
        return pred, terms

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor:
        batch_size = batch["input"].shape[0]
        spike_losses = SpikeLosses(self.network, self.rate_regularizer, self.rate_targets, self.twin_hint)
        with out_of_memory_as_error(f"training step {self.global_step}", batch, self.network, TRAIN_MEMORY_ADVICE), \
                spike_losses.tapped():
            _, terms = self.compute_losses(batch)
        terms.update(spike_losses.terms(batch["input"], self.global_step,
                                        lambda name, value: self.log(name, value, batch_size=batch_size)))
        check_finite_loss(terms, f"step {self.global_step} (epoch {self.current_epoch}, batch {batch_idx})")
        loss = sum(terms.values())
        self.log("train/loss", loss, prog_bar=True, batch_size=batch_size)
        for name, value in terms.items():
            self.log(f"train/{name}", value, batch_size=batch_size)
        return loss

    # ---- evaluation -------------------------------------------------------------------------------
    def evaluation_outputs(self, batch: dict[str, Any]) -> dict[str, Tensor]:
        """Images scored per role: the degraded input and the network's prediction."""
        return {"input": batch["input"], self.network_role: self(batch["input"], batch["sigma"])}

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, Tensor]:
        """Score the batch; the scored images by role are returned for the run report's samples."""
        with out_of_memory_as_error("evaluation", batch, self.network, EVAL_MEMORY_ADVICE):
            outputs = {role: image.clamp(0, 1) for role, image in self.evaluation_outputs(batch).items()}
        self.scores.score(outputs, batch["target"])
        return outputs

    validation_step = test_step

    def predict_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor:
        """Restore `batch["input"]`, in overlapping tiles when `predict_tiles` is set."""
        tile, overlap = self.predict_tiles or (None, 0)
        sigma = batch["sigma"]
        with out_of_memory_as_error("predict", batch, self.network, "set (or lower) data.init_args.tile_size"):
            restored = restore_tiled(lambda x: run_model(self.network, x, sigma), batch["input"], tile, overlap)
        return restored.clamp_(0, 1)  # in place: the output is a new tensor, and may be image-sized

    def _collect_scores(self, stage: str) -> dict[str, dict[str, float]]:
        scores = self.scores.collect()  # torchmetrics states are reduced over all processes: one value everywhere
        self.log_dict({f"{stage}/{role}_{k}": v for role, vals in scores.items() for k, v in vals.items()},
                      sync_dist=True)
        return scores

    def on_validation_epoch_end(self) -> None:
        scores = self.val_scores = self._collect_scores("val")
        self.log("val/psnr", scores[self.network_role]["psnr"], prog_bar=True, sync_dist=True)

    def on_test_epoch_end(self) -> None:
        self.test_scores = self._collect_scores("test")

    # ---- checkpoints and results ------------------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Store the warm-start report; refuse to overwrite a good checkpoint with non-finite weights."""
        check_finite_weights(checkpoint, f"step {self.global_step} (epoch {self.current_epoch})")
        save_warm_start(checkpoint, self.warm_start_report, self.twin_hint)
        align_loader_states(checkpoint)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.warm_start_report, self._twin_state = saved_warm_start(checkpoint)
        upgrade_loader_states(checkpoint)

    def results(self) -> dict[str, Any]:
        """The module's part of results.json (distill.callbacks.RunReport adds the run, energy and convergence)."""
        return {
            "metric_protocol": self.scores[self.network_role].protocol(),
            "metrics": self.test_scores,
            "params": self.parameter_counts(),
            "warm_start": self.warm_start_report,
        }


class RestorationModule(RestorationBase):
    """Trains `model` alone on a restoration task: teachers, and students without a teacher."""

    def __init__(
        self,
        model: nn.Module,
        restoration_loss: RestorationLoss | None = None,
        optimizer: OptimizerCallable = torch.optim.Adam,
        scheduler: LRSchedulerCallable | None = None,
        y_channel: bool = False,
        crop_border: int = 0,
        convergence: ConvergenceTargets | None = None,
        energy: str | dict[str, float] = "45nm-fp32",
        warm_start: WarmStart | None = None,
        rate_regularizer: RateRegularizer | None = None,
    ) -> None:
        """``warm_start``: train the spiking model's ANN twin first and start from its copy (distill/warm_start.py).
        ``rate_regularizer``: penalise the spiking model's firing rates (distill/rate_regularizer.py)."""
        super().__init__(restoration_loss, optimizer, scheduler, y_channel, crop_border, convergence, energy,
                         rate_regularizer)
        save_hyperparameters_without_networks(self, "model")
        self.model = model
        if warm_start is not None and warm_start.uses_teacher:
            raise ConfigError(
                "warm_start select_from_teacher / teacher_output_weight / twin_hints need a teacher: use "
                "distill.distillation.DistillationModule, or turn them off for a model trained alone"
            )
        self.warm_start = warm_start

    @property
    def network(self) -> nn.Module:
        return self.model
