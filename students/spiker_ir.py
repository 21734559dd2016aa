"""SpikerIR: a 4-level spiking encoder-decoder for image restoration.

Channels ``(48, 96, 192, 384)`` at full size, ``blocks`` spiking residual blocks per level, T=4.
Blocks pass analog membrane currents ``[T, B, C, H, W]`` (membrane shortcut)::

    block(x) = x + BN(conv(LIF(BN(conv(LIF(x))))))

Down: LIF -> 3x3 stride-2 conv -> BN. Up: LIF -> 2x2 transposed conv -> BN, then the skip is
concatenated ``[up, skip]`` and fused by LIF -> 1x1 conv -> BN. The last decoder's currents are
decoded over T (mean or membrane) and a 3x3 output conv predicts the residual.

Module paths for hints: ``embed``, ``encoder.0..3`` (``encoder.3`` is the bottleneck), ``down.0..2``,
``up.0..2``, ``fuse.0..2``, ``decoder.0`` (level 3, applied first), ``decoder.1``, ``decoder.2``
(full resolution), each ``[T, B, C, H, W]``; inside a block ``decoder.1.0.neuron1``, ``.conv1``, ...
"""
from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import Tensor, nn

from spikedistill_core.checks import check_int
from spikedistill_core.errors import ConfigError

from .base import SpikingRestorer
from .encoding import decode
from .engine import TimeDistributed, run_over_time
from .layers import build_norm, check_input, pad_to_multiple

__all__ = ["SpikerIR", "SPIKER_IR_PRESETS"]

SPIKER_IR_PRESETS: dict[str, dict] = {
    "full": {"channels": (48, 96, 192, 384), "blocks": 2},
    "tiny": {"channels": (8, 16, 32, 64), "blocks": 2},
}


def _norm_or_identity(norm: str, channels: int, threshold: float) -> nn.Module:
    m = build_norm(norm, channels, threshold=threshold)
    return nn.Identity() if m is None else m


class SpikingBlock(nn.Module):
    """Membrane-shortcut residual block: ``x + bn2(conv2(neuron2(bn1(conv1(neuron1(x))))))``."""

    def __init__(self, channels: int, make_neuron, norm: str, threshold: float):
        super().__init__()
        bias = norm == "none"
        self.neuron1 = make_neuron()
        self.conv1 = TimeDistributed(nn.Conv2d(channels, channels, 3, padding=1, bias=bias))
        self.bn1 = _norm_or_identity(norm, channels, threshold)
        self.neuron2 = make_neuron()
        self.conv2 = TimeDistributed(nn.Conv2d(channels, channels, 3, padding=1, bias=bias))
        self.bn2 = _norm_or_identity(norm, channels, threshold)

    def forward(self, x: Tensor) -> Tensor:
        h = self.bn1(self.conv1(self.neuron1(x)))
        return x + self.bn2(self.conv2(self.neuron2(h)))


class _NeuronConvNorm(nn.Sequential):
    def __init__(self, make_neuron, conv: nn.Module, norm: nn.Module):
        super().__init__(make_neuron(), TimeDistributed(conv), norm)


class SpikerIR(SpikingRestorer):
    """Spiking encoder-decoder restorer (denoising or deraining).

    Args:
        in_channels: 1 or 3.
        channels: 4 channel counts (None = from ``preset``: ``"full"`` (48, 96, 192, 384), ``"tiny"``
            (8, 16, 32, 64)).
        blocks: residual blocks per level (None = from ``preset``: 2).
        preset: ``"full"`` (default) or ``"tiny"``.
        beta: LIF membrane decay (0.5 here).
        norm: ``"bn"``, ``"tdbn"`` or ``"none"``.
        **spiking: the shared options of :class:`students.base.SpikingRestorer` (T, neuron, coding, ...).
    """

    def __init__(
        self,
        in_channels: int = 3,
        channels: Sequence[int] | None = None,
        blocks: int | None = None,
        preset: str | None = None,
        beta: float = 0.5,
        norm: str = "bn",
        **spiking: Any,
    ):
        super().__init__(in_channels, beta=beta, **spiking)
        name = "full" if preset is None else preset
        if name not in SPIKER_IR_PRESETS:
            raise ConfigError(f"preset={preset!r} is not allowed; use one of {sorted(SPIKER_IR_PRESETS)} or None")
        p = SPIKER_IR_PRESETS[name]
        ch = tuple(p["channels"] if channels is None else channels)
        if len(ch) != 4 or any(isinstance(c, bool) or not isinstance(c, int) or c < 1 for c in ch):
            raise ConfigError(f"channels={ch!r} is not allowed; give 4 integers >= 1")
        nb = check_int("blocks", p["blocks"] if blocks is None else blocks)
        self.channels, self.blocks = ch, nb
        make_neuron, threshold = self.make_neuron, self.neuron_options["threshold"]

        def stack(c):
            return nn.Sequential(*[SpikingBlock(c, make_neuron, norm, threshold) for _ in range(nb)])

        def nrm(c):
            return _norm_or_identity(norm, c, threshold)

        bias = norm == "none"
        self.embed = self.input_layer(nn.Conv2d(in_channels, ch[0], 3, padding=1))
        self.encoder = nn.ModuleList(stack(c) for c in ch)
        self.down = nn.ModuleList(
            _NeuronConvNorm(make_neuron, nn.Conv2d(ch[i], ch[i + 1], 3, 2, 1, bias=bias), nrm(ch[i + 1]))
            for i in range(3)
        )
        levels = [2, 1, 0]  # decoder.k works at level levels[k]
        self.up = nn.ModuleList(
            _NeuronConvNorm(make_neuron, nn.ConvTranspose2d(ch[i + 1], ch[i], 2, 2, bias=bias), nrm(ch[i]))
            for i in levels
        )
        self.fuse = nn.ModuleList(
            _NeuronConvNorm(make_neuron, nn.Conv2d(2 * ch[i], ch[i], 1, bias=bias), nrm(ch[i])) for i in levels
        )
        self.decoder = nn.ModuleList(stack(ch[i]) for i in levels)
        self.output = self.output_layer(nn.Conv2d(ch[0], in_channels, 3, padding=1))

    def _body(self, h: Tensor) -> Tensor:
        skips = []
        for i in range(4):
            h = self.encoder[i](h)
            if i < 3:
                skips.append(h)
                h = self.down[i](h)
        for k in range(3):
            u = self.up[k](h)
            h = self.decoder[k](self.fuse[k](torch.cat([u, skips[2 - k]], dim=2)))
        return h

    def forward(self, x: Tensor) -> Tensor:
        check_input(x, self.in_channels, type(self).__name__)
        xp, (H, W) = pad_to_multiple(x, 8)
        current = self.embed(xp)
        h = run_over_time(self, self._body, current, self.checkpoint_segments)
        r = self.output(decode(h, self.decoding, self.decode_beta))[..., :H, :W]
        return self.restored(x, r)
