"""DistillationModule: a frozen ANN teacher trains a spiking student through feature hints and its output."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import Tensor, nn

from distill.convergence import ConvergenceTargets
from distill.errors import CheckpointError, ConfigError, SpikeDistillError
from distill.hints import Hint, HintSet, flat_grad, grad_cap
from distill.losses import RestorationLoss, pixel_loss
from distill.modeling import count_parameters, run_model, save_hyperparameters_without_networks
from distill.module import RestorationBase
from distill.rate_regularizer import RateRegularizer
from distill.schedules import WeightSchedule, scheduled
from distill.warm_start import WarmStart
from spikedistill_core.checks import check_int


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
    checkpoints (its path and SHA-256 are stored instead and checked on resume). Each validation measures
    every hint's gradient against the restoration gradient on the latest training batch (`hint_history`).
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
        warm_start: WarmStart | None = None,
        rate_regularizer: RateRegularizer | None = None,
    ) -> None:
        """``warm_start``: train the student's ANN twin first (optionally from the teacher's weights and towards its
        output) and start the spiking training from its copy (distill/warm_start.py). ``rate_regularizer``: penalise
        the student's firing rates (distill/rate_regularizer.py)."""
        check_int("example_size", example_size, 1, " (side of the dry-run image that infers hint adapter "
                  "shapes; at least the model's down-sampling factor, e.g. 64)")
        super().__init__(restoration_loss, optimizer, scheduler, y_channel, crop_border, convergence, energy,
                         rate_regularizer)
        save_hyperparameters_without_networks(self, "teacher", "student")
        self.teacher = teacher.eval().requires_grad_(False)
        self.student = student
        self.output_distillation = output_distillation
        self.cache_teacher = cache_teacher
        self._teacher_cache: dict[str, tuple[Tensor, list[Tensor]]] = {}
        self.teacher_source = teacher_fingerprint(teacher)
        self.hint_set = build_hint_set(hints or [], teacher, student, example_size)
        self._last_train_batch: dict[str, Any] | None = None
        self.hint_history: list[list[dict[str, float]]] = [[] for _ in self.hint_set.hints]
        self.warm_start = warm_start

    # ---- roles --------------------------------------------------------------------------------------
    @property
    def network(self) -> nn.Module:
        return self.student

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

    def loss_parts(self, batch: dict[str, Any]) -> tuple[Tensor, Tensor | None, Tensor, list[Tensor]]:
        """Prediction, teacher output, restoration loss and each hint's unweighted loss on `batch`."""
        with self.hint_set.capture(self.student, "student") as taps:
            pred = run_model(self.student, batch["input"], batch["sigma"])
        # a teacher that only scores (no hint, no output distillation) costs no forward pass in training
        needed = bool(self.hint_set.hints) or self.output_distillation is not None
        teacher_out, teacher_feats = self.teacher_outputs(batch) if needed else (None, [])
        restoration, _ = self.restoration_loss(pred, batch["target"], self.global_step)
        per_hint = []
        if self.hint_set.hints:
            student_feats = [tap.take() for tap in taps]
            timesteps = getattr(self.student, "timesteps", 1)
            per_hint = self.hint_set.losses(student_feats, teacher_feats, timesteps, batch["input"], batch["target"])
        return pred, teacher_out, restoration, per_hint

    def student_parameters(self) -> list[nn.Parameter]:
        """The student's trainable parameters (shared by every loss term; adapters excluded)."""
        return [p for p in self.student.parameters() if p.requires_grad]

    def cap_factors(self, restoration: Tensor, weighted: list[Tensor]) -> list[Tensor | float]:
        """Per hint, the detached factor capping its gradient at `max_grad_ratio` x the restoration gradient's norm.

        1 for uncapped hints; the extra gradients are only computed when some hint has a cap.
        """
        ratios = [h.max_grad_ratio for h in self.hint_set.hints]
        if all(r is None for r in ratios):
            return [1.0] * len(ratios)
        params = self.student_parameters()
        restoration_norm = flat_grad(restoration, params).norm()
        return [1.0 if r is None else grad_cap(r, restoration_norm, flat_grad(w, params).norm())
                for r, w in zip(ratios, weighted)]

    def compute_losses(self, batch: dict[str, Any]) -> tuple[Tensor, dict[str, Tensor]]:
        step = self.global_step
        pred, teacher_out, restoration, per_hint = self.loss_parts(batch)
        terms = {"restoration": restoration}
        if per_hint:
            if self.training:
                self._last_train_batch = {k: v.detach() if isinstance(v, Tensor) else v for k, v in batch.items()}
            weighted = [w * loss for w, loss in zip(self.hint_set.weights(step), per_hint)]
            factors = self.cap_factors(restoration, weighted)
            terms["hint"] = sum(c * w for c, w in zip(factors, weighted))
            for i, (hint, value, factor) in enumerate(zip(self.hint_set.hints, per_hint, factors)):
                self.log(f"train/hint{i}", value, batch_size=pred.shape[0])
                if hint.max_grad_ratio is not None:
                    self.log(f"train/hint{i}_cap", factor, batch_size=pred.shape[0])
        od = self.output_distillation
        if od is not None:
            weight = scheduled(od.weight, od.schedule, step)
            terms["output_distillation"] = weight * pixel_loss(od.loss)(pred, teacher_out)
        return pred, terms

    # ---- hint diagnostics ---------------------------------------------------------------------------
    def hint_gradient_stats(self, batch: dict[str, Any]) -> list[dict[str, float]]:
        """Per hint on `batch`, in train mode: `grad_ratio`, the norm of the WEIGHTED hint gradient (current
        schedule weight and cap factor) over the restoration gradient's, and `grad_cosine`, the cosine of the
        two, both on the student's parameters. Leaves `.grad`, the optimizer, BN statistics and the CPU RNG as
        they were; works inside validation's inference mode."""
        params = self.student_parameters()
        buffers = [b for module in (self.student, self.hint_set) for b in module.buffers()]
        mode = self.training
        with torch.inference_mode(False), torch.enable_grad(), torch.random.fork_rng(devices=[]):
            saved = [b.clone() for b in buffers]
            batch = {k: v.clone() if isinstance(v, Tensor) else v for k, v in batch.items()}
            self.train()
            try:
                _, _, restoration, per_hint = self.loss_parts(batch)
                g_r = flat_grad(restoration, params)
                stats = []
                for hint, w, loss in zip(self.hint_set.hints, self.hint_set.weights(self.global_step), per_hint):
                    g_h = flat_grad(w * loss, params)
                    if hint.max_grad_ratio is not None:
                        g_h = g_h * grad_cap(hint.max_grad_ratio, g_r.norm(), g_h.norm())
                    stats.append({"grad_ratio": float(g_h.norm() / (g_r.norm() + 1e-12)),
                                  "grad_cosine": float(F.cosine_similarity(g_h, g_r, dim=0))})
            finally:
                self.train(mode)
                for b, value in zip(buffers, saved):
                    b.copy_(value)
        return stats

    def on_validation_epoch_end(self) -> None:
        if not self.trainer.sanity_checking and self._last_train_batch is not None:
            for history, stats in zip(self.hint_history, self.hint_gradient_stats(self._last_train_batch)):
                history.append({"step": self.global_step, **stats})
            self._last_train_batch = None
            for name, value in self.hint_summary().items():
                self.log(name, value, sync_dist=True)
        super().on_validation_epoch_end()

    def hint_summary(self) -> dict[str, float]:
        """`hints/{i}/grad_ratio` and `hints/{i}/grad_cosine` of the latest measurement (logged at each validation)."""
        summary = {}
        for i, history in enumerate(self.hint_history):
            if history:
                summary[f"hints/{i}/grad_ratio"] = history[-1]["grad_ratio"]
                summary[f"hints/{i}/grad_cosine"] = history[-1]["grad_cosine"]
        return summary

    def evaluation_outputs(self, batch: dict[str, Any]) -> dict[str, Tensor]:
        teacher_out, _ = self.teacher_outputs(batch, cache=True)
        return super().evaluation_outputs(batch) | {"teacher": teacher_out}

    def on_test_epoch_start(self) -> None:
        self._teacher_cache.clear()  # test images may share names with validation images

    # ---- accounting ---------------------------------------------------------------------------------
    def energy_models(self) -> dict[str, nn.Module]:
        return {"teacher": self.teacher, "student": self.student}

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
             "adapter": h.adapter, "loss": h.loss, "weight": h.weight, "normalize": h.normalize,
             "log_distance": h.log_distance, "max_grad_ratio": h.max_grad_ratio, "teacher_signal": h.teacher_signal,
             "teacher_tail": h.teacher_tail}
            for h in self.hint_set.hints
        ]
        empty = {"step": None, "grad_ratio": None, "grad_cosine": None}
        results["hint_diagnostics"] = [
            {"label": h.label, **(history[-1] if history else empty), "history": history}
            for h, history in zip(self.hint_set.hints, self.hint_history)
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
        checkpoint["hint_history"] = self.hint_history

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
        self.hint_history = checkpoint.get("hint_history", self.hint_history)
        state = checkpoint["state_dict"]
        for key, value in self.teacher.state_dict().items():
            state.setdefault(f"teacher.{key}", value)
