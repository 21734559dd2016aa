"""The multi-step engine: tensors are ``[T, B, ...]``.

* :class:`TimeDistributed` runs a stateless layer (conv, BN, pooling, upsampling) once over the
  folded ``T*B`` batch. A time-broadcast input (stride 0 along T, as produced by direct encoding) is
  run once on ``B`` and the result broadcast again, since every step would compute the same thing.
* :func:`lif_recurrence` and :func:`multithreshold_recurrence` run a neuron's recurrence over all T
  as ONE ``torch.autograd.Function`` with a hand-written backward (BPTT through the membrane with the
  surrogate derivative). Forward saves only the membrane sequence (pre-spike, before reset), which
  is also the input of the surrogate; spikes are recomputed from it in backward when needed.
* :func:`run_over_time` optionally splits T into chunks run under ``torch.utils.checkpoint`` with
  the membrane carried (and differentiated) across chunks, bounding BPTT memory for long T.
* While ``torch.jit.trace`` or ``torch.export`` records a forward (:func:`is_recording`), the recurrences
  run as plain tensor ops instead (a Python autograd node cannot be saved, and ``float(beta)`` cannot be
  read from a traced buffer): the same forward numbers, no custom backward.

Semantics (identical to ``snntorch.Leaky`` with its defaults, ``reset_delay=True``)::

    r[t] = H(U[t-1] - theta)                      # reset from the previous step, detached
    U[t] = beta * U[t-1] + I[t] - r[t] * theta    # reset_mechanism="subtract"
    U[t] = beta * (1 - r[t]) * U[t-1] + I[t]      # reset_mechanism="zero"
    S[t] = H(U[t] - theta),  dS/dU = surrogate'(U[t] - theta)

with ``U[-1] = 0`` (every forward starts from rest), ``beta`` clamped to [0, 1] in the forward pass
(as snntorch does), and gradients flowing to ``theta`` both through the spike and through the
``- r * theta`` term (``r`` itself is detached). ``U`` recorded as the membrane is ``U[t]`` above:
the potential that is compared with the threshold, before the reset that the spike causes.
"""
from __future__ import annotations

import contextlib
import os
import warnings
from typing import Callable, Iterator, Sequence

import torch
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from spikedistill_core.checks import check_int

from .surrogates import Surrogate

__all__ = [
    "TimeDistributed",
    "lif_recurrence",
    "multithreshold_recurrence",
    "multithreshold_quantize",
    "run_over_time",
    "is_recomputing",
    "is_time_broadcast",
    "broadcast_time",
    "check_timesteps",
    "is_recording",
    "DEFAULT_LEVELS",
]

DEFAULT_LEVELS: tuple[float, ...] = (2.0, 1.0, 0.5, 0.25)


def check_timesteps(timesteps: int, owner: str = "timesteps") -> int:
    """Validate T (an int >= 1) and return it."""
    return check_int(owner, timesteps)


# --------------------------------------------------------------------------------------------
# time broadcasting and TimeDistributed


def broadcast_time(x: Tensor, timesteps: int) -> Tensor:
    """``[B, ...] -> [T, B, ...]`` as a stride-0 view (no copy)."""
    return x.unsqueeze(0).expand(timesteps, *x.shape)


def is_time_broadcast(x: Tensor) -> bool:
    """True when ``x[t]`` is the same memory for every t (a stride-0 view along T, with T > 1)."""
    return x.dim() >= 1 and x.shape[0] > 1 and x.stride(0) == 0


class TimeDistributed(nn.Module):
    """Run a stateless ``layer`` over ``[T, B, ...]`` as one call on the folded ``[T*B, ...]`` batch.

    The wrapped layer is the child ``layer`` (so its parameters are ``<path>.layer.weight``).
    If the input is time-broadcast (see :func:`is_time_broadcast`) the layer runs once on ``B`` and
    the output is broadcast over T again; outputs are identical, only batch-norm *running*
    statistics see ``B`` instead of ``T*B`` samples (the same mean; variance debiasing differs by
    ``n/(n-1)`` with n the sample count).
    """

    def __init__(self, layer: nn.Module):
        super().__init__()
        self.layer = layer

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() < 3:
            raise ValueError(f"TimeDistributed expects [T, B, ...], got shape {tuple(x.shape)}")
        T, B = x.shape[0], x.shape[1]
        if is_time_broadcast(x):
            y = self.layer(x[0])
            return broadcast_time(y, T)
        y = self.layer(x.reshape(T * B, *x.shape[2:]))
        return y.reshape(T, B, *y.shape[1:])


# --------------------------------------------------------------------------------------------
# recompute flag (checkpointing re-runs forwards inside backward)

_RECOMPUTE_DEPTH = 0


def is_recomputing() -> bool:
    """True while :func:`run_over_time` re-runs a chunk inside backward (checkpoint recompute).

    Forward hooks that accumulate state (feature capture, counters) should ignore such calls.
    """
    return _RECOMPUTE_DEPTH > 0


@contextlib.contextmanager
def _recomputing() -> Iterator[None]:
    global _RECOMPUTE_DEPTH
    _RECOMPUTE_DEPTH += 1
    try:
        yield
    finally:
        _RECOMPUTE_DEPTH -= 1


# --------------------------------------------------------------------------------------------
# fused LIF / IF recurrence


def _scalar(t: Tensor) -> float:
    return float(t.detach())


def _clamped_beta(beta: Tensor) -> float:
    return min(max(_scalar(beta), 0.0), 1.0)


class _LIFRecurrence(torch.autograd.Function):
    """All T steps of an LIF/IF layer in one node; see the module docstring for the equations."""

    @staticmethod
    def forward(ctx, x, u0, beta, threshold, surrogate, zero_reset):  # type: ignore[override]
        b = _clamped_beta(beta)
        th = _scalar(threshold)
        T = x.shape[0]
        U = torch.empty(x.shape, dtype=x.dtype, device=x.device)
        S = torch.empty_like(U)
        for t in range(T):
            if t == 0:
                if u0 is None:
                    U[0].copy_(x[0])
                else:
                    s0 = (u0 > th).to(x.dtype)
                    if zero_reset:
                        torch.addcmul(x[0], u0, torch.rsub(s0, 1.0), value=b, out=U[0])
                    else:
                        torch.add(x[0], u0, alpha=b, out=U[0])
                        U[0].sub_(s0, alpha=th)
            elif zero_reset:
                torch.addcmul(x[t], U[t - 1], torch.rsub(S[t - 1], 1.0), value=b, out=U[t])
            else:
                if b == 1.0:
                    torch.add(x[t], U[t - 1], out=U[t])
                else:
                    torch.add(x[t], U[t - 1], alpha=b, out=U[t])
                U[t].sub_(S[t - 1], alpha=th)
            torch.gt(U[t], th, out=S[t])
        ctx.save_for_backward(U, u0, beta)
        ctx.b, ctx.th = b, th
        ctx.th_shape, ctx.th_dtype = threshold.shape, threshold.dtype
        ctx.surrogate, ctx.zero_reset = surrogate, zero_reset
        ctx.set_materialize_grads(False)
        return S, U

    @staticmethod
    def backward(ctx, gS, gU):  # type: ignore[override]
        U, u0, beta = ctx.saved_tensors
        b, th, zero = ctx.b, ctx.th, ctx.zero_reset
        need_x, need_u0, need_beta, need_th = ctx.needs_input_grad[:4]
        if gS is None and gU is None:
            return None, None, None, None, None, None
        T = U.shape[0]
        sum_gsg = None
        if gS is not None:
            A = ctx.surrogate.scaled_grad(U - th, gS)  # fresh tensor: becomes dL/dU in place
            if need_th:
                sum_gsg = A.sum()
            if gU is not None:
                A.add_(gU)
        else:
            A = gU.clone()
        S = None
        if zero or need_th:
            S = (U > th).to(U.dtype)
        if zero:
            keep = torch.rsub(S, 1.0).mul_(b)  # beta * (1 - S[t])
            for t in range(T - 2, -1, -1):
                A[t].addcmul_(keep[t], A[t + 1])
        elif b == 1.0:
            for t in range(T - 2, -1, -1):
                A[t].add_(A[t + 1])
        elif b != 0.0:
            for t in range(T - 2, -1, -1):
                A[t].add_(A[t + 1], alpha=b)
        dU = A
        s0 = None
        if u0 is not None and (need_u0 or need_beta or need_th):
            s0 = (u0 > th).to(U.dtype)

        d_u0 = None
        if need_u0 and u0 is not None:
            d_u0 = dU[0] * b if not zero else dU[0] * torch.rsub(s0, 1.0) * b

        d_beta = None
        if need_beta:
            # d U[t] / d beta = U[t-1] (subtract) or (1 - S[t-1]) U[t-1] (zero); U[-1] = u0 or 0
            prev = U[:-1] if not zero else U[:-1] * torch.rsub(S[:-1], 1.0)
            total = (dU[1:] * prev).sum() if T > 1 else dU.new_zeros(())
            if u0 is not None:
                p0 = u0 if not zero else u0 * torch.rsub(s0, 1.0)
                total = total + (dU[0] * p0).sum()
            inside = 0.0 <= _scalar(beta) <= 1.0  # clamp(0, 1) passes the gradient inside only
            d_beta = (total if inside else total * 0.0).reshape(beta.shape).to(beta.dtype)

        d_th = None
        if need_th:
            total = -sum_gsg if sum_gsg is not None else dU.new_zeros(())
            if not zero:
                if T > 1:
                    total = total - (dU[1:] * S[:-1]).sum()
                if s0 is not None:
                    total = total - (dU[0] * s0).sum()
            d_th = total.reshape(ctx.th_shape).to(ctx.th_dtype)
        return (dU if need_x else None), d_u0, d_beta, d_th, None, None


def is_recording() -> bool:
    """True while ``torch.jit.trace`` or ``torch.export`` records the forward (see the module docstring)."""
    return torch.jit.is_tracing() or torch.compiler.is_exporting()


def _lif_steps(x: Tensor, u0: Tensor | None, beta: Tensor, threshold: Tensor, zero_reset: bool):
    """:class:`_LIFRecurrence`'s forward as plain ops on the 0-d ``beta`` and ``threshold`` tensors, for
    recording. ``addcmul(x, u, beta)`` is the fused multiply-add that ``add(x, u, alpha=beta)`` is on CPU."""
    b = beta.clamp(0.0, 1.0)
    u, s = u0, None if u0 is None else (u0 > threshold).to(x.dtype)
    membranes, spikes = [], []
    for t in range(x.shape[0]):
        if u is None:
            u = x[t]
        elif zero_reset:
            u = torch.addcmul(x[t], u * b, 1.0 - s)
        else:
            u = torch.addcmul(x[t], u, b) - s * threshold
        s = (u > threshold).to(x.dtype)
        membranes.append(u)
        spikes.append(s)
    return torch.stack(spikes), torch.stack(membranes)


def lif_recurrence(
    current: Tensor,
    beta: Tensor,
    threshold: Tensor,
    surrogate: Surrogate,
    reset_mechanism: str = "subtract",
    initial_membrane: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """Fused LIF/IF over ``current [T, B, ...]``: returns ``(spikes, membrane)``, both ``[T, B, ...]``.

    ``beta`` and ``threshold`` are 0-d tensors (parameters when learnable). ``initial_membrane``
    continues from a previous chunk (``None`` = from rest).
    """
    zero = reset_mechanism == "zero"
    if is_recording():
        return _lif_steps(current, initial_membrane, beta, threshold, zero)
    return _LIFRecurrence.apply(current, initial_membrane, beta, threshold, surrogate, zero)


# --------------------------------------------------------------------------------------------
# multi-threshold IF (Spiking-UNet)


def _is_binary_ladder(levels: Sequence[float]) -> bool:
    lv = list(levels)
    return len(lv) >= 1 and all(abs(lv[i] - 2 * lv[i + 1]) == 0 for i in range(len(lv) - 1))


def multithreshold_quantize(z: Tensor, levels: Sequence[float] = DEFAULT_LEVELS) -> Tensor:
    """Greedy multi-threshold firing on a membrane normalised by theta: returns the sum of the
    levels that fire when they are checked in order (``r > c`` fires and subtracts ``c``).

    For a binary ladder (each level half the previous, as ``(2, 1, 0.5, 0.25)``) this equals the
    largest multiple of the smallest level strictly below ``z``, capped at ``sum(levels)``.
    """
    if _is_binary_ladder(levels):
        step = float(levels[-1])
        n = round(sum(levels) / step)
        return torch.ceil(z * (1.0 / step)).sub_(1.0).clamp_(0.0, float(n)).mul_(step)
    r = z.clone()
    q = torch.zeros_like(z)
    for c in levels:
        f = (r > c).to(z.dtype)
        r.sub_(f, alpha=c)
        q.add_(f, alpha=c)
    return q


def _multithreshold_slope(z: Tensor, levels: Sequence[float], surrogate: Surrogate) -> Tensor:
    """Surrogate dQ/dz: the mean over levels of ``surrogate'((r_k - c_k) / c_k)``, where ``r_k`` is
    the normalised residual when level ``c_k`` is checked (earlier firings held fixed)."""
    r = z.clone()
    g = torch.zeros_like(z)
    for c in levels:
        g.add_(surrogate.grad((r - c) * (1.0 / c)))
        r.sub_((r > c).to(z.dtype), alpha=c)
    return g.mul_(1.0 / len(levels))


#: the multi-threshold backward's elementwise work on at least this many elements runs as one kernel compiled by
#: ``torch.compile`` (its first compile costs seconds once per process, then it is ~8x faster than eager); smaller
#: tensors, as in tests and tiny students, run eagerly
COMPILE_MIN_NUMEL = 1 << 17
_compiled: dict[tuple[Surrogate, tuple[float, ...]], Callable[[Tensor], tuple[Tensor, Tensor]]] = {}
_compile_enabled = os.environ.get("SPIKEDISTILL_COMPILE", "1") != "0"  # env SPIKEDISTILL_COMPILE=0: always eager


def _slope_and_level(z: Tensor, levels: tuple[float, ...], surrogate: Surrogate,
                     need_level: bool) -> tuple[Tensor, Tensor | None]:
    """(surrogate slope g, quantised level Q) of the normalised membrane ``z``: one compiled kernel on large tensors
    (which computes Q too), else eager ops (Q only when ``need_level``); eager also where compiling fails, with a
    warning."""
    global _compile_enabled
    if _compile_enabled and z.numel() >= COMPILE_MIN_NUMEL:
        key = (surrogate, levels)
        if key not in _compiled:
            _compiled[key] = torch.compile(
                lambda x: (_multithreshold_slope(x, levels, surrogate), multithreshold_quantize(x, levels)),
                dynamic=True, fullgraph=True)
        try:
            return _compiled[key](z)
        except Exception as exc:  # noqa: BLE001 - any compiler failure: the eager ops compute the same values
            _compile_enabled = False
            warnings.warn(f"the compiled multi-threshold backward failed ({type(exc).__name__}: "
                          f"{str(exc)[:200]}); using eager ops from now on (set SPIKEDISTILL_COMPILE=0 to skip "
                          "the attempt)", RuntimeWarning, stacklevel=2)
    return _multithreshold_slope(z, levels, surrogate), multithreshold_quantize(z, levels) if need_level else None


class _MultiThresholdRecurrence(torch.autograd.Function):
    """Multi-threshold IF over all T:

    ``U[t] = U[t-1] + I[t] - O[t-1]`` (soft reset by what fired, detached),
    ``O[t] = theta * Q(U[t] / theta)`` with ``Q`` the greedy ladder of :func:`multithreshold_quantize`.
    Backward: ``dO/dU = g`` (see :func:`_multithreshold_slope`), ``dO/dtheta = Q - (U/theta) g``, and
    ``dU[t]/dtheta = -Q[t-1]`` through the reset.
    """

    @staticmethod
    def forward(ctx, x, u0, threshold, surrogate, levels):  # type: ignore[override]
        th = _scalar(threshold)
        T = x.shape[0]
        U = torch.empty(x.shape, dtype=x.dtype, device=x.device)
        O = torch.empty_like(U)
        inv = 1.0 / th
        for t in range(T):
            if t == 0:
                if u0 is None:
                    U[0].copy_(x[0])
                else:
                    o0 = multithreshold_quantize(u0 * inv, levels).mul_(th)
                    torch.add(x[0], u0, out=U[0])
                    U[0].sub_(o0)
            else:
                torch.add(x[t], U[t - 1], out=U[t])
                U[t].sub_(O[t - 1])
            O[t] = multithreshold_quantize(U[t] * inv, levels).mul_(th)
        ctx.save_for_backward(U, u0)
        ctx.th, ctx.surrogate, ctx.levels = th, surrogate, tuple(levels)
        ctx.th_shape, ctx.th_dtype = threshold.shape, threshold.dtype
        ctx.set_materialize_grads(False)
        return O, U

    @staticmethod
    def backward(ctx, gO, gU):  # type: ignore[override]
        U, u0 = ctx.saved_tensors
        th, levels = ctx.th, ctx.levels
        need_x, need_u0, need_th = ctx.needs_input_grad[:3]
        if gO is None and gU is None:
            return None, None, None, None, None
        T = U.shape[0]
        Z = U * (1.0 / th)
        direct_th = None
        q = None
        if gO is not None:
            g, q = _slope_and_level(Z, levels, ctx.surrogate, need_th)
            if need_th:
                direct_th = (gO * (q - Z * g)).sum()
            A = g.mul_(gO)
            if gU is not None:
                A.add_(gU)
        else:
            A = gU.clone()
        for t in range(T - 2, -1, -1):
            A[t].add_(A[t + 1])
        dU = A
        d_u0 = dU[0].clone() if (need_u0 and u0 is not None) else None
        d_th = None
        if need_th:
            total = direct_th if direct_th is not None else dU.new_zeros(())
            if T > 1:
                earlier = q[:-1] if q is not None else multithreshold_quantize(Z[:-1], levels)
                total = total - (dU[1:] * earlier).sum()
            if u0 is not None:
                total = total - (dU[0] * multithreshold_quantize(u0 * (1.0 / th), levels)).sum()
            d_th = total.reshape(ctx.th_shape).to(ctx.th_dtype)
        return (dU if need_x else None), d_u0, d_th, None, None


def _multithreshold_steps(x: Tensor, u0: Tensor | None, threshold: Tensor, levels: Sequence[float]):
    """:class:`_MultiThresholdRecurrence`'s forward as plain ops on the 0-d ``threshold``, for recording."""
    inv = (1.0 / threshold.cpu().double()).to(x)  # the float32 of the Python 1 / theta that the fused forward uses
    u, fired = u0, None if u0 is None else multithreshold_quantize(u0 * inv, levels) * threshold
    membranes, outputs = [], []
    for t in range(x.shape[0]):
        u = x[t] if u is None else x[t] + u - fired
        fired = multithreshold_quantize(u * inv, levels) * threshold
        membranes.append(u)
        outputs.append(fired)
    return torch.stack(outputs), torch.stack(membranes)


def multithreshold_recurrence(
    current: Tensor,
    threshold: Tensor,
    surrogate: Surrogate,
    levels: Sequence[float] = DEFAULT_LEVELS,
    initial_membrane: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """Fused multi-threshold IF: returns ``(outputs, membrane)``; outputs are ``theta * Q`` values."""
    if is_recording():
        return _multithreshold_steps(current, initial_membrane, threshold, tuple(levels))
    return _MultiThresholdRecurrence.apply(current, initial_membrane, threshold, surrogate, tuple(levels))


# --------------------------------------------------------------------------------------------
# checkpointing over time chunks


class _Carry:
    """Per-neuron state for one chunk: membrane in/out, time offset and recorded membranes."""

    __slots__ = ("state_in", "state_out", "offset", "record", "parts")

    def __init__(self, state_in: Tensor | None, offset: int, record: bool, parts: list):
        self.state_in = state_in
        self.state_out = state_in
        self.offset = offset
        self.record = record
        self.parts = parts


def _spiking_neurons(module: nn.Module) -> list[nn.Module]:
    from .neurons import SpikingNeuron

    return [m for m in module.modules() if isinstance(m, SpikingNeuron)]


def _chunk_bounds(T: int, segments: int) -> list[tuple[int, int]]:
    n = min(segments, T)
    base, extra = divmod(T, n)
    bounds, start = [], 0
    for k in range(n):
        stop = start + base + (1 if k < extra else 0)
        bounds.append((start, stop))
        start = stop
    return bounds


class _ChunkRunner:
    def __init__(self, body, neurons, norms, offset, parts):
        self.body, self.neurons, self.norms = body, neurons, norms
        self.offset, self.parts = offset, parts
        self.calls = 0

    def __call__(self, x_chunk: Tensor, *states):
        recompute = self.calls > 0
        self.calls += 1
        carries = [
            _Carry(s, self.offset, record=not recompute, parts=p)
            for s, p in zip(states, self.parts)
        ]
        saved = None
        if recompute and self.norms:  # the first pass already updated running statistics
            saved = [{k: v.clone() for k, v in m.named_buffers(recurse=False)} for m in self.norms]
        ctx = _recomputing() if recompute else contextlib.nullcontext()
        try:
            with ctx:
                for n, c in zip(self.neurons, carries):
                    n._carry = c
                y = self.body(x_chunk)
        finally:
            for n in self.neurons:
                n._carry = None
            if saved is not None:
                for m, bufs in zip(self.norms, saved):
                    for k, v in bufs.items():
                        getattr(m, k).copy_(v)
        return (y, *[c.state_out for c in carries])


def run_over_time(
    module: nn.Module,
    body: Callable[[Tensor], Tensor],
    x_seq: Tensor,
    checkpoint_segments: int | None = None,
) -> Tensor:
    """Run ``body`` (``[t, B, ...] -> [t, B, ...]``, containing the spiking neurons of ``module``).

    With ``checkpoint_segments=None`` (or 1) this is just ``body(x_seq)``, as it is while :func:`is_recording`
    (a traced or exported forward has no backward; in eval mode the outputs are the same). With ``k > 1`` the T
    steps are split into ``k`` chunks; each chunk runs under non-reentrant
    ``torch.utils.checkpoint`` (its activations are recomputed in backward), and every neuron's last
    membrane is handed to the next chunk as a differentiable input, so outputs and gradients equal
    the unchunked run. Caveats: batch norm in training mode normalises with per-chunk statistics
    (identical results in eval mode or without BN); layers that mix time steps (temporal attention)
    cannot be chunked; forward hooks fire once per chunk (and again during recompute, when
    :func:`is_recomputing` is true).
    """
    if checkpoint_segments is None or checkpoint_segments == 1 or is_recording():
        return body(x_seq)
    check_int("checkpoint_segments", checkpoint_segments, 1, " or None")
    T = x_seq.shape[0]
    bounds = _chunk_bounds(T, checkpoint_segments)
    neurons = _spiking_neurons(module)
    norms = [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    parts: list[list[Tensor]] = [[] for _ in neurons]
    states: list[Tensor | None] = [None] * len(neurons)
    outs = []
    use_ckpt = torch.is_grad_enabled()
    for a, b in bounds:
        runner = _ChunkRunner(body, neurons, norms if use_ckpt else [], a, parts)
        if use_ckpt:
            res = checkpoint(runner, x_seq[a:b], *states, use_reentrant=False)
        else:
            res = runner(x_seq[a:b], *states)
        outs.append(res[0])
        states = list(res[1:])
    for n, p in zip(neurons, parts):
        if p and getattr(n, "record_membrane", False):
            n.membrane = torch.cat(p, 0)
    return torch.cat(outs, 0)
