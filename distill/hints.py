"""Feature hints: capture teacher and student features by module path, adapt, align over time, compare.

Hooks live only for the duration of one forward pass (`capture`), so models never carry stale hooks.
Student features are `[T, B, ...]` (spiking layers) or `[B, ...]` (analog heads); teacher features `[B, ...]`.
Per hint, optionally: channel standardisation of both sides, a log-scaled distance, a cap on the hint's gradient
relative to the restoration gradient (applied by DistillationModule), the teacher module's input instead of its
output, and a teacher-tail loss (the adapted student feature re-enters the frozen teacher, CrossKD style).
"""
from __future__ import annotations

import difflib
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from typing import Iterator, Literal, get_args

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from distill.errors import ConfigError
from distill.modeling import run_model
from students.engine import is_recomputing
from distill.schedules import WeightSchedule, scheduled
from spikedistill_core.checks import check_number

Signal = Literal["spikes", "membrane", "current"]
TimeReduce = Literal["mean", "last", "per_step"]
AdapterKind = Literal["identity", "conv1x1", "conv_bn", "conv_stack"]
HintLossKind = Literal["mse", "l1", "cosine", "attention"]
Normalize = Literal["none", "channel", "bn"]
TeacherSignal = Literal["post", "pre"]

SIGNALS = get_args(Signal)
TIME_REDUCES = get_args(TimeReduce)
ADAPTERS = get_args(AdapterKind)
HINT_LOSSES = get_args(HintLossKind)
NORMALIZES = get_args(Normalize)
TEACHER_SIGNALS = get_args(TeacherSignal)
TAIL_LOSSES = ("mse", "l1")
#: epsilon of the channel standardisation (as BatchNorm's default)
NORM_EPS = 1e-5


@dataclass
class Hint:
    """One feature hint: student module `student` is adapted and pulled towards teacher module `teacher`.

    `student_signal`: the module's output ("spikes"), its input ("current", the pre-neuron current when the
    path is a neuron) or a neuron's membrane potential ("membrane").
    `teacher_signal`: the teacher module's output ("post") or its input ("pre", e.g. a ReLU's pre-activation).
    `normalize`: standardise each channel of both sides (student after the adapter, and teacher) over batch,
    time-merged steps and space before the distance, `(x - mean_c) / sqrt(var_c + 1e-5)` with the biased
    variance; "channel" computes it by hand, "bn" with torch's batch-norm kernel (affine-free, batch statistics,
    no running statistics: hint losses exist only in training). Either makes the adapter's bias a no-op.
    `log_distance`: the loss is `log(1 + d)` of the distance `d` (SRD's log-scaled distance).
    `max_grad_ratio`: every training step, the hint's (weighted) gradient on the student's parameters is scaled
    down to at most this multiple of the restoration gradient's norm (adapters are not counted).
    `teacher_tail`: instead of a feature distance, the adapted student feature replaces the teacher's feature and
    runs through the rest of the frozen teacher; `loss` ("l1" or "mse") compares that output with the clean
    target. Gradients flow through the teacher to the adapter and student. Teachers: DnCNN and DnCNNTwin.
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
    normalize: Normalize = "none"
    log_distance: bool = False
    max_grad_ratio: float | None = None
    teacher_signal: TeacherSignal = "post"
    teacher_tail: bool = False

    def __post_init__(self) -> None:
        for field, value, allowed in (
            ("student_signal", self.student_signal, SIGNALS),
            ("time_reduce", self.time_reduce, TIME_REDUCES),
            ("adapter", self.adapter, ADAPTERS),
            ("loss", self.loss, HINT_LOSSES),
            ("normalize", self.normalize, NORMALIZES),
            ("teacher_signal", self.teacher_signal, TEACHER_SIGNALS),
        ):
            if value not in allowed:
                raise ConfigError(f"hint {field}={value!r} is not one of {list(allowed)}")
        if isinstance(self.weight, bool) or not isinstance(self.weight, (int, float)) or self.weight < 0:
            raise ConfigError(f"hint weight={self.weight!r} must be a number >= 0")
        for field in ("log_distance", "teacher_tail"):
            if not isinstance(getattr(self, field), bool):
                raise ConfigError(f"hint {field}={getattr(self, field)!r} must be true or false")
        ratio = self.max_grad_ratio
        if ratio is not None:
            check_number("hint max_grad_ratio", ratio, 0, above=True, hint=" or null (no cap)")
        if self.teacher_tail and self.loss not in TAIL_LOSSES:
            raise ConfigError(
                f"hint {self.label}: teacher_tail compares the teacher's output image with the target, so "
                f"loss={self.loss!r} is not allowed; use one of {list(TAIL_LOSSES)}"
            )
        if self.teacher_tail and self.normalize != "none":
            raise ConfigError(
                f"hint {self.label}: teacher_tail feeds the adapted feature to the teacher at its own scale, so "
                f"normalize={self.normalize!r} is not allowed; use 'none'"
            )

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
        if signal == "current" and getattr(module, "inplace", False):
            raise ConfigError(
                f"the input of {path!r} cannot be captured: it is an in-place {type(module).__name__}, which "
                "overwrites its input with its output; tap the module before it instead"
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
            raise RuntimeError(f"module {self.path!r}, tapped by a hint or the rate regulariser, did not run in the "
                               "forward pass")
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


def normalize_feature(kind: Normalize, feature: Tensor) -> Tensor:
    """`[N, C, H, W]` with each channel standardised over N, H and W ("channel", "bn"), or as is ("none")."""
    if kind == "none":
        return feature
    if kind == "bn":
        return F.batch_norm(feature, None, None, training=True, eps=NORM_EPS)
    mean = feature.mean((0, 2, 3), keepdim=True)
    var = feature.var((0, 2, 3), correction=0, keepdim=True)
    return (feature - mean) / torch.sqrt(var + NORM_EPS)


def repeat_steps(images: Tensor, steps: int) -> Tensor:
    """`[B, ...]` repeated for each of `steps` time steps, time-merged: `[steps * B, ...]`."""
    return images.unsqueeze(0).expand(steps, *images.shape).flatten(0, 1)


def flat_grad(loss: Tensor, params: list[nn.Parameter]) -> Tensor:
    """d`loss`/d`params` as one flat vector (zeros where `loss` does not reach); the graph is kept."""
    grads = [None] * len(params)
    if loss.requires_grad and params:
        grads = torch.autograd.grad(loss, params, retain_graph=True, allow_unused=True)
    flat = [(p.new_zeros(p.shape) if g is None else g).flatten() for p, g in zip(params, grads)]
    return torch.cat(flat) if flat else loss.new_zeros(0)


def grad_cap(max_ratio: float, restoration_norm: Tensor, hint_norm: Tensor) -> Tensor:
    """The detached factor `min(1, max_ratio * |grad R| / |grad H|)` that caps a hint's gradient norm (1 when
    the hint has no gradient there, so its adapter still trains)."""
    factor = (max_ratio * restoration_norm / (hint_norm + 1e-12)).clamp(max=1.0)
    return torch.where(hint_norm > 0, factor, torch.ones_like(factor)).detach()


@dataclass(eq=False)
class TeacherTail:
    """The frozen teacher from a tapped feature on: `stages` in order, then the teacher's output step.

    Not a module, so the teacher's weights never join the adapters' parameters or state.
    """

    teacher: nn.Module
    stages: list[nn.Module]
    time_major: bool

    def __call__(self, feature: Tensor, image: Tensor) -> Tensor:
        """The teacher's output for `image` with `feature` (`[N, C, H, W]`) in place of its own at the tap."""
        h = feature.unsqueeze(0) if self.time_major else feature
        for stage in self.stages:
            h = stage(h)
        if self.time_major:  # a DnCNN twin: T = 1, so decoding is h[0]
            return self.teacher.restored(image, self.teacher.tail(h[0]))
        return image - h


def teacher_tail(teacher: nn.Module, path: str, signal: TeacherSignal) -> TeacherTail:
    """The part of `teacher` after module `path` (from it on, for `signal="pre"`), or a ConfigError."""
    from students.spiking_dncnn import SpikingDnCNN
    from teachers.dncnn import DnCNN

    name = type(teacher).__name__
    if isinstance(teacher, DnCNN) and type(teacher).forward is DnCNN.forward:
        stages = [(f"body.{n}", m) for n, m in teacher.body.named_children()]
    elif isinstance(teacher, SpikingDnCNN) and type(teacher).forward is SpikingDnCNN.forward and teacher.timesteps == 1:
        stages = [("head.neuron", teacher.head.neuron)] + [
            (f"blocks.{i}.{n}", m) for i, block in enumerate(teacher.blocks) for n, m in block.named_children()
        ]
    else:
        raise ConfigError(
            f"teacher_tail is not supported for the teacher {name}: its forward is not a flat sequence that the "
            "student feature can re-enter after the tapped module; supported teachers: DnCNN, DnCNNTwin (T = 1)"
        )
    names = [n for n, _ in stages]
    inside = [i for i, n in enumerate(names) if n == path or n.startswith(path + ".")]
    if not inside:
        raise ConfigError(
            f"teacher_tail: {path!r} is not on the main path of {name}; use one of {names} or a block holding them"
        )
    start = inside[0] if signal == "pre" else inside[-1] + 1
    return TeacherTail(teacher, [m for _, m in stages[start:]], isinstance(teacher, SpikingDnCNN))


class HintHead(nn.Module):
    """Adapter plus time alignment plus distance (or the teacher's tail and a pixel loss) for one hint."""

    def __init__(
        self, hint: Hint, student_shape: torch.Size, teacher_shape: torch.Size, tail: TeacherTail | None = None
    ) -> None:
        """`student_shape` is `[T, B, C, H, W]`, `teacher_shape` is `[B, C, H, W]`; `tail` for teacher-tail hints."""
        super().__init__()
        self.hint = hint
        self.tail = tail
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

    def forward(
        self, student: Tensor, teacher: Tensor, image: Tensor | None = None, target: Tensor | None = None
    ) -> Tensor:
        """Hint loss between a `[T, B, C, H, W]` student feature and a `[B, C, H, W]` teacher feature.

        A teacher-tail hint instead compares the teacher's output from the adapted feature with the clean
        `target`, `image` being the degraded input.
        """
        hint = self.hint
        if hint.time_reduce == "mean":
            student = student.mean(0, keepdim=True)
        elif hint.time_reduce == "last":
            student = student[-1:]
        steps = student.shape[0]
        adapted = self.adapter(student.flatten(0, 1))
        if adapted.shape[-2:] != teacher.shape[-2:]:
            adapted = F.interpolate(adapted, size=teacher.shape[-2:], mode="bilinear", align_corners=False)
        if self.tail is None:
            adapted = normalize_feature(hint.normalize, adapted)
            reference = normalize_feature(hint.normalize, repeat_steps(teacher, steps))
        elif image is None or target is None:
            raise ValueError(f"teacher-tail hint {hint.label} needs the input image and the clean target")
        else:
            adapted, reference = self.tail(adapted, repeat_steps(image, steps)), repeat_steps(target, steps)
        distance = hint_distance(hint.loss, adapted, reference)
        return torch.log1p(distance) if hint.log_distance else distance


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
        tails = [teacher_tail(teacher, h.teacher, h.teacher_signal) if h.teacher_tail else None for h in self.hints]
        self.heads = nn.ModuleList()
        if not self.hints:
            return
        s_feats, t_feats = self.dry_run(teacher, student, example)
        timesteps = getattr(student, "timesteps", 1)
        for hint, s, t, tail in zip(self.hints, s_feats, t_feats, tails):
            s_shape, t_shape = time_major(s, timesteps, example.shape[0]).shape, teacher_feature(t).shape
            self.heads.append(HintHead(hint, s_shape, t_shape, tail))

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
                h.student_signal if role == "student" else ("current" if h.teacher_signal == "pre" else "spikes"),
                getattr(h, role),
            )
            for h in self.hints
        ]
        with ExitStack() as stack:
            for tap in taps:
                stack.enter_context(tap.attached())
            yield taps

    def losses(
        self, student_feats: list[Tensor], teacher_feats: list[Tensor], timesteps: int,
        image: Tensor | None = None, target: Tensor | None = None,
    ) -> list[Tensor]:
        """Each hint's unweighted loss; teacher-tail hints need the input `image` and the clean `target`."""
        losses = []
        for head, s, t in zip(self.heads, student_feats, teacher_feats):
            t = teacher_feature(t)
            losses.append(head(time_major(s, timesteps, t.shape[0]), t, image, target))
        return losses

    def weights(self, step: int) -> list[float]:
        """Each hint's scheduled weight at `step`."""
        return [scheduled(h.weight, h.schedule, step) for h in self.hints]

    def forward(
        self, student_feats: list[Tensor], teacher_feats: list[Tensor], timesteps: int, step: int,
        image: Tensor | None = None, target: Tensor | None = None,
    ) -> tuple[Tensor, list[Tensor]]:
        """Weighted sum of hint losses at `step`, and each hint's unweighted loss."""
        losses = self.losses(student_feats, teacher_feats, timesteps, image, target)
        return sum(w * loss for w, loss in zip(self.weights(step), losses)), losses
