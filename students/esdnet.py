"""ESDNet (Song et al., IJCAI 2024): an efficient spiking deraining network.

A 3-level spiking U-Net of spiking residual blocks (SRB). Blocks pass analog membrane currents
``[T, B, C, H, W]``; spikes exist inside them::

    SRB(x) = MDA( BN(conv(LIF(BN(conv(LIF(x)))))) + BN(conv(x)) ) + x

where MDA is multi-dimensional (temporal, channel, spatial) attention re-weighting the membrane
input (:class:`students.layers.MultiDimensionalAttention`). Down: LIF -> 3x3 stride-2 conv -> tdBN.
Up: bilinear x2 -> LIF -> 3x3 conv -> tdBN. Level-2 skip: concat -> LIF -> 1x1 conv -> tdBN
(``reduce``); level-1 skip: concat (the last decoder runs at ``2 * dim``). An ANN refinement head
works on the time-averaged decoder features, then a 3x3 output conv; residual output.

Defaults follow the paper: T=4, LIF with threshold 0.15, beta 0.5 (spikingjelly tau=2,
``decay_input=False``), reset to zero, tdBN with alpha = 1/sqrt(2), direct encoding.

Module paths for hints: ``embed``, ``encoder.0/1/2`` (level 1..3 SRB stacks), ``down.0/1``,
``decoder.0`` (level 3, applied first), ``up.0``, ``reduce``, ``decoder.1`` (level 2), ``up.1``,
``decoder.2`` (level 1), ``refinement``, ``output``; inside a block: ``encoder.0.1.residual.0``
(first LIF), ``...residual.1`` (conv), ``...shortcut``, ``...attention``.

Temporal attention mixes time steps, so ESDNet cannot be checkpointed over time chunks.
"""
from __future__ import annotations

import math
from typing import Any, Sequence

import torch
from torch import Tensor, nn

from spikedistill_core.checks import check_int
from spikedistill_core.errors import ConfigError

from .base import SpikingRestorer
from .encoding import decode
from .engine import TimeDistributed
from .layers import (
    MultiDimensionalAttention,
    RefinementHead,
    TDBatchNorm2d,
    check_input,
    pad_to_multiple,
)

__all__ = ["ESDNet", "ESDNET_PRESETS"]

ESDNET_PRESETS: dict[str, dict] = {
    "full": {"dim": 48, "encoder_blocks": (4, 4, 8), "decoder_blocks": (2, 2, 2)},
    "small": {"dim": 24, "encoder_blocks": (2, 2, 4), "decoder_blocks": (2, 2, 2)},
    "tiny": {"dim": 8, "encoder_blocks": (1, 1, 1), "decoder_blocks": (1, 1, 1)},
}

_ALPHA = 1 / math.sqrt(2)


def _tdbn(channels: int, v_th: float) -> TimeDistributed:
    return TimeDistributed(TDBatchNorm2d(channels, alpha=_ALPHA, threshold=v_th))


def _conv(cin: int, cout: int, k: int = 3, stride: int = 1) -> TimeDistributed:
    return TimeDistributed(nn.Conv2d(cin, cout, k, stride, k // 2, bias=False))


class SpikingResidualBlock(nn.Module):
    """LIF -> conv -> tdBN -> LIF -> conv -> tdBN, plus conv -> tdBN shortcut, attention, + input.

    The paper's shortcut conv reads the block's analog input ``x`` (a real-valued multiply at each of the T steps);
    with ``spiking_shortcut`` it reads the spikes of the block's first LIF instead, as the residual path does.
    """

    def __init__(self, dim: int, make_neuron, v_th: float, reduction_c: int = 16, spiking_shortcut: bool = False):
        super().__init__()
        self.residual = nn.Sequential(
            make_neuron(), _conv(dim, dim), _tdbn(dim, v_th),
            make_neuron(), _conv(dim, dim), _tdbn(dim, v_th * 0.2),
        )
        self.shortcut = nn.Sequential(_conv(dim, dim), _tdbn(dim, v_th))
        self.attention = MultiDimensionalAttention(dim, reduction_c=reduction_c)
        self.spiking_shortcut = bool(spiking_shortcut)

    def forward(self, x: Tensor) -> Tensor:
        if not self.spiking_shortcut:
            return self.attention(self.residual(x) + self.shortcut(x)) + x
        spikes = self.residual[0](x)
        return self.attention(self.residual[1:](spikes) + self.shortcut(spikes)) + x


class _Down(nn.Sequential):
    def __init__(self, dim: int, make_neuron, v_th: float):
        super().__init__(make_neuron(), _conv(dim, 2 * dim, 3, stride=2), _tdbn(2 * dim, v_th))


class _Up(nn.Sequential):
    def __init__(self, dim: int, make_neuron, v_th: float):
        super().__init__(
            TimeDistributed(nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False)),
            make_neuron(), _conv(dim, dim // 2), _tdbn(dim // 2, v_th),
        )


class _Reduce(nn.Sequential):
    def __init__(self, cin: int, cout: int, make_neuron, v_th: float):
        super().__init__(make_neuron(), _conv(cin, cout, 1), _tdbn(cout, v_th))


class ESDNet(SpikingRestorer):
    """Spiking deraining network.

    Args:
        in_channels: 3 (RGB) or 1.
        dim: channels at full resolution (None = from ``preset``).
        encoder_blocks: SRBs per encoder level 1..3 (None = from ``preset``).
        decoder_blocks: SRBs per decoder level 1..3 (None = from ``preset``).
        preset: ``"full"`` 48/(4,4,8)/(2,2,2), ``"small"`` (default) 24/(2,2,4)/(2,2,2) or ``"tiny"``
            8/(1,1,1)/(1,1,1).
        threshold: firing threshold (0.15 here, as in the paper).
        beta: LIF membrane decay (0.5 here).
        reset_mechanism: ``"zero"`` here, or ``"subtract"``.
        reduction_c: channel-attention reduction.
        spiking_shortcut: each block's shortcut conv reads the spikes of its first LIF, not the analog block input
            (False, the paper's design: that conv then multiplies real values at every time step, which is most of
            the network's energy under the 45 nm accounting; BENCHMARKS.md section 6).
        checkpoint_segments: must be None (temporal attention needs all steps at once).
        **spiking: the other shared options of :class:`students.base.SpikingRestorer` (T, neuron, coding, ...).
    """

    def __init__(
        self,
        in_channels: int = 3,
        dim: int | None = None,
        encoder_blocks: Sequence[int] | None = None,
        decoder_blocks: Sequence[int] | None = None,
        preset: str | None = None,
        threshold: float = 0.15,
        beta: float = 0.5,
        reset_mechanism: str = "zero",
        reduction_c: int = 16,
        spiking_shortcut: bool = False,
        checkpoint_segments: int | None = None,
        **spiking: Any,
    ):
        if checkpoint_segments is not None:
            raise ConfigError(
                f"checkpoint_segments={checkpoint_segments!r} is not allowed for ESDNet; only None "
                "(its temporal attention mixes all time steps, so T cannot be split into chunks)"
            )
        super().__init__(
            in_channels, threshold=threshold, beta=beta, reset_mechanism=reset_mechanism,
            checkpoint_segments=checkpoint_segments, **spiking,
        )
        name = "small" if preset is None else preset
        if name not in ESDNET_PRESETS:
            raise ConfigError(f"preset={preset!r} is not allowed; use one of {sorted(ESDNET_PRESETS)} or None")
        p = ESDNET_PRESETS[name]
        dim = check_int("dim", p["dim"] if dim is None else dim, minimum=2)
        enc = tuple(p["encoder_blocks"] if encoder_blocks is None else encoder_blocks)
        dec = tuple(p["decoder_blocks"] if decoder_blocks is None else decoder_blocks)
        for label, blocks in (("encoder_blocks", enc), ("decoder_blocks", dec)):
            if len(blocks) != 3 or any(isinstance(b, bool) or not isinstance(b, int) or b < 1 for b in blocks):
                raise ConfigError(f"{label}={blocks!r} is not allowed; give 3 integers >= 1 (levels 1, 2, 3)")
        self.dim = dim
        make_neuron, v_th = self.make_neuron, float(threshold)

        def stack(d, n):
            return nn.Sequential(*[SpikingResidualBlock(d, make_neuron, v_th, reduction_c, spiking_shortcut)
                                   for _ in range(n)])

        self.embed = self.input_layer(nn.Conv2d(in_channels, dim, 3, padding=1, bias=False))
        self.encoder = nn.ModuleList([stack(dim, enc[0]), stack(2 * dim, enc[1]), stack(4 * dim, enc[2])])
        self.down = nn.ModuleList([_Down(dim, make_neuron, v_th), _Down(2 * dim, make_neuron, v_th)])
        self.decoder = nn.ModuleList([stack(4 * dim, dec[2]), stack(2 * dim, dec[1]), stack(2 * dim, dec[0])])
        self.up = nn.ModuleList([_Up(4 * dim, make_neuron, v_th), _Up(2 * dim, make_neuron, v_th)])
        self.reduce = _Reduce(4 * dim, 2 * dim, make_neuron, v_th)
        self.refinement = RefinementHead(2 * dim, reduction=8)
        self.output = self.output_layer(nn.Conv2d(2 * dim, in_channels, 3, padding=1))

    def forward(self, x: Tensor) -> Tensor:
        check_input(x, self.in_channels, type(self).__name__)
        xp, (H, W) = pad_to_multiple(x, 4)
        e1 = self.encoder[0](self.embed(xp))
        e2 = self.encoder[1](self.down[0](e1))
        e3 = self.encoder[2](self.down[1](e2))
        d3 = self.decoder[0](e3)
        d2 = self.decoder[1](self.reduce(torch.cat([self.up[0](d3), e2], dim=2)))
        d1 = self.decoder[2](torch.cat([self.up[1](d2), e1], dim=2))
        feats = self.refinement(decode(d1, self.decoding, self.decode_beta))
        r = self.output(feats)[..., :H, :W]
        return self.restored(x, r)
