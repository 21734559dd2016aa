"""LightningModule that trains one restoration network alone: teachers, and students without a teacher.

`DistillationModule` (distill/distillation.py) extends it with a frozen teacher, hints and output distillation.
"""
from __future__ import annotations

import itertools
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import lightning as L
import torch
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import Tensor, nn

from distill.convergence import ConvergenceTargets, ConvergenceTracker
from distill.data.base import align_loader_states
from distill.energy import EnergyReport, measure_energy, resolve_constants
from distill.errors import ConfigError, TrainingError
from distill.losses import RestorationLoss
from distill.metrics import RestorationMetrics
from distill.modeling import count_parameters, network_args_to_ignore, run_model
from distill.plots import log_figures_to_loggers, run_figures
from distill.prediction import save_png
from distill.results import run_metadata, write_results
from distill.warm_start import WarmStart, run_warm_start
from students.probes import firing_rates, overall_firing_rate, probing


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


class RestorationBase(L.LightningModule):
    """Training, evaluation, energy, convergence and results shared by every module; subclasses set `network`."""

    network_role = "model"
    scored_roles: tuple[str, ...] = ("input", "model")
    #: test images written to `<run>/samples/` for the visual grid
    sample_count = 2

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
        self._samples: list[tuple[str, dict[str, Tensor]]] = []  # (name, {role: [C, H, W]}) for the image grid
        self.val_scores: dict[str, dict[str, float]] = {}
        self.test_scores: dict[str, dict[str, float]] = {}
        self.warm_start: WarmStart | None = None  # set by subclasses that take the option
        self.warm_start_report: dict[str, Any] | None = None

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
        self.check_data(getattr(self.trainer, "datamodule", None))

    def check_data(self, datamodule: Any) -> None:
        """ConfigError unless the datamodule's images have the channels the network takes."""
        channels = getattr(datamodule, "channels", None)
        expected = getattr(self.network, "in_channels", None)
        if channels is not None and expected is not None and channels != expected:
            names = {1: "gray", 3: "RGB"}
            raise ConfigError(
                f"the data gives {channels}-channel ({names.get(channels, '?')}) images but the "
                f"{self.network_role} expects {expected} ({names.get(expected, '?')}); set "
                f"data.init_args.channels: {expected} or build the {self.network_role} with in_channels: {channels}"
            )

    def on_fit_start(self) -> None:
        """Run the warm start once per run (a resumed run restores its report instead); its time counts as training."""
        if self.warm_start is not None and self.warm_start_report is None:
            self.warm_start_report = run_warm_start(self, self.warm_start)
            self.tracker.train_seconds += self.warm_start_report["seconds"]

    def configure_optimizers(self) -> Any:
        optimizer = self._build("optimizer", self.optimizer_factory, self.trainable_parameters())
        if self.scheduler_factory is None:
            return optimizer
        scheduler = self._build("scheduler", self.scheduler_factory, optimizer)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    @staticmethod
    def _build(name: str, factory: Any, argument: Any) -> Any:
        """Call the recipe's optimizer/scheduler factory; torch's argument errors become a ConfigError."""
        try:
            return factory(argument)
        except (ValueError, TypeError) as exc:
            raise ConfigError(f"the {name} cannot be built from the recipe's model.init_args.{name}: {exc}") from exc

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.network.parameters() if p.requires_grad]

    # ---- training ---------------------------------------------------------------------------------
    def compute_losses(self, batch: dict[str, Any]) -> tuple[Tensor, dict[str, Tensor]]:
        """Prediction and the weighted loss terms (their sum is the training loss)."""
        pred = run_model(self.network, batch["input"], batch["sigma"])
        loss, _ = self.restoration_loss(pred, batch["target"], self.global_step)
        return pred, {"restoration": loss}

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor:
        advice = "lower data.init_args.batch_size or patch_size, or the student's timesteps or features"
        with out_of_memory_as_error(f"training step {self.global_step}", batch, self.network, advice):
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
        advice = ("lower the student's timesteps or features, or set data.init_args.eval_size to score "
                  "centre crops (or lower batch_size)")
        with out_of_memory_as_error("evaluation", batch, self.network, advice):
            outputs = {role: image.clamp(0, 1) for role, image in self.evaluation_outputs(batch).items()}
        for role, image in outputs.items():
            self.scores[role].update(image, batch["target"])
        return outputs

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._evaluate(batch, batch_idx)

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        outputs = self._evaluate(batch, batch_idx)
        images = outputs | {"target": batch["target"]}
        for i in range(min(self.sample_count - len(self._samples), batch["target"].shape[0])):
            self._samples.append((batch["name"][i], {role: image[i].detach().cpu() for role, image in images.items()}))

    def predict_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor:
        """Restore `batch["input"]`, in overlapping tiles when the datamodule sets `tile_size`."""
        from distill.tiling import restore_tiled

        datamodule = getattr(self.trainer, "datamodule", None)
        tile = getattr(datamodule, "tile_size", None)
        overlap = getattr(datamodule, "tile_overlap", 0)
        sigma = batch["sigma"]
        with out_of_memory_as_error("predict", batch, self.network, "set (or lower) data.init_args.tile_size"):
            restored = restore_tiled(lambda x: run_model(self.network, x, sigma), batch["input"], tile, overlap)
        return restored.clamp_(0, 1)  # in place: the output is a new tensor, and may be image-sized

    def _collect_scores(self, stage: str) -> dict[str, dict[str, float]]:
        scores = {}
        for role, metric in self.scores.items():
            values = {k: float(v) for k, v in metric.compute().items()}
            metric.reset()
            scores[role] = values
            for name, value in values.items():
                # the torchmetrics states are already reduced over all processes: the same value everywhere
                self.log(f"{stage}/{role}_{name}", value, sync_dist=True)
        return scores

    def on_validation_epoch_end(self) -> None:
        scores = self.val_scores = self._collect_scores("val")
        self.log("val/psnr", scores[self.network_role]["psnr"], prog_bar=True, sync_dist=True)
        if self.trainer.sanity_checking:
            return
        self.tracker.update(self.global_step, scores[self.network_role]["psnr"], self.reference_psnr())
        self.measure_energy()
        for name, value in self.validation_summary().items():
            self.log(name, float(value), sync_dist=True)

    def validation_summary(self) -> dict[str, float]:
        """What each validation logs besides the scores: energy (µJ, ratio, mean firing rate), parameter
        counts and ratio, per-layer firing rates, and the step at which each convergence target was reached."""
        summary = {f"energy/{k}": v for k, v in self.energy_summary().items()}
        summary.update({f"params/{k}": v for k, v in self.parameter_counts().items()})
        summary.update({f"firing/{layer}": rate for layer, rate in self.firing_rates.items()})
        reached = self.tracker.summary(self.reference_psnr())
        summary.update({f"convergence/steps_to_{label}": t["step"] for label, t in reached.items()})
        return {k: v for k, v in summary.items() if v is not None}

    def on_test_epoch_start(self) -> None:
        self._samples = []

    def on_test_epoch_end(self) -> None:
        self.test_scores = self._collect_scores("test")
        self.measure_energy()
        self._samples = self._gather_samples(self._samples)

    def _gather_samples(self, mine: list[tuple[str, dict[str, Tensor]]]) -> list[tuple[str, dict[str, Tensor]]]:
        """The first `sample_count` test images of the whole split, whatever the number of processes.

        Evaluation shards image ``k`` to rank ``k % world_size`` (in order), so interleaving every rank's first
        images restores the split's order; every rank takes part in the gather (a collective).
        """
        trainer = self._trainer
        if trainer is None or trainer.world_size < 2:
            return mine
        import torch.distributed as dist

        if not (dist.is_available() and dist.is_initialized()):
            return mine
        gathered: list[Any] = [None] * dist.get_world_size()
        dist.all_gather_object(gathered, mine)
        merged = [item for group in itertools.zip_longest(*gathered) for item in group if item is not None]
        return merged[: self.sample_count]

    # ---- energy -----------------------------------------------------------------------------------
    def energy_models(self) -> dict[str, nn.Module]:
        """Networks whose energy is reported, by role."""
        return {self.network_role: self.network}

    def measure_energy(self) -> None:
        """Per-layer energy of every reported network on the first validation/test image.

        With several processes every rank measures rank 0's image (its first batch differs), so energy and
        firing rates agree across ranks. Called by every rank at the same point (the epoch ends).
        """
        trainer = self._trainer  # None when called outside a fit (the energy command)
        if trainer is not None and trainer.world_size > 1:
            self._energy_batch = trainer.strategy.broadcast(self._energy_batch, src=0)
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
        """Store the convergence bookkeeping; refuse to overwrite a good checkpoint with non-finite weights."""
        bad = [name for name, value in checkpoint.get("state_dict", {}).items()
               if isinstance(value, Tensor) and value.is_floating_point() and not torch.isfinite(value).all()]
        if bad:
            shown = ", ".join(bad[:5]) + (f" ... and {len(bad) - 5} more" if len(bad) > 5 else "")
            raise TrainingError(
                f"non-finite weights at step {self.global_step} (epoch {self.current_epoch}) in {shown}; "
                "the checkpoint was not written, so the last good one is kept. Lower the learning rate or "
                "check the data and loss weights"
            )
        checkpoint["convergence"] = self.tracker.state_dict()
        checkpoint["warm_start"] = self.warm_start_report
        align_loader_states(checkpoint)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if "convergence" in checkpoint:
            self.tracker.load_state_dict(checkpoint["convergence"])
        self.warm_start_report = checkpoint.get("warm_start")

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
            "warm_start": self.warm_start_report,
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
        for name, images in self._samples:
            for role, image in images.items():
                save_png(image, folder / f"{Path(name).stem}_{role}.png")


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
    ) -> None:
        """``warm_start``: train the spiking model's ANN twin first and start from its copy (distill/warm_start.py)."""
        super().__init__(restoration_loss, optimizer, scheduler, y_channel, crop_border, convergence, energy)
        self.save_hyperparameters(ignore=network_args_to_ignore("model"))
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
