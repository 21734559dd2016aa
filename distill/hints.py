"""Feature hints: capture teacher and student features by module path, adapt, align over time, compare.

Hooks live only for the duration of one forward pass (`capture`), so models never carry stale hooks.
Student features are `[T, B, ...]` (spiking layers) or `[B, ...]` (analog heads); teacher features `[B, ...]`.
"""
from __future__ import annotations

import difflib
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from typing import Iterator, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from distill.errors import ConfigError
from distill.modeling import run_model
from students.engine import is_recomputing
from distill.schedules import WeightSchedule, scheduled

Signal = Literal["spikes", "membrane", "current"]
TimeReduce = Literal["mean", "last", "per_step"]
AdapterKind = Literal["identity", "conv1x1", "conv_bn", "conv_stack"]
HintLossKind = Literal["mse", "l1", "cosine", "attention"]

SIGNALS = ("spikes", "membrane", "current")
TIME_REDUCES = ("mean", "last", "per_step")
ADAPTERS = ("identity", "conv1x1", "conv_bn", "conv_stack")
HINT_LOSSES = ("mse", "l1", "cosine", "attention")


@dataclass
class Hint:
    """One feature hint: student module `student` is adapted and pulled towards teacher module `teacher`.

    `student_signal`: the module's output ("spikes"), its input ("current", the pre-neuron current when the
    path is a neuron) or a neuron's membrane potential ("membrane").
    """

    teacher: str
    student: str
    student_signal: Signal = "spikes"
    time_reduce: TimeReduce = "mean"
    adapter: AdapterKind = "conv1x1"
    loss: HintLossKind = "mse"
    weight: float = 1.0
    schedule: WeightSchedule | None = None
    resize: bool = False

    def __post_init__(self) -> None:
        for field, value, allowed in (
            ("student_signal", self.student_signal, SIGNALS),
            ("time_reduce", self.time_reduce, TIME_REDUCES),
            ("adapter", self.adapter, ADAPTERS),
            ("loss", self.loss, HINT_LOSSES),
        ):
            if value not in allowed:
                raise ConfigError(f"hint {field}={value!r} is not one of {list(allowed)}")
        if isinstance(self.weight, bool) or not isinstance(self.weight, (int, float)) or self.weight < 0:
            raise ConfigError(f"hint weight={self.weight!r} must be a number >= 0")

    @property
    def label(self) -> str:
        """A readable name for logs: `student->teacher`."""
        return f"{self.student}->{self.teacher}"


def resolve_module(model: nn.Module, path: str, role: str) -> nn.Module:
    """The submodule at `path`, or a ConfigError listing the closest valid paths of `model`."""
    modules = dict(model.named_modules())
    modules.pop("", None)
    if path in modules:
        return modules[path]
    close = difflib.get_close_matches(path, list(modules), n=6, cutoff=0.4)
    if not close:
        close = list(modules)[:6]
    raise ConfigError(
        f"{role} {type(model).__name__} has no module {path!r}; closest valid paths: {close} "
        f"({len(modules)} paths in all, see `dict(model.named_modules())`)"
    )


class FeatureTap:
    """Captures one signal of one module through a forward hook while attached.

    With time-chunked students (`checkpoint_segments`) the hook fires once per chunk: chunks are joined
    along time, recompute passes inside backward are ignored, and the membrane is read after the whole
    forward (the engine joins it).
    """

    def __init__(self, module: nn.Module, signal: Signal, path: str) -> None:
        if signal == "membrane" and not hasattr(module, "record_membrane"):
            raise ConfigError(
                f"student_signal='membrane' needs a spiking neuron, but {path!r} is a {type(module).__name__}; "
                "point the hint at a neuron module or use 'spikes' / 'current'"
            )
        self.module, self.signal, self.path = module, signal, path
        self.parts: list[Tensor] = []

    def _hook(self, module: nn.Module, args: tuple, output: Tensor) -> None:
        if is_recomputing():
            return
        self.parts.append(args[0] if self.signal == "current" else output)

    @contextmanager
    def attached(self) -> Iterator["FeatureTap"]:
        """Register the hook (and membrane recording) for the duration of the block."""
        self.parts = []
        handle = self.module.register_forward_hook(self._hook)
        previous = getattr(self.module, "record_membrane", None)
        if self.signal == "membrane":
            self.module.record_membrane = True
        try:
            yield self
        finally:
            handle.remove()
            if self.signal == "membrane":
                self.module.record_membrane = previous

    def take(self) -> Tensor:
        """The captured tensor; an error naming the module if its forward never ran."""
        if not self.parts:
            raise RuntimeError(f"hint module {self.path!r} did not run in the forward pass")
        parts, self.parts = self.parts, []
        if self.signal == "membrane":
            membrane, self.module.membrane = self.module.membrane, None  # do not keep the graph alive
            return membrane
        return parts[0] if len(parts) == 1 else torch.cat(parts, 0)


def time_major(feature: Tensor, timesteps: int, batch: int) -> Tensor:
    """View a student feature as `[T, B, ...]`; analog features `[B, ...]` get T = 1."""
    if feature.dim() >= 5 and feature.shape[:2] == (timesteps, batch):
        return feature
    if timesteps > 1 and feature.shape[0] == timesteps * batch:
        return feature.unflatten(0, (timesteps, batch))
    return feature.unsqueeze(0)


def teacher_feature(feature: Tensor) -> Tensor:
    """A teacher feature as `[B, ...]`: ANN twins of students run time-major with T = 1."""
    return feature.mean(0) if feature.dim() == 5 else feature


def build_adapter(kind: AdapterKind, student_channels: int, teacher_channels: int) -> nn.Module:
    """The small module that maps student channels to teacher channels."""
    if kind == "identity":
        return nn.Identity()
    if kind == "conv1x1":
        return nn.Conv2d(student_channels, teacher_channels, 1)
    if kind == "conv_bn":
        return nn.Sequential(nn.Conv2d(student_channels, teacher_channels, 1, bias=False), nn.BatchNorm2d(teacher_channels))
    return nn.Sequential(
        nn.Conv2d(student_channels, teacher_channels, 3, padding=1),
        nn.ReLU(inplace=True),
        nn.Conv2d(teacher_channels, teacher_channels, 3, padding=1),
    )


def attention_map(feature: Tensor) -> Tensor:
    """Spatial attention of Zagoruyko & Komodakis: L2-normalised channel mean of squared activations."""
    return F.normalize(feature.pow(2).mean(1).flatten(1), dim=1)


def hint_distance(kind: HintLossKind, student: Tensor, teacher: Tensor) -> Tensor:
    """Distance between `[N, C, H, W]` features (attention transfer ignores channels)."""
    if kind == "mse":
        return F.mse_loss(student, teacher)
    if kind == "l1":
        return F.l1_loss(student, teacher)
    if kind == "cosine":
        return 1.0 - F.cosine_similarity(student, teacher, dim=1).mean()
    return (attention_map(student) - attention_map(teacher)).pow(2).sum(1).mean()


class HintHead(nn.Module):
    """Adapter plus time alignment plus distance for one hint."""

    def __init__(self, hint: Hint, student_shape: torch.Size, teacher_shape: torch.Size) -> None:
        """`student_shape` is `[T, B, C, H, W]`, `teacher_shape` is `[B, C, H, W]`."""
        super().__init__()
        self.hint = hint
        if len(student_shape) != 5 or len(teacher_shape) != 4:
            raise ConfigError(
                f"hint {hint.label}: needs image features [C, H, W], got student {tuple(student_shape[2:])} "
                f"and teacher {tuple(teacher_shape[1:])}"
            )
        s_channels, t_channels = student_shape[2], teacher_shape[1]
        channel_free = hint.loss == "attention"
        if hint.adapter == "identity" and s_channels != t_channels and not channel_free:
            raise ConfigError(
                f"hint {hint.label}: adapter 'identity' cannot map {s_channels} student channels to "
                f"{t_channels} teacher channels; use one of {list(ADAPTERS[1:])}"
            )
        if student_shape[-2:] != teacher_shape[-2:] and not hint.resize:
            raise ConfigError(
                f"hint {hint.label}: student feature {tuple(student_shape[2:])} and teacher feature "
                f"{tuple(teacher_shape[1:])} differ spatially; set resize: true or pick layers of one resolution"
            )
        self.adapter = nn.Identity() if channel_free and hint.adapter == "identity" else build_adapter(
            hint.adapter, s_channels, t_channels
        )

    def forward(self, student: Tensor, teacher: Tensor) -> Tensor:
        """Hint loss between a `[T, B, C, H, W]` student feature and a `[B, C, H, W]` teacher feature."""
        reduce = self.hint.time_reduce
        if reduce == "mean":
            student = student.mean(0, keepdim=True)
        elif reduce == "last":
            student = student[-1:]
        steps = student.shape[0]
        adapted = self.adapter(student.flatten(0, 1))
        if adapted.shape[-2:] != teacher.shape[-2:]:
            adapted = F.interpolate(adapted, size=teacher.shape[-2:], mode="bilinear", align_corners=False)
        target = teacher.unsqueeze(0).expand(steps, *teacher.shape).flatten(0, 1)
        return hint_distance(self.hint.loss, adapted, target)


class HintSet(nn.Module):
    """All hints of a run: resolves paths, infers adapters by a dry run, and computes the weighted hint loss.

    The teacher and student are not submodules here; they are passed to `capture` and the dry run.
    """

    def __init__(self, hints: list[Hint], teacher: nn.Module, student: nn.Module, example: Tensor) -> None:
        super().__init__()
        self.hints = list(hints)
        for hint in self.hints:
            resolve_module(teacher, hint.teacher, "teacher")
            resolve_module(student, hint.student, "student")
        self.heads = nn.ModuleList()
        if not self.hints:
            return
        s_feats, t_feats = self.dry_run(teacher, student, example)
        timesteps = getattr(student, "timesteps", 1)
        for hint, s, t in zip(self.hints, s_feats, t_feats):
            self.heads.append(HintHead(hint, time_major(s, timesteps, example.shape[0]).shape, teacher_feature(t).shape))

    def dry_run(self, teacher: nn.Module, student: nn.Module, example: Tensor) -> tuple[list[Tensor], list[Tensor]]:
        """Run both models once on `example` to learn every hint's feature shapes."""
        states = [(m, m.training) for model in (teacher, student) for m in model.modules()]
        try:
            teacher.eval(), student.eval()
            sigma = example.new_zeros(example.shape[0])
            with torch.no_grad():
                with self.capture(student, "student") as s_taps:
                    run_model(student, example, sigma)
                with self.capture(teacher, "teacher") as t_taps:
                    run_model(teacher, example, sigma)
            return [t.take() for t in s_taps], [t.take() for t in t_taps]
        finally:
            for module, mode in states:
                module.training = mode

    @contextmanager
    def capture(self, model: nn.Module, role: Literal["teacher", "student"]) -> Iterator[list[FeatureTap]]:
        """Attach one tap per hint to `model` for the duration of the block."""
        taps = [
            FeatureTap(
                resolve_module(model, getattr(h, role), role),
                h.student_signal if role == "student" else "spikes",
                getattr(h, role),
            )
            for h in self.hints
        ]
        with ExitStack() as stack:
            for tap in taps:
                stack.enter_context(tap.attached())
            yield taps

    def forward(
        self, student_feats: list[Tensor], teacher_feats: list[Tensor], timesteps: int, step: int
    ) -> tuple[Tensor, list[Tensor]]:
        """Weighted sum of hint losses at `step`, and each hint's unweighted loss."""
        losses = []
        total = None
        for head, s, t in zip(self.heads, student_feats, teacher_feats):
            t = teacher_feature(t)
            loss = head(time_major(s, timesteps, t.shape[0]), t)
            losses.append(loss)
            weighted = scheduled(head.hint.weight, head.hint.schedule, step) * loss
            total = weighted if total is None else total + weighted
        return total, losses
