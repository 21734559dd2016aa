"""Spiking neurons on snntorch conventions, multi-step: ``forward(current [T, B, ...]) -> [T, B, ...]``.

* :class:`LIF` is ``snntorch.Leaky`` (default ``reset_delay=True``):
  ``U[t] = beta U[t-1] + I[t] - S[t-1] theta`` (subtract) and ``S[t] = H(U[t] - theta)``.
* :class:`IF` is the same with ``beta = 1`` (no leak).
* :class:`MultiThresholdIF` is Spiking-UNet's neuron: an IF membrane checked against the thresholds
  ``levels * theta`` (default ``(2, 1, 0.5, 0.25) * theta``) in order each step; it emits the sum of
  the thresholds that fired and soft-resets by that sum.

The recurrence over T runs as one fused autograd node (:mod:`students.engine`). State lives only
inside one ``forward`` call (every call starts from rest), so successive calls are independent.

Attributes (see CONTRIBUTING.md): ``record_membrane`` -> ``membrane`` ``[T, B, ...]`` (pre-reset,
differentiable so hints can use it); ``probe`` -> ``spike_count`` and ``elements`` (``[T]`` int64,
non-zero outputs and outputs per step, accumulated over calls until :func:`students.probes.reset_probes`).
"""
from __future__ import annotations

import math
from typing import Any, Sequence

import torch
from torch import Tensor, nn

from spikedistill_core.errors import ConfigError

from . import engine
from .surrogates import Surrogate, get_surrogate

__all__ = [
    "SpikingNeuron",
    "LIF",
    "IF",
    "MultiThresholdIF",
    "QCFS",
    "RESET_MECHANISMS",
    "NEURON_KINDS",
    "build_neuron",
]

RESET_MECHANISMS = ("subtract", "zero")
NEURON_KINDS = ("lif", "if", "multi_threshold", "relu")


def _check_threshold(threshold: float, owner: str) -> float:
    try:
        value = float(threshold)
    except (TypeError, ValueError):
        raise ConfigError(f"{owner}: threshold={threshold!r} is not allowed; it must be a number > 0") from None
    if not math.isfinite(value) or value <= 0:
        raise ConfigError(f"{owner}: threshold={threshold!r} is not allowed; it must be a finite number > 0")
    return value


def _check_beta(beta: float, owner: str) -> float:
    try:
        value = float(beta)
    except (TypeError, ValueError):
        raise ConfigError(f"{owner}: beta={beta!r} is not allowed; it must be a number in [0, 1]") from None
    if not (0.0 <= value <= 1.0):
        raise ConfigError(f"{owner}: beta={beta!r} is not allowed; it must be in [0, 1]")
    return value


def _check_reset(reset_mechanism: str, owner: str, allowed: Sequence[str] = RESET_MECHANISMS) -> str:
    if reset_mechanism not in allowed:
        raise ConfigError(
            f"{owner}: reset_mechanism={reset_mechanism!r} is not allowed; use one of {list(allowed)}"
        )
    return reset_mechanism


class SpikingNeuron(nn.Module):
    """Base class: threshold, surrogate, membrane recording, probes and chunk carry-over.

    Args (every neuron takes them, by keyword):
        threshold: firing threshold > 0.
        spike_grad: a :class:`~students.surrogates.Surrogate` or one of
            ``"atan"``, ``"fast_sigmoid"``, ``"triangle"``, ``"straight_through"``.
        reset_mechanism: ``"subtract"`` (soft) or ``"zero"`` (hard); the reset uses the previous
            step's spike and is detached from the graph (snntorch defaults).
        learn_threshold: make the threshold a scalar ``nn.Parameter``.
        record_membrane: keep ``self.membrane`` ``[T, B, ...]`` from the last forward.
        init_membrane: membrane at the start of every forward, as a fraction of threshold in [0, 1)
            (default 0: from rest, as snntorch). Treated as a constant (no gradient).
    """

    def __init__(
        self,
        threshold: float = 1.0,
        spike_grad: "str | Surrogate" = "atan",
        reset_mechanism: str = "subtract",
        learn_threshold: bool = False,
        record_membrane: bool = False,
        init_membrane: float = 0.0,
    ):
        super().__init__()
        owner = type(self).__name__
        th = torch.tensor(_check_threshold(threshold, owner), dtype=torch.float32)
        if learn_threshold:
            self.threshold = nn.Parameter(th)
        else:
            self.register_buffer("threshold", th)
        self.spike_grad: Surrogate = get_surrogate(spike_grad)
        self.reset_mechanism = _check_reset(reset_mechanism, owner, self._allowed_resets())
        self.learn_threshold = bool(learn_threshold)
        self.record_membrane = bool(record_membrane)
        init = float(init_membrane)
        if not (0.0 <= init < 1.0):
            raise ConfigError(
                f"{owner}: init_membrane={init_membrane!r} is not allowed; it must be in [0, 1) (a fraction of threshold)"
            )
        self.init_membrane = init
        self.membrane: Tensor | None = None
        self.probe = False
        self.spike_count: Tensor | None = None
        self.elements: Tensor | None = None
        self._carry = None  # set by engine.run_over_time while a chunk runs

    @classmethod
    def _allowed_resets(cls) -> Sequence[str]:
        return RESET_MECHANISMS

    # subclasses: (spikes, membrane) from current [T, ...] and an optional initial membrane
    def _recurrence(self, current: Tensor, initial: Tensor | None) -> tuple[Tensor, Tensor]:
        raise NotImplementedError

    def forward(self, current: Tensor) -> Tensor:
        if current.dim() < 2:
            raise ValueError(f"{type(self).__name__} expects [T, B, ...], got shape {tuple(current.shape)}")
        carry = self._carry
        initial = None if carry is None else carry.state_in
        if initial is None and self.init_membrane:
            # a constant start (no gradient through it), e.g. half a quantum for converted networks
            # in tensor ops, so that tracing and torch.export keep it (the float64 product, as float() gave)
            start = (self.threshold.detach().cpu().double() * self.init_membrane).to(current)
            initial = start.expand_as(current[0])
        spikes, membrane = self._recurrence(current, initial)
        if carry is None:
            self.membrane = membrane if self.record_membrane else None
            if self.probe:
                self._count(spikes, 0)
        else:
            carry.state_out = membrane[-1]
            if carry.record:
                if self.record_membrane:
                    carry.parts.append(membrane)
                if self.probe:
                    self._count(spikes, carry.offset)
        return spikes

    @torch.no_grad()
    def _count(self, spikes: Tensor, offset: int) -> None:
        T = spikes.shape[0]
        counts = (spikes != 0).reshape(T, -1).sum(1).to(torch.int64).cpu()
        per_step = spikes[0].numel()
        need = offset + T
        if self.spike_count is None or self.spike_count.numel() < need:
            grown_c = torch.zeros(need, dtype=torch.int64)
            grown_e = torch.zeros(need, dtype=torch.int64)
            if self.spike_count is not None:
                n = self.spike_count.numel()
                grown_c[:n] = self.spike_count
                grown_e[:n] = self.elements
            self.spike_count, self.elements = grown_c, grown_e
        self.spike_count[offset:need] += counts
        self.elements[offset:need] += per_step

    def reset_probes(self) -> None:
        self.spike_count = None
        self.elements = None

    def firing_rate(self) -> float:
        """Non-zero outputs / outputs since the last reset (NaN if nothing was counted)."""
        if self.elements is None or int(self.elements.sum()) == 0:
            return float("nan")
        return float(self.spike_count.sum()) / float(self.elements.sum())

    def __getstate__(self):
        state = self.__dict__.copy()
        state["membrane"] = None  # a graph-attached tensor; never part of a pickled model
        state["_carry"] = None
        return state

    def extra_repr(self) -> str:
        return (
            f"threshold={float(self.threshold.detach()):g}, spike_grad={self.spike_grad!r}, "
            f"reset_mechanism={self.reset_mechanism!r}, learn_threshold={self.learn_threshold}"
            + (f", init_membrane={self.init_membrane:g}" if self.init_membrane else "")
        )


class LIF(SpikingNeuron):
    """Leaky integrate-and-fire (``snntorch.Leaky`` semantics, fused over T).

    Args:
        beta: membrane decay in [0, 1] (clamped to [0, 1] in forward when learnable, as snntorch).
        learn_beta: make beta a scalar ``nn.Parameter``.
        **kwargs: the :class:`SpikingNeuron` arguments (``threshold``, ``reset_mechanism``, ...).
    """

    def __init__(self, beta: float = 0.9, learn_beta: bool = False, **kwargs: Any):
        super().__init__(**kwargs)
        b = torch.tensor(_check_beta(beta, type(self).__name__), dtype=torch.float32)
        if learn_beta:
            self.beta = nn.Parameter(b)
        else:
            self.register_buffer("beta", b)
        self.learn_beta = bool(learn_beta)

    def _recurrence(self, current, initial):
        return engine.lif_recurrence(
            current, self.beta, self.threshold, self.spike_grad, self.reset_mechanism, initial
        )

    def extra_repr(self) -> str:
        return f"beta={float(self.beta.detach()):g}, learn_beta={self.learn_beta}, " + super().extra_repr()


class IF(SpikingNeuron):
    """Integrate-and-fire: :class:`LIF` without leak (``beta = 1``, a fixed buffer)."""

    def __init__(self, **kwargs: Any):
        super().__init__(**kwargs)
        self.register_buffer("beta", torch.tensor(1.0), persistent=False)

    def _recurrence(self, current, initial):
        return engine.lif_recurrence(
            current, self.beta, self.threshold, self.spike_grad, self.reset_mechanism, initial
        )


class MultiThresholdIF(SpikingNeuron):
    """Spiking-UNet's multi-threshold IF neuron (graded output ``theta * sum of fired levels``).

    Args:
        levels: the threshold multipliers, checked largest first; default ``(2, 1, 0.5, 0.25)``.
        **kwargs: the :class:`SpikingNeuron` arguments: ``threshold`` is the base theta > 0 (the neuron
            checks ``levels * theta`` in order); ``spike_grad`` is used per level (see :mod:`students.engine`
            for the exact backward); ``reset_mechanism`` may only be ``"subtract"`` (soft reset by the
            emitted sum); for converted networks ``init_membrane`` at half the smallest level (``0.125`` with
            the default levels) removes most of the quantisation bias (see
            :func:`students.conversion.convert_unet`).
    """

    def __init__(self, levels: Sequence[float] = engine.DEFAULT_LEVELS, **kwargs: Any):
        super().__init__(**kwargs)
        lv = tuple(float(v) for v in levels)
        if not lv or any(not math.isfinite(v) or v <= 0 for v in lv) or list(lv) != sorted(lv, reverse=True):
            raise ConfigError(
                f"MultiThresholdIF: levels={tuple(levels)!r} is not allowed; "
                "use a non-empty, descending sequence of positive numbers such as (2, 1, 0.5, 0.25)"
            )
        self.levels = lv

    @classmethod
    def _allowed_resets(cls) -> Sequence[str]:
        return ("subtract",)

    def _recurrence(self, current, initial):
        return engine.multithreshold_recurrence(current, self.threshold, self.spike_grad, self.levels, initial)

    def extra_repr(self) -> str:
        return f"levels={self.levels}, " + super().extra_repr()


class QCFS(nn.Module):
    """Quantisation-clip-floor-shift activation (Bu et al., ICLR 2022) for spike-aware ANN twins.

    ``y = clamp(floor(L * z / threshold + 0.5), 0, L) / L``: the rate (in [0, 1], spikes per step) that
    an IF neuron with this ``threshold``, soft reset and a start at half the threshold emits over
    T = L steps of the constant current ``z``. So a twin trained with it converts to IF neurons by a
    plain weight copy (:func:`students.transfer.copy_twin`). The backward is the straight-through
    gradient of ``clamp(z / threshold, 0, 1)`` with slope ``leak`` outside [0, 1]: without it a layer
    that falls silent (or saturates) during training passes no gradient and never recovers, which left
    a twin at the identity in one of our seeds. Works on any shape (``[T, B, ...]`` included).

    Args:
        levels: L, the student's time steps.
        threshold: the matching IF threshold (> 0).
        learn_threshold: make the threshold a scalar ``nn.Parameter``.
        leak: gradient slope outside the linear range, in [0, 1) (the forward is unchanged).
    """

    def __init__(self, levels: int = 4, threshold: float = 1.0, learn_threshold: bool = False, leak: float = 0.01):
        super().__init__()
        self.levels = engine.check_timesteps(levels, "QCFS levels")
        if not 0.0 <= leak < 1.0:
            raise ConfigError(f"QCFS: leak={leak!r} is not allowed; it must be in [0, 1)")
        self.leak = float(leak)
        th = torch.tensor(_check_threshold(threshold, "QCFS"), dtype=torch.float32)
        if learn_threshold:
            self.threshold = nn.Parameter(th)
        else:
            self.register_buffer("threshold", th)

    def forward(self, z: Tensor) -> Tensor:
        u = z / self.threshold
        clipped = u.clamp(0.0, 1.0)
        soft = clipped + self.leak * (u - clipped)  # the gradient path
        hard = torch.floor(clipped.detach() * self.levels + 0.5) / self.levels
        return soft + (hard - soft).detach()

    def extra_repr(self) -> str:
        return f"levels={self.levels}, threshold={float(self.threshold.detach()):g}, leak={self.leak:g}"


def build_neuron(
    kind: str,
    *,
    beta: float = 0.9,
    threshold: float = 1.0,
    spike_grad: "str | Surrogate" = "atan",
    reset_mechanism: str = "subtract",
    learn_beta: bool = False,
    learn_threshold: bool = False,
    init_membrane: float = 0.0,
    levels: Sequence[float] | None = None,
) -> nn.Module:
    """A neuron by name: ``"lif"``, ``"if"``, ``"multi_threshold"``, or ``"relu"`` (the ANN twin).

    ``beta`` is LIF's leak and is unused by the other kinds; asking to learn it there is an error. ``levels`` is the
    multi-threshold ladder (None: its default) and is an error for the other kinds.
    """
    if learn_beta and kind in ("if", "multi_threshold"):
        raise ConfigError(f"learn_beta=True needs neuron='lif' (beta is the LIF leak); neuron={kind!r} has no beta")
    if levels is not None and kind != "multi_threshold":
        raise ConfigError(f"neuron_levels={list(levels)!r} needs neuron='multi_threshold'; neuron={kind!r} has one threshold")
    common = dict(threshold=threshold, spike_grad=spike_grad, reset_mechanism=reset_mechanism,
                  learn_threshold=learn_threshold, init_membrane=init_membrane)
    if kind == "lif":
        return LIF(beta=beta, learn_beta=learn_beta, **common)
    if kind == "if":
        return IF(**common)
    if kind == "multi_threshold":
        return MultiThresholdIF(**common) if levels is None else MultiThresholdIF(levels, **common)
    if kind == "relu":
        return nn.ReLU()
    raise ConfigError(f"neuron={kind!r} is not allowed; use one of {list(NEURON_KINDS)}")
