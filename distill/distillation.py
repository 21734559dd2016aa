"""DistillationModule: a frozen ANN teacher trains a spiking student through feature hints and its output."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import torch
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import Tensor, nn

from distill.convergence import ConvergenceTargets
from distill.energy import energy_ratio
from distill.errors import CheckpointError, ConfigError, SpikeDistillError
from distill.hints import Hint, HintSet
from distill.losses import RestorationLoss, pixel_loss
from distill.modeling import count_parameters, network_args_to_ignore, run_model
from distill.module import RestorationBase
from distill.schedules import WeightSchedule, scheduled


@dataclass
class OutputDistillation:
    """Student output pulled towards the teacher's output with a pixel loss."""

    weight: float = 1.0
    loss: Literal["l1", "mse", "charbonnier"] = "l1"
    schedule: WeightSchedule | None = None

    def __post_init__(self) -> None:
        pixel_loss(self.loss)
        if self.weight < 0:
            raise ConfigError(f"output_distillation weight={self.weight} must be >= 0")


def teacher_fingerprint(teacher: nn.Module) -> dict[str, str] | None:
    """Path and SHA-256 of the teacher's weight file, if it was loaded from one."""
    path = getattr(teacher, "checkpoint_path", None)
    if path is None:
        return None
    from teachers.weights import sha256_file

    return {"path": str(path), "sha256": sha256_file(path)}


def build_hint_set(hints: list[Hint], teacher: nn.Module, student: nn.Module, example_size: int) -> HintSet:
    """The HintSet, its adapters sized by a dry run of both models on a random ``example_size``² image.

    Teacher and student must take the same number of channels; a dry run that fails inside a model is
    reported as a ConfigError naming the example's shape.
    """
    t_channels, s_channels = getattr(teacher, "in_channels", None), getattr(student, "in_channels", None)
    if t_channels is not None and s_channels is not None and t_channels != s_channels:
        raise ConfigError(
            f"the teacher {type(teacher).__name__} takes in_channels={t_channels} but the student "
            f"{type(student).__name__} takes in_channels={s_channels}; both must see the same images "
            "(1 = gray, 3 = RGB)"
        )
    channels = s_channels or t_channels or 1
    example = torch.rand(1, channels, example_size, example_size)
    try:
        return HintSet(hints, teacher, student, example)
    except SpikeDistillError:
        raise
    except (RuntimeError, ValueError, TypeError, IndexError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
        raise ConfigError(
            f"the dry run that sizes the hint adapters failed on an example of shape {list(example.shape)} "
            f"({type(exc).__name__}: {first}); check the models' in_channels and example_size (models that "
            "down-sample need a multiple of their down-sampling factor)"
        ) from exc


class DistillationModule(RestorationBase):
    """Frozen `teacher` + spiking `student`; hints and output distillation add to the restoration loss.

    The teacher stays in eval mode, has no gradients, is outside the optimizer, and is left out of
    checkpoints (its path and SHA-256 are stored instead and checked on resume).
    """

    network_role = "student"
    scored_roles = ("input", "teacher", "student")

    def __init__(
        self,
        teacher: nn.Module,
        student: nn.Module,
        hints: list[Hint] | None = None,
        restoration_loss: RestorationLoss | None = None,
        output_distillation: OutputDistillation | None = None,
        optimizer: OptimizerCallable = torch.optim.Adam,
        scheduler: LRSchedulerCallable | None = None,
        y_channel: bool = False,
        crop_border: int = 0,
        convergence: ConvergenceTargets | None = None,
        energy: str | dict[str, float] = "45nm-fp32",
        cache_teacher: bool = True,
        example_size: int = 64,
    ) -> None:
        if isinstance(example_size, bool) or not isinstance(example_size, int) or example_size < 1:
            raise ConfigError(
                f"example_size={example_size!r} is not allowed: use an integer >= 1 (side of the dry-run image "
                "that infers hint adapter shapes; at least the model's down-sampling factor, e.g. 64)"
            )
        super().__init__(restoration_loss, optimizer, scheduler, y_channel, crop_border, convergence, energy)
        self.save_hyperparameters(ignore=network_args_to_ignore("teacher", "student"))
        self.teacher = teacher.eval().requires_grad_(False)
        self.student = student
        self.output_distillation = output_distillation
        self.cache_teacher = cache_teacher
        self._teacher_cache: dict[str, tuple[Tensor, list[Tensor]]] = {}
        self.teacher_source = teacher_fingerprint(teacher)
        self.hint_set = build_hint_set(hints or [], teacher, student, example_size)

    # ---- roles --------------------------------------------------------------------------------------
    @property
    def network(self) -> nn.Module:
        return self.student

    def reference_psnr(self) -> float | None:
        """The teacher's PSNR at the latest validation."""
        return self.val_scores.get("teacher", {}).get("psnr")

    def train(self, mode: bool = True) -> "DistillationModule":
        """Switch the student (and adapters) only: the teacher stays in eval mode, validation included."""
        super().train(mode)
        self.teacher.eval()
        return self

    def trainable_parameters(self) -> list[nn.Parameter]:
        return super().trainable_parameters() + list(self.hint_set.parameters())

    # ---- the teacher in the loop --------------------------------------------------------------------
    def teacher_outputs(self, batch: dict[str, Any], cache: bool = False) -> tuple[Tensor, list[Tensor]]:
        """Teacher prediction and hint features under no_grad; cached per image name for fixed inputs."""
        names = batch.get("name")
        if cache and self.cache_teacher and names is not None and all(n in self._teacher_cache for n in names):
            outs, feats = zip(*(self._teacher_cache[n] for n in names))
            device = batch["input"].device
            return torch.cat(outs).to(device), [torch.cat(f).to(device) for f in zip(*feats)]
        with torch.no_grad(), self.hint_set.capture(self.teacher, "teacher") as taps:
            out = run_model(self.teacher, batch["input"], batch["sigma"])
        feats = [tap.take() for tap in taps]
        if cache and self.cache_teacher and names is not None:
            for i, name in enumerate(names):
                self._teacher_cache[name] = (out[i : i + 1].cpu(), [f[i : i + 1].cpu() for f in feats])
        return out, feats

    def compute_losses(self, batch: dict[str, Any]) -> tuple[Tensor, dict[str, Tensor]]:
        step = self.global_step
        with self.hint_set.capture(self.student, "student") as taps:
            pred = run_model(self.student, batch["input"], batch["sigma"])
        teacher_out, teacher_feats = self.teacher_outputs(batch)
        restoration, _ = self.restoration_loss(pred, batch["target"], step)
        terms = {"restoration": restoration}
        if self.hint_set.hints:
            student_feats = [tap.take() for tap in taps]
            timesteps = getattr(self.student, "timesteps", 1)
            terms["hint"], per_hint = self.hint_set(student_feats, teacher_feats, timesteps, step)
            for i, value in enumerate(per_hint):
                self.log(f"train/hint{i}", value, batch_size=pred.shape[0])
        od = self.output_distillation
        if od is not None:
            weight = scheduled(od.weight, od.schedule, step)
            terms["output_distillation"] = weight * pixel_loss(od.loss)(pred, teacher_out)
        return pred, terms

    def evaluation_outputs(self, batch: dict[str, Any]) -> dict[str, Tensor]:
        teacher_out, _ = self.teacher_outputs(batch, cache=True)
        return super().evaluation_outputs(batch) | {"teacher": teacher_out}

    def on_test_epoch_start(self) -> None:
        super().on_test_epoch_start()
        self._teacher_cache.clear()  # test images may share names with validation images

    # ---- accounting ---------------------------------------------------------------------------------
    def energy_models(self) -> dict[str, nn.Module]:
        return {"teacher": self.teacher, "student": self.student}

    def energy_summary(self) -> dict[str, Any]:
        summary = super().energy_summary()
        if {"teacher", "student"} <= self.energy_reports.keys():
            summary["ratio"] = energy_ratio(self.energy_reports["teacher"], self.energy_reports["student"])
        return summary

    def parameter_counts(self) -> dict[str, Any]:
        teacher, student = count_parameters(self.teacher), count_parameters(self.student)
        return {
            "teacher": teacher,
            "student": student,
            "adapters": count_parameters(self.hint_set),
            "ratio": teacher / student,
        }

    def results(self) -> dict[str, Any]:
        results = super().results()
        results["teacher_source"] = self.teacher_source
        results["hints"] = [
            {"teacher": h.teacher, "student": h.student, "signal": h.student_signal, "time_reduce": h.time_reduce,
             "adapter": h.adapter, "loss": h.loss, "weight": h.weight}
            for h in self.hint_set.hints
        ]
        return results

    def export_student(self, path: str) -> None:
        """Save the student's weights alone (no teacher, no adapters), atomically."""
        from distill.io import atomic_path

        with atomic_path(path) as tmp:
            torch.save(self.student.state_dict(), tmp)

    # ---- checkpoints: student and adapters only -----------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_save_checkpoint(checkpoint)
        state = checkpoint["state_dict"]
        for key in [k for k in state if k.startswith("teacher.")]:
            del state[key]
        checkpoint["teacher_source"] = self.teacher_source

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_load_checkpoint(checkpoint)
        recorded = checkpoint.get("teacher_source")
        if recorded is not None:
            current = teacher_fingerprint(self.teacher)
            if current is None or current["sha256"] != recorded["sha256"]:
                raise CheckpointError(
                    f"the teacher weights changed since this run began: the checkpoint recorded "
                    f"{recorded['path']} with SHA-256 {recorded['sha256']}, now "
                    f"{current['path'] + ' has ' + current['sha256'] if current else 'the teacher has no weight file'}; "
                    "restore the original teacher file or start a new run"
                )
        state = checkpoint["state_dict"]
        for key, value in self.teacher.state_dict().items():
            state.setdefault(f"teacher.{key}", value)
