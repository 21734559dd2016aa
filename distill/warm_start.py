"""Warm start of a spiking student, run at the start of a fit: train its spike-aware ANN twin (optionally
started from the teacher's weights and pulled towards the teacher's output), copy it into the student,
calibrate the firing rates, then let the spiking fine-tune begin. The phase's time counts in the run's
training seconds, so arms with and without it compare at equal wall-clock (see students/transfer.py)."""
from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import default_collate

from spikedistill_core.checks import check_int, check_number
from distill.errors import ConfigError
from distill.modeling import run_model
from students.transfer import (
    calibrate_rates, calibrate_weights, channel_rates, check_copy_start, copy_twin, init_thresholds, layer_outputs, make_twin,
    neuron_paths, select_from_dncnn,
)

#: the twin's crops come from epochs far past any fit's, so the spiking phase sees the same crops in every arm
WARM_EPOCH_OFFSET = 1_000_000


@dataclass
class WarmStart:
    """Recipe options of the warm start (``model.init_args.warm_start``).

    Args:
        twin_steps: optimizer steps of the ANN twin (QCFS activations, T = 1, so each costs a third to a fifth of a
            spiking step at T = 4).
        lr: the twin's Adam learning rate, cosine-decayed to 1% over ``twin_steps``.
        select_from_teacher: start the twin from evenly spaced channels of the teacher's layers
            (a ``teachers.dncnn.DnCNN`` teacher and a ``norm='none'`` SpikingDnCNN student).
        teacher_output_weight: weight of an L1 pull of the twin's output towards the teacher's output.
        clean_weight: weight of the restoration loss against the clean target; 0 with a teacher output pull
            trains the twin on the teacher's output alone (a lower-variance target than the clean image).
        twin_hints: train the twin with the run's feature hints too (the twin has the student's module paths;
            the adapters it trains carry on into the spiking phase).
        calibrate: after the copy, shift each layer's biases until every channel fires at the twin's rate.
        twin_hint_weight: keep the trained twin, frozen, as a second teacher for the spiking fine-tune: this weight x
            the mean over the student's neurons of the MSE between each one's firing rate (mean over T) and the
            twin's activation on the same batch (:class:`TwinHint`); 0 = off. The twin is stored in checkpoints.
        weight_calibration: then fit each layer's weights, first layer first, for this many Adam steps so that its
            rates match the twin's activations on the calibration patches, and the tail the twin's output
            (``students.transfer.calibrate_weights``); 0 = off.
        calibration_patches: training patches that set the thresholds and calibrate the rates.
        threshold_percentile: percentile of the positive pre-activations that sets each starting threshold.
        eval_images: validation images scored after each stage (twin, copy, calibration); 0 = none.
    """

    twin_steps: int = 1000
    lr: float = 2e-3
    select_from_teacher: bool = False
    teacher_output_weight: float = 0.0
    clean_weight: float = 1.0
    twin_hints: bool = False
    calibrate: bool = True
    weight_calibration: int = 0
    twin_hint_weight: float = 0.0
    calibration_patches: int = 16
    threshold_percentile: float = 99.0
    eval_images: int = 4

    @property
    def uses_teacher(self) -> bool:
        """Whether any option needs a teacher."""
        return bool(self.select_from_teacher or self.teacher_output_weight or self.twin_hints)

    def __post_init__(self) -> None:
        for name in ("twin_steps", "calibration_patches", "eval_images", "weight_calibration"):
            value = getattr(self, name)
            minimum = 1 if name == "calibration_patches" else 0
            check_int(f"warm_start {name}", value, minimum)
        check_number("warm_start lr", self.lr, 0, above=True)
        check_number("warm_start teacher_output_weight", self.teacher_output_weight, 0)
        check_number("warm_start clean_weight", self.clean_weight, 0)
        check_number("warm_start twin_hint_weight", self.twin_hint_weight, 0)
        check_number("warm_start threshold_percentile", self.threshold_percentile, 0, 100, above=True)
        if not (self.clean_weight or self.teacher_output_weight):
            raise ConfigError(
                "warm_start clean_weight=0 with teacher_output_weight=0 leaves the twin without a target; "
                "set either > 0"
            )


def _patches(dataset: Any, epoch: int, indices: range, device: torch.device) -> dict[str, Tensor]:
    batch = default_collate([dataset[(WARM_EPOCH_OFFSET + epoch, i)] for i in indices])
    return {k: v.to(device) if isinstance(v, Tensor) else v for k, v in batch.items()}


@torch.no_grad()
def _val_psnr(model: nn.Module, datamodule: Any, images: int, device: torch.device) -> float | None:
    """Mean PSNR (dB, data range 1) of ``model`` on the first ``images`` validation images."""
    if images == 0:
        return None
    was_training = model.training
    model.eval()
    scores = []
    try:
        for batch in datamodule.val_dataloader():
            x, target = batch["input"].to(device), batch["target"].to(device)
            out = run_model(model, x, batch["sigma"].to(device)).clamp(0, 1)
            mse = (out - target).pow(2).flatten(1).mean(1)
            scores += (-10 * torch.log10(mse)).tolist()
            if len(scores) >= images:
                break
    finally:
        model.train(was_training)
    return round(sum(scores[:images]) / len(scores[:images]), 3)


def _twin_loss(module: Any, twin: nn.Module, teacher: nn.Module | None, hint_set: Any, config: WarmStart,
               batch: dict[str, Tensor], step: int) -> Tensor:
    """Restoration loss of the twin on ``batch``, plus the teacher's output pull and hints where asked."""
    hints = hint_set is not None and bool(hint_set.hints)
    output_weight = config.teacher_output_weight
    with contextlib.ExitStack() as stack:
        taps = stack.enter_context(hint_set.capture(twin, "student")) if hints else []
        pred = run_model(twin, batch["input"], batch["sigma"])
    loss = pred.new_zeros(())
    if config.clean_weight:
        loss = config.clean_weight * module.restoration_loss(pred, batch["target"], step)[0]
    if not (output_weight or hints):
        return loss
    with torch.no_grad(), contextlib.ExitStack() as stack:
        teacher_taps = stack.enter_context(hint_set.capture(teacher, "teacher")) if hints else []
        reference = run_model(teacher, batch["input"], batch["sigma"])
    if output_weight:
        loss = loss + output_weight * F.l1_loss(pred, reference)
    if hints:
        per_hint = hint_set.losses([t.take() for t in taps], [t.take() for t in teacher_taps], 1,
                                   batch["input"], batch["target"])
        loss = loss + sum(w * h for w, h in zip(hint_set.weights(step), per_hint))
    return loss


class TwinHint:
    """The warm start's trained twin, frozen, as a teacher for the spiking fine-tune (``twin_hint_weight``): its
    activations are the rates each spiking layer should fire at, a dense per-layer target beside the clean image."""

    def __init__(self, twin: nn.Module, weight: float) -> None:
        self.twin = twin.eval().requires_grad_(False)
        self.weight = weight

    @classmethod
    def restore(cls, student: nn.Module, state: dict[str, Tensor], weight: float) -> "TwinHint":
        """Rebuild the twin of a resumed run from its checkpointed weights."""
        twin = make_twin(student)
        twin.load_state_dict(state)
        return cls(twin.to(next(student.parameters()).device), weight)

    def loss(self, spikes: dict[str, Tensor], x: Tensor) -> Tensor:
        """``weight`` x the mean over layers of MSE(rate, twin activation); ``spikes`` are the student's neuron
        outputs ``[T, B, C, H, W]`` on ``x`` by path."""
        with torch.no_grad():
            activations, _ = layer_outputs(self.twin, x, list(spikes))
        terms = [F.mse_loss(out.mean(0), activations[p].reshape(out.shape[1:])) for p, out in spikes.items()]
        return self.weight * torch.stack(terms).mean()


def start_warm(module: Any, config: WarmStart, report: dict[str, Any] | None,
               saved_twin: dict[str, Tensor] | None) -> tuple[dict[str, Any], TwinHint | None]:
    """The fit's warm start: run it when ``report`` is None (a new run), else keep the resumed run's report; and the
    twin hint, from the new twin or the resumed run's checkpointed one (``saved_twin``)."""
    weight = config.twin_hint_weight
    if report is None:
        report, twin = run_warm_start(module, config)
        return report, TwinHint(twin, weight) if weight else None
    if not weight:
        return report, None
    if saved_twin is None:
        raise ConfigError(
            f"warm_start twin_hint_weight={weight!r}, but the checkpoint holds no warm-start twin (it was written "
            "with twin_hint_weight 0); resume with twin_hint_weight: 0, or start a new run"
        )
    return report, TwinHint.restore(module.network, saved_twin, weight)


def save_warm_start(checkpoint: dict[str, Any], report: dict[str, Any] | None, twin_hint: TwinHint | None) -> None:
    """Store the warm-start report, and the twin hint's twin, in a fit checkpoint."""
    checkpoint["warm_start"] = report
    if twin_hint is not None:
        checkpoint["warm_start_twin"] = twin_hint.twin.state_dict()


def saved_warm_start(checkpoint: dict[str, Any]) -> tuple[dict[str, Any] | None, dict[str, Tensor] | None]:
    """(warm-start report, twin weights) of a fit checkpoint; None for what it does not hold."""
    return checkpoint.get("warm_start"), checkpoint.get("warm_start_twin")


def run_warm_start(module: Any, config: WarmStart) -> tuple[dict[str, Any], nn.Module]:
    """Train the student's twin, copy and calibrate it into the student in place; return the phase's report and
    the trained twin."""
    datamodule = module.trainer.datamodule
    student, device = module.network, module.device
    teacher = getattr(module, "teacher", None)
    hint_set = getattr(module, "hint_set", None) if config.twin_hints else None
    check_copy_start(student)  # before the twin trains, not after
    dataset = datamodule.train_dataset()
    started = time.perf_counter()
    twin = make_twin(student).to(device)
    calibration = _patches(dataset, 0, range(config.calibration_patches), device)["input"]
    if config.select_from_teacher:
        select_from_dncnn(teacher, twin, calibration, config.threshold_percentile)
    else:
        init_thresholds(twin, calibration, config.threshold_percentile)
    twin.train()
    trained = list(twin.parameters()) + (list(hint_set.parameters()) if hint_set is not None else [])
    optimizer = torch.optim.Adam(trained, lr=config.lr)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, max(1, config.twin_steps), config.lr / 100)
    per_epoch = max(1, len(dataset) // datamodule.batch_size)
    for step in range(config.twin_steps):
        epoch, i = divmod(step, per_epoch)
        batch = _patches(dataset, epoch, range(i * datamodule.batch_size, (i + 1) * datamodule.batch_size), device)
        loss = _twin_loss(module, twin, teacher, hint_set, config, batch, step)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
    spent = time.perf_counter() - started
    report: dict[str, Any] = {"twin_steps": config.twin_steps, "twin_seconds": round(spent, 3)}
    report["twin_psnr"] = _val_psnr(twin, datamodule, config.eval_images, device)
    started = time.perf_counter()
    copy_twin(twin, student)
    spent += time.perf_counter() - started
    report["copied_psnr"] = _val_psnr(student, datamodule, config.eval_images, device)
    if config.calibrate:
        started = time.perf_counter()
        errors = calibrate_rates(student, calibration, channel_rates(twin, calibration, neuron_paths(twin)))
        spent += time.perf_counter() - started
        report["calibration_max_rate_error"] = round(max(errors.values()), 5)
        report["calibrated_psnr"] = _val_psnr(student, datamodule, config.eval_images, device)
    if config.weight_calibration:
        started = time.perf_counter()
        errors = calibrate_weights(student, twin, calibration, config.weight_calibration)
        spent += time.perf_counter() - started
        report["weight_calibration_mse"] = {k: round(v, 6) for k, v in errors.items()}
        report["weight_calibrated_psnr"] = _val_psnr(student, datamodule, config.eval_images, device)
    # scoring the stages is reporting, like validation: only the twin, the copy and the calibration count
    report["seconds"] = round(spent, 3)
    return report, twin
