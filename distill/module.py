"""LightningModule that trains one restoration network alone: teachers, and students without a teacher.

`DistillationModule` (distill/distillation.py) extends it with a frozen teacher, hints and output distillation.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import Tensor, nn

from distill.convergence import ConvergenceTargets, ConvergenceTracker
from distill.energy import EnergyReport, measure_energy, resolve_constants
from distill.errors import ConfigError, TrainingError
from distill.losses import RestorationLoss
from distill.metrics import RestorationMetrics
from distill.modeling import count_parameters, network_args_to_ignore, run_model
from distill.plots import log_figures_to_loggers, run_figures
from distill.prediction import save_png
from distill.results import run_metadata, write_results
from students.probes import firing_rates, overall_firing_rate, probing


class RestorationBase(L.LightningModule):
    """Training, evaluation, energy, convergence and results shared by every module; subclasses set `network`."""

    network_role = "model"
    scored_roles: tuple[str, ...] = ("input", "model")

    def __init__(
        self,
        restoration_loss: RestorationLoss | None,
        optimizer: OptimizerCallable,
        scheduler: LRSchedulerCallable | None,
        y_channel: bool,
        crop_border: int,
        convergence: ConvergenceTargets | None,
        energy: str | dict[str, float],
    ) -> None:
        super().__init__()
        self.restoration_loss = restoration_loss or RestorationLoss()
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.metric_options = {"y_channel": y_channel, "crop_border": crop_border, "data_range": 1.0}
        self.scores = nn.ModuleDict({role: RestorationMetrics(**self.metric_options) for role in self.scored_roles})
        self.tracker = ConvergenceTracker(convergence or ConvergenceTargets())
        self.energy_constants = resolve_constants(energy)
        self.energy_reports: dict[str, EnergyReport] = {}
        self.run_config: dict[str, Any] | None = None
        self._batch_started: float | None = None
        self._energy_batch: dict[str, Tensor] | None = None
        self.firing_rates: dict[str, float] = {}
        self.mean_firing_rate: float | None = None
        self._samples: tuple[list[str], dict[str, Tensor]] | None = None
        self.val_scores: dict[str, dict[str, float]] = {}
        self.test_scores: dict[str, dict[str, float]] = {}

    # ---- what is trained and scored -------------------------------------------------------------
    @property
    def network(self) -> nn.Module:
        """The network being trained."""
        raise NotImplementedError

    def reference_psnr(self) -> float | None:
        """PSNR the convergence targets are relative to (the teacher's, when there is one)."""
        return None

    def forward(self, x: Tensor, sigma: Tensor | None = None) -> Tensor:
        return run_model(self.network, x, sigma if sigma is not None else x.new_zeros(x.shape[0]))

    # ---- set-up -----------------------------------------------------------------------------------
    def setup(self, stage: str) -> None:
        datamodule = getattr(self.trainer, "datamodule", None)
        channels = getattr(datamodule, "channels", None)
        expected = getattr(self.network, "in_channels", None)
        if channels is not None and expected is not None and channels != expected:
            names = {1: "gray", 3: "RGB"}
            raise ConfigError(
                f"the data gives {channels}-channel ({names.get(channels, '?')}) images but the "
                f"{self.network_role} expects {expected} ({names.get(expected, '?')}); set "
                f"data.init_args.channels: {expected} or build the {self.network_role} with in_channels: {channels}"
            )

    def configure_optimizers(self) -> Any:
        optimizer = self.optimizer_factory(self.trainable_parameters())
        if self.scheduler_factory is None:
            return optimizer
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": self.scheduler_factory(optimizer), "interval": "step"}}

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.network.parameters() if p.requires_grad]

    # ---- training ---------------------------------------------------------------------------------
    def compute_losses(self, batch: dict[str, Any]) -> tuple[Tensor, dict[str, Tensor]]:
        """Prediction and the weighted loss terms (their sum is the training loss)."""
        pred = run_model(self.network, batch["input"], batch["sigma"])
        loss, _ = self.restoration_loss(pred, batch["target"], self.global_step)
        return pred, {"restoration": loss}

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor:
        _, terms = self.compute_losses(batch)
        bad = [name for name, value in terms.items() if not torch.isfinite(value).all()]
        if bad:
            values = {name: float(terms[name].detach()) for name in bad}
            raise TrainingError(
                f"non-finite loss at step {self.global_step} (epoch {self.current_epoch}, batch {batch_idx}): "
                f"{values}; training stopped, the last good checkpoint is kept. Lower the learning rate or "
                f"check the data and loss weights"
            )
        loss = sum(terms.values())
        batch_size = batch["input"].shape[0]
        self.log("train/loss", loss, prog_bar=True, batch_size=batch_size)
        for name, value in terms.items():
            self.log(f"train/{name}", value, batch_size=batch_size)
        return loss

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        self._batch_started = time.perf_counter()

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        if self._batch_started is not None:
            self.tracker.train_seconds += time.perf_counter() - self._batch_started
            self._batch_started = None

    # ---- evaluation -------------------------------------------------------------------------------
    def evaluation_outputs(self, batch: dict[str, Any]) -> dict[str, Tensor]:
        """Images scored per role: the degraded input and the network's prediction."""
        return {"input": batch["input"], self.network_role: self(batch["input"], batch["sigma"])}

    def _evaluate(self, batch: dict[str, Any], batch_idx: int) -> dict[str, Tensor]:
        if batch_idx == 0:
            self._energy_batch = {k: v[:1] for k, v in batch.items() if isinstance(v, Tensor)}
        outputs = {role: image.clamp(0, 1) for role, image in self.evaluation_outputs(batch).items()}
        for role, image in outputs.items():
            self.scores[role].update(image, batch["target"])
        return outputs

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._evaluate(batch, batch_idx)

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        outputs = self._evaluate(batch, batch_idx)
        if batch_idx == 0:  # a few restored images for the visual grid
            keep = min(2, batch["target"].shape[0])
            self._samples = (batch["name"][:keep], outputs | {"target": batch["target"]})

    def predict_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor:
        """Restore `batch["input"]`, in overlapping tiles when the datamodule sets `tile_size`."""
        from distill.tiling import restore_tiled

        datamodule = getattr(self.trainer, "datamodule", None)
        tile = getattr(datamodule, "tile_size", None)
        overlap = getattr(datamodule, "tile_overlap", 0)
        sigma = batch["sigma"]
        return restore_tiled(lambda x: run_model(self.network, x, sigma), batch["input"], tile, overlap).clamp(0, 1)

    def _collect_scores(self, stage: str) -> dict[str, dict[str, float]]:
        scores = {}
        for role, metric in self.scores.items():
            values = {k: float(v) for k, v in metric.compute().items()}
            metric.reset()
            scores[role] = values
            for name, value in values.items():
                self.log(f"{stage}/{role}_{name}", value, sync_dist=False)
        return scores

    def on_validation_epoch_end(self) -> None:
        scores = self.val_scores = self._collect_scores("val")
        self.log("val/psnr", scores[self.network_role]["psnr"], prog_bar=True)
        if self.trainer.sanity_checking:
            return
        self.tracker.update(self.global_step, scores[self.network_role]["psnr"], self.reference_psnr())
        self.measure_energy()
        for name, value in self.energy_summary().items():
            if value is not None:
                self.log(f"energy/{name}", float(value))

    def on_test_epoch_end(self) -> None:
        self.test_scores = self._collect_scores("test")
        self.measure_energy()

    # ---- energy -----------------------------------------------------------------------------------
    def energy_models(self) -> dict[str, nn.Module]:
        """Networks whose energy is reported, by role."""
        return {self.network_role: self.network}

    def measure_energy(self) -> None:
        """Per-layer energy of every reported network on the first validation/test image."""
        if self._energy_batch is None:
            return
        x, sigma = self._energy_batch["input"], self._energy_batch["sigma"]
        for role, model in self.energy_models().items():
            if role in self.energy_reports and role == "teacher":
                continue  # a frozen teacher's counts never change
            kwargs = {"sigma": sigma} if getattr(model, "needs_sigma", False) else None
            with probing(model):
                self.energy_reports[role] = measure_energy(model, x, self.energy_constants, model_kwargs=kwargs)
            if role == self.network_role:
                self.firing_rates = firing_rates(model)
                self.mean_firing_rate = overall_firing_rate(model) if self.firing_rates else None

    def energy_summary(self) -> dict[str, Any]:
        """Energy per image (µJ) of each network and, with a teacher, teacher/student ratio."""
        summary: dict[str, Any] = {f"{role}_uj": r.energy_uj for role, r in self.energy_reports.items()}
        if self.firing_rates:
            summary["mean_firing_rate"] = self.mean_firing_rate
        return summary

    # ---- checkpoints and results ------------------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["convergence"] = self.tracker.state_dict()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if "convergence" in checkpoint:
            self.tracker.load_state_dict(checkpoint["convergence"])

    def parameter_counts(self) -> dict[str, Any]:
        return {self.network_role: count_parameters(self.network)}

    def results(self) -> dict[str, Any]:
        """Everything results.json records about this run."""
        datamodule = getattr(self.trainer, "datamodule", None)
        reports = self.energy_reports
        return {
            **run_metadata(self.trainer, datamodule, self.network, self.run_config or dict(self.hparams)),
            "metric_protocol": self.scores[self.network_role].protocol(),
            "metrics": self.test_scores,
            "params": self.parameter_counts(),
            "energy": {
                "constants": self.energy_constants.__dict__,
                **{role: report.to_dict() for role, report in reports.items()},
                **self.energy_summary(),
            },
            "firing_rates": self.firing_rates,
            "convergence": {
                "targets": self.tracker.summary(self.reference_psnr()),
                "history": self.tracker.history,
                "train_seconds": round(self.tracker.train_seconds, 3),
            },
        }

    def on_test_end(self) -> None:
        if not self.trainer.is_global_zero:
            return
        run_dir = Path(self.trainer.default_root_dir)
        for role, report in self.energy_reports.items():
            report.write_csv(run_dir / f"energy_{role}.csv")
        self.write_samples(run_dir / "samples")
        results = self.results()
        write_results(run_dir / "results.json", results)
        log_figures_to_loggers(self.trainer, run_figures(results, run_dir, run_dir.name), step=self.global_step)

    def write_samples(self, folder: Path) -> None:
        """`<name>_<role>.png` for the first test images: degraded input, outputs, clean target."""
        if self._samples is None:
            return
        names, images = self._samples
        for i, name in enumerate(names):
            for role, image in images.items():
                save_png(image[i], folder / f"{Path(name).stem}_{role}.png")


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
    ) -> None:
        super().__init__(restoration_loss, optimizer, scheduler, y_channel, crop_border, convergence, energy)
        self.save_hyperparameters(ignore=network_args_to_ignore("model"))
        self.model = model

    @property
    def network(self) -> nn.Module:
        return self.model
