"""Surrogate gradients for the Heaviside spike function, as small picklable objects.

snntorch's ``surrogate.atan()`` returns a closure, which does not pickle (so neither does a model
holding it). Here every surrogate is a plain class instance: it pickles, compares by value and has

* ``grad(x)``: the surrogate derivative dS/dx evaluated at ``x = U - threshold`` (used by the fused
  recurrence in :mod:`students.engine`, which writes its own backward), and
* ``__call__(x)``: Heaviside ``(x > 0).float()`` in the forward pass with ``grad`` in the backward
  pass, so an instance can be passed as ``spike_grad`` to ``snntorch.Leaky`` (handy for checks).

Formulas follow snntorch where snntorch has the surrogate:

* ``ATan(alpha=2)``: ``alpha / 2 / (1 + (pi / 2 * alpha * x) ** 2)`` (snntorch ``surrogate.atan``).
* ``FastSigmoid(slope=25)``: ``1 / (slope * |x| + 1) ** 2`` (snntorch ``surrogate.fast_sigmoid``).
* ``StraightThrough()``: ``1`` (snntorch ``surrogate.straight_through_estimator``).
* ``Triangle(width=1)``: ``max(0, 1 - |x| / width) / width``, the usual triangle (area 1). snntorch's
  ``surrogate.triangular`` is *not* this: its backward is ``+threshold`` below and ``-threshold``
  above the threshold, whatever the distance, so the two are not interchangeable.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

from spikedistill_core.errors import ConfigError

__all__ = [
    "Surrogate",
    "ATan",
    "FastSigmoid",
    "Triangle",
    "StraightThrough",
    "SURROGATES",
    "get_surrogate",
]


class _HeavisideWithSurrogate(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, surrogate: "Surrogate") -> Tensor:  # type: ignore[override]
        ctx.save_for_backward(x)
        ctx.surrogate = surrogate
        return (x > 0).to(x.dtype)

    @staticmethod
    def backward(ctx, grad_out: Tensor):  # type: ignore[override]
        (x,) = ctx.saved_tensors
        return grad_out * ctx.surrogate.grad(x), None


class Surrogate:
    """Base class. Subclasses set ``name`` and implement ``grad``; parameters are plain floats."""

    name: str = "surrogate"

    def grad(self, x: Tensor) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def scaled_grad(self, x: Tensor, g: Tensor) -> Tensor:
        """``g * grad(x)``; ``x`` must be a scratch tensor (it may be overwritten). Subclasses
        override this with fewer memory passes; it is the hot path of the fused backward."""
        return self.grad(x).mul_(g)

    def __call__(self, x: Tensor) -> Tensor:
        return _HeavisideWithSurrogate.apply(x, self)

    def _params(self) -> dict:
        return dict(vars(self))

    def __eq__(self, other: object) -> bool:
        return type(self) is type(other) and self._params() == other._params()  # type: ignore[union-attr]

    def __hash__(self) -> int:
        return hash((type(self).__name__, tuple(sorted(self._params().items()))))

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self._params().items())
        return f"{type(self).__name__}({args})"


def _positive(name: str, value: float, owner: str) -> float:
    value = float(value)
    if not math.isfinite(value) or value <= 0:
        raise ConfigError(f"{owner}: {name}={value!r} is not allowed; it must be a finite number > 0")
    return value


class ATan(Surrogate):
    """Arc-tangent surrogate (snntorch's default): peak ``alpha / 2`` at the threshold."""

    name = "atan"

    def __init__(self, alpha: float = 2.0):
        self.alpha = _positive("alpha", alpha, "ATan")

    def grad(self, x: Tensor) -> Tensor:
        g = x * (math.pi / 2 * self.alpha)
        g = g.square_().add_(1.0).reciprocal_()
        if self.alpha != 2.0:
            g.mul_(self.alpha / 2)
        return g

    def scaled_grad(self, x: Tensor, g: Tensor) -> Tensor:
        c2 = (math.pi / 2 * self.alpha) ** 2
        den = torch.addcmul(x.new_ones(()), x, x, value=c2)  # 1 + (c x)^2, one pass
        out = torch.div(g, den, out=x) if g.shape == x.shape else g / den
        if self.alpha != 2.0:
            out.mul_(self.alpha / 2)
        return out


class FastSigmoid(Surrogate):
    """SuperSpike fast sigmoid: ``1 / (slope * |x| + 1) ** 2``."""

    name = "fast_sigmoid"

    def __init__(self, slope: float = 25.0):
        self.slope = _positive("slope", slope, "FastSigmoid")

    def grad(self, x: Tensor) -> Tensor:
        g = x.abs().mul_(self.slope).add_(1.0)
        return g.square_().reciprocal_()


class Triangle(Surrogate):
    """Triangle (piecewise linear) surrogate: ``max(0, 1 - |x| / width) / width``."""

    name = "triangle"

    def __init__(self, width: float = 1.0):
        self.width = _positive("width", width, "Triangle")

    def grad(self, x: Tensor) -> Tensor:
        g = x.abs().mul_(-1.0 / self.width).add_(1.0).clamp_(min=0.0)
        if self.width != 1.0:
            g.mul_(1.0 / self.width)
        return g


class StraightThrough(Surrogate):
    """Straight-through estimator: the gradient passes unchanged (``dS/dU = 1``)."""

    name = "straight_through"

    def grad(self, x: Tensor) -> Tensor:
        return torch.ones_like(x)


SURROGATES: dict[str, type[Surrogate]] = {
    "atan": ATan,
    "fast_sigmoid": FastSigmoid,
    "triangle": Triangle,
    "straight_through": StraightThrough,
}


def get_surrogate(spec: "str | Surrogate") -> Surrogate:
    """A :class:`Surrogate` from a name in :data:`SURROGATES` or an existing instance."""
    if isinstance(spec, Surrogate):
        return spec
    if isinstance(spec, str) and spec in SURROGATES:
        return SURROGATES[spec]()
    raise ConfigError(
        f"spike_grad={spec!r} is not allowed; use one of {sorted(SURROGATES)} "
        "or an instance of students.surrogates.Surrogate (ATan, FastSigmoid, Triangle, StraightThrough)"
    )
