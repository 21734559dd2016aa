"""The side work of a run as Lightning callbacks: energy and firing rates, convergence, and the run report.

The CLI adds `run_callbacks()` through LightningCLI's `trainer_defaults`; a Trainer built by hand passes them in
`callbacks=` to get the same logs, results.json, samples and energy tables.
"""
from __future__ import annotations

import itertools
import time
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Callback
from torch import Tensor

from distill.convergence import ConvergenceTargets, ConvergenceTracker
from distill.energy import EnergyReport, energy_ratio, measure_energy
from distill.results import RESULTS_NAME, run_metadata, write_results
from students.probes import firing_rates, overall_firing_rate, probing


def first_image(batch: dict[str, Any]) -> dict[str, Tensor]:
    """The first image of a contract batch, as a batch of one (its tensors only)."""
    return {k: v[:1] for k, v in batch.items() if isinstance(v, Tensor)}


def teacher_psnr(scores: dict[str, dict[str, float]]) -> float | None:
    """The teacher's PSNR in a module's scores, if it has a teacher (convergence targets are relative to it)."""
    return scores.get("teacher", {}).get("psnr")


class ResultsSection(Callback):
    """A callback that adds top-level keys to results.json; `RunReport` merges every one's `results`."""

    def results(self, pl_module: L.LightningModule) -> dict[str, Any]:
        raise NotImplementedError


class EnergyMonitor(ResultsSection):
    """Per-layer energy of the module's `energy_models()` and the firing rates of its network, on the first
    validation/test image, after each validation (logged as `energy/*` and `firing/*`, beside the parameter counts
    as `params/*`) and test; `energy_<role>.csv` are written at the end of testing."""

    def __init__(self) -> None:
        self.reports: dict[str, EnergyReport] = {}
        self.firing_rates: dict[str, float] = {}
        self.mean_firing_rate: float | None = None
        self.image: dict[str, Tensor] | None = None
        self.image_size: list[int] | None = None  # [C, H, W] of the image the energy is "per"

    def measure(self, pl_module: L.LightningModule, image: dict[str, Tensor]) -> None:
        """Measure every network of `pl_module` on `image` (a contract batch of one; see `first_image`)."""
        self.image_size = list(image["input"].shape[1:])
        for role, model in pl_module.energy_models().items():
            if role in self.reports and role == "teacher":
                continue  # a frozen teacher's counts never change
            kwargs = {"sigma": image["sigma"]} if getattr(model, "needs_sigma", False) else None
            with probing(model):
                self.reports[role] = measure_energy(model, image["input"], pl_module.energy_constants,
                                                    model_kwargs=kwargs)
            if role == pl_module.network_role:
                self.firing_rates = firing_rates(model)
                self.mean_firing_rate = overall_firing_rate(model) if self.firing_rates else None

    def summary(self) -> dict[str, Any]:
        """Energy per image (µJ) of each network, the mean firing rate and, with a teacher, teacher/student ratio."""
        summary: dict[str, Any] = {f"{role}_uj": r.energy_uj for role, r in self.reports.items()}
        if self.firing_rates:
            summary["mean_firing_rate"] = self.mean_firing_rate
        if {"teacher", "student"} <= self.reports.keys():
            summary["ratio"] = energy_ratio(self.reports["teacher"], self.reports["student"])
        return summary

    def results(self, pl_module: L.LightningModule) -> dict[str, Any]:
        energy = {"constants": pl_module.energy_constants.__dict__, "image_size": self.image_size,
                  **{role: report.to_dict() for role, report in self.reports.items()}, **self.summary()}
        return {"energy": energy, "firing_rates": self.firing_rates}

    def _measure_evaluated(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Measure on rank 0's first image on every rank (their first batches differ), so all ranks agree;
        every rank calls it at the same point (a collective)."""
        if trainer.world_size > 1:
            self.image = trainer.strategy.broadcast(self.image, src=0)
        if self.image is not None:
            self.measure(pl_module, self.image)

    def on_validation_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                                batch_idx: int, dataloader_idx: int = 0) -> None:
        if batch_idx == 0:
            self.image = first_image(batch)

    on_test_batch_end = on_validation_batch_end

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        self._measure_evaluated(trainer, pl_module)
        logged = {f"energy/{k}": v for k, v in self.summary().items()}
        logged.update({f"firing/{layer}": rate for layer, rate in self.firing_rates.items()})
        logged.update({f"params/{role}": count for role, count in pl_module.parameter_counts().items()})
        for name, value in logged.items():
            if value is not None:
                pl_module.log(name, float(value), sync_dist=True)

    def on_test_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._measure_evaluated(trainer, pl_module)

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.is_global_zero:
            for role, report in self.reports.items():
                report.write_csv(Path(trainer.default_root_dir) / f"energy_{role}.csv")


class ConvergenceMonitor(ResultsSection):
    """Validation PSNR with the step and the training seconds (warm start included) at each validation; logs
    `convergence/steps_to_<target>` once a target of the module's `convergence_targets` is reached."""

    def __init__(self) -> None:
        self.tracker = ConvergenceTracker(ConvergenceTargets())
        self.warm_start_counted = False
        self._batch_started: float | None = None

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self.tracker.targets = pl_module.convergence_targets

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Count the warm start's seconds as training, once per run (it ran in the module's `on_fit_start`)."""
        report = pl_module.warm_start_report
        if report is not None and not self.warm_start_counted:
            self.tracker.train_seconds += report["seconds"]
            self.warm_start_counted = True

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any,
                             batch_idx: int) -> None:
        self._batch_started = time.perf_counter()

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        if self._batch_started is not None:
            self.tracker.train_seconds += time.perf_counter() - self._batch_started
            self._batch_started = None

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        scores = pl_module.scores.current()  # this hook runs before the module's, which resets them
        self.tracker.update(trainer.global_step, scores[pl_module.network_role]["psnr"], teacher_psnr(scores))
        for name, value in self.summary(teacher_psnr(scores)).items():
            pl_module.log(name, float(value), sync_dist=True)

    def summary(self, reference_psnr: float | None = None) -> dict[str, int]:
        """`convergence/steps_to_<target>`: the first step at which each reached target was met."""
        reached = self.tracker.summary(reference_psnr)
        return {f"convergence/steps_to_{label}": t["step"] for label, t in reached.items() if t["step"] is not None}

    def results(self, pl_module: L.LightningModule) -> dict[str, Any]:
        return {"convergence": {"targets": self.tracker.summary(teacher_psnr(pl_module.val_scores)),
                                "history": self.tracker.history,
                                "train_seconds": round(self.tracker.train_seconds, 3)}}

    def state_dict(self) -> dict[str, Any]:
        return {**self.tracker.state_dict(), "warm_start_counted": self.warm_start_counted}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.tracker.load_state_dict(state_dict)
        self.warm_start_counted = bool(state_dict["warm_start_counted"])

    def on_load_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule,
                           checkpoint: dict[str, Any]) -> None:
        """Checkpoints written before this callback kept the tracker under "convergence", warm start counted."""
        if "convergence" in checkpoint:
            self.tracker.load_state_dict(checkpoint["convergence"])
            self.warm_start_counted = True


def gather_samples(trainer: L.Trainer, mine: list[Any], count: int) -> list[Any]:
    """The first `count` test images of the whole split, whatever the number of processes.

    Evaluation shards image ``k`` to rank ``k % world_size`` (in order), so interleaving every rank's first
    images restores the split's order; every rank takes part in the gather (a collective).
    """
    import torch.distributed as dist

    if trainer.world_size < 2 or not (dist.is_available() and dist.is_initialized()):
        return mine
    gathered: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, mine)
    merged = [item for group in itertools.zip_longest(*gathered) for item in group if item is not None]
    return merged[:count]


def write_samples(samples: list[tuple[str, dict[str, Tensor]]], folder: Path) -> None:
    """`<name>_<role>.png` for each sample: degraded input, outputs, clean target."""
    from distill.prediction import save_png

    for name, images in samples:
        for role, image in images.items():
            save_png(image, folder / f"{Path(name).stem}_{role}.png")


class RunReport(Callback):
    """At the end of testing, on rank 0: `<run>/results.json`, the first `sample_count` test images as
    `samples/<name>_<role>.png`, and the run's figures to the loggers that take images."""

    def __init__(self, sample_count: int = 2) -> None:
        self.sample_count = sample_count
        self.config: dict[str, Any] | None = None  # the CLI's whole config; without it, the module's hparams
        self.samples: list[tuple[str, dict[str, Tensor]]] = []

    def results(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict[str, Any]:
        """Everything results.json records: the run, the module's results and every `ResultsSection`'s."""
        results = run_metadata(trainer, trainer.datamodule, pl_module.network, self.config or dict(pl_module.hparams))
        results.update(pl_module.results())
        for callback in trainer.callbacks:
            if isinstance(callback, ResultsSection):
                results.update(callback.results(pl_module))
        return results

    def on_test_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.samples = []

    def on_test_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                          batch_idx: int, dataloader_idx: int = 0) -> None:
        """Keep the first images: `outputs` is the module's test_step output, the scored images by role."""
        images = outputs | {"target": batch["target"]}
        for i in range(min(self.sample_count - len(self.samples), batch["target"].shape[0])):
            self.samples.append((batch["name"][i], {role: image[i].detach().cpu() for role, image in images.items()}))

    def on_test_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.samples = gather_samples(trainer, self.samples, self.sample_count)

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        run_dir = Path(trainer.default_root_dir)
        write_samples(self.samples, run_dir / "samples")
        results = self.results(trainer, pl_module)
        write_results(run_dir / RESULTS_NAME, results)
        if trainer.loggers:  # matplotlib only when some logger may take the figures
            from distill.plots import log_figures_to_loggers, run_figures

            log_figures_to_loggers(trainer, run_figures(results, run_dir, run_dir.name), step=trainer.global_step)


def run_callbacks() -> list[Callback]:
    """The callbacks every run gets (fresh ones): energy, convergence and the report, which reads both."""
    return [EnergyMonitor(), ConvergenceMonitor(), RunReport()]
