"""Input encoding and output decoding for spiking restoration models.

* Direct encoding (default): the analog image feeds the first conv at every step. The input is the
  same at each step, so :class:`InputLayer` runs the conv ONCE on ``B`` and broadcasts the result
  over T as a stride-0 view (no copy); the first neuron then integrates the same current T times.
* Rate encoding: Bernoulli spikes with ``p = clamp(x, 0, 1)``, drawn from a generator seeded with
  ``seed`` at every call (deterministic: the same input gives the same spikes), or from the global
  RNG when ``seed=None``. The first conv then runs over the folded ``T*B`` batch.
* Decoding: ``"mean"`` averages over T; ``"membrane"`` reads the membrane of a non-firing leaky
  integrator at the last step, ``sum_t beta**(T-1-t) y[t]``, normalised by ``sum_t beta**(T-1-t)``
  so a constant input decodes to itself. Both are linear, so decoding the last hidden layer and then
  applying the (linear) output conv equals decoding that conv's per-step outputs; models use the
  cheaper order (one conv on B instead of T*B).
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from spikedistill_core.errors import ConfigError

from .engine import broadcast_time, check_timesteps, is_time_broadcast

__all__ = ["ENCODINGS", "DECODINGS", "InputLayer", "rate_encode", "decode", "decode_weights", "check_coding"]

ENCODINGS = ("direct", "rate")
DECODINGS = ("mean", "membrane")


def check_coding(encoding: str, decoding: str, decode_beta: float = 0.9) -> None:
    if encoding not in ENCODINGS:
        raise ConfigError(f"encoding={encoding!r} is not allowed; use one of {list(ENCODINGS)}")
    if decoding not in DECODINGS:
        raise ConfigError(f"decoding={decoding!r} is not allowed; use one of {list(DECODINGS)}")
    if not (0.0 < float(decode_beta) <= 1.0):
        raise ConfigError(f"decode_beta={decode_beta!r} is not allowed; it must be in (0, 1]")


def rate_encode(x: Tensor, timesteps: int, seed: int | None = 0) -> Tensor:
    """Bernoulli spikes ``[T, B, ...]`` with firing probability ``clamp(x, 0, 1)``."""
    check_timesteps(timesteps)
    p = x.detach().clamp(0.0, 1.0)
    if seed is None:
        u = torch.rand((timesteps, *p.shape), dtype=p.dtype, device=p.device)
    else:
        g = torch.Generator(device=p.device)
        g.manual_seed(int(seed))
        u = torch.rand((timesteps, *p.shape), dtype=p.dtype, device=p.device, generator=g)
    return (u < p).to(x.dtype)


class InputLayer(nn.Module):
    """The first (analog-input) layer of a spiking model: ``[B, C, H, W] -> [T, B, C', H, W]``.

    The wrapped layer is the child ``layer``, as in :class:`students.engine.TimeDistributed`.
    """

    def __init__(self, layer: nn.Module, timesteps: int, encoding: str = "direct", seed: int | None = 0):
        super().__init__()
        check_coding(encoding, "mean")
        self.layer = layer
        self.timesteps = check_timesteps(timesteps)
        self.encoding = encoding
        self.seed = seed

    def forward(self, x: Tensor) -> Tensor:
        T = self.timesteps
        if self.encoding == "direct":
            return broadcast_time(self.layer(x), T)
        s = rate_encode(x, T, self.seed)
        y = self.layer(s.reshape(T * x.shape[0], *x.shape[1:]))
        return y.reshape(T, x.shape[0], *y.shape[1:])

    def extra_repr(self) -> str:
        return f"timesteps={self.timesteps}, encoding={self.encoding!r}"


def decode_weights(timesteps: int, decoding: str = "mean", beta: float = 0.9) -> Tensor:
    """Per-step weights (summing to 1) used by :func:`decode`."""
    if decoding == "mean":
        return torch.full((timesteps,), 1.0 / timesteps)
    if decoding == "membrane":
        w = torch.tensor([float(beta) ** (timesteps - 1 - t) for t in range(timesteps)], dtype=torch.float64)
        return (w / w.sum()).to(torch.float32)
    raise ConfigError(f"decoding={decoding!r} is not allowed; use one of {list(DECODINGS)}")


def decode(seq: Tensor, decoding: str = "mean", beta: float = 0.9) -> Tensor:
    """``[T, B, ...] -> [B, ...]`` by the mean over T or the normalised leaky-integrator membrane."""
    T = seq.shape[0]
    if is_time_broadcast(seq) or T == 1:
        return seq[0]
    if decoding == "mean":
        return seq.mean(0)
    w = decode_weights(T, decoding, beta).to(seq.device, seq.dtype)
    return torch.tensordot(w, seq, dims=([0], [0]))
