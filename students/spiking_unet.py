"""SpikingUNet: Spiking-UNet (Li et al.) with multi-threshold neurons, for denoising.

A U-Net with ``levels`` resolutions, channels ``base * width * 2**i`` (full size 64 -> 1024 over
5 levels), average pooling down, transposed convolution up, concatenated skips ``[skip, up]``,
a 1x1 output conv on the time-decoded features, and a residual output. The module tree mirrors
``teachers.unet.UNet`` exactly, except that every stateless layer sits inside a
``TimeDistributed``/``InputLayer`` wrapper (its parameters gain a ``.layer`` segment:
``encoders.0.conv1.layer.weight`` here vs ``encoders.0.conv1.weight`` in the ANN), and the ANN's
ReLUs (``act1``, ``act2``, ``up_act``) are spiking neurons. See :func:`students.conversion.convert_unet`.

Module paths for hints: ``encoders.i`` (level i, output ``[T, B, C_i, H/2^i, W/2^i]``),
``encoders.i.conv1`` / ``.act1`` / ``.conv2`` / ``.act2``, ``decoders.j`` (j = 0 is the deepest
decoder, applied first), ``decoders.j.up`` / ``.up_act`` / ``.conv1`` / ...; ``out`` (1x1 conv).

Presets: ``"full"`` (base 64, 5 levels) and ``"tiny"`` (base 8, 3 levels, for CPU tests).
Inputs whose sides are not multiples of ``2**(levels-1)`` are padded (reflect) and cropped back.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from spikedistill_core.checks import check_int
from spikedistill_core.errors import ConfigError

from .base import SpikingRestorer
from .encoding import InputLayer, decode
from .engine import TimeDistributed, run_over_time
from .layers import channels_for, check_input, pad_to_multiple

__all__ = ["SpikingUNet", "UNET_PRESETS", "resolve_unet_preset"]

UNET_PRESETS: dict[str, dict[str, int]] = {
    "full": {"base_channels": 64, "levels": 5},
    "tiny": {"base_channels": 8, "levels": 3},
}


def resolve_unet_preset(preset: str | None, base_channels: int | None, levels: int | None) -> tuple[int, int]:
    """``(base_channels, levels)``: explicit values win over the preset (default preset ``"full"``)."""
    name = "full" if preset is None else preset
    if name not in UNET_PRESETS:
        raise ConfigError(f"preset={preset!r} is not allowed; use one of {sorted(UNET_PRESETS)} or None")
    p = UNET_PRESETS[name]
    base = p["base_channels"] if base_channels is None else base_channels
    lv = p["levels"] if levels is None else levels
    return check_int("base_channels", base), check_int("levels", lv)


class _EncoderLevel(nn.Module):
    def __init__(self, pool, conv1, act1, conv2, act2):
        super().__init__()
        if pool is not None:
            self.pool = pool
        self.conv1, self.act1, self.conv2, self.act2 = conv1, act1, conv2, act2

    def forward(self, x: Tensor) -> Tensor:
        if hasattr(self, "pool"):
            x = self.pool(x)
        # level 0 takes the image [B, C, H, W] or the already-encoded current [T, B, C', H, W]
        if not (isinstance(self.conv1, InputLayer) and x.dim() == 5):
            x = self.conv1(x)
        return self.act2(self.conv2(self.act1(x)))


class _DecoderLevel(nn.Module):
    def __init__(self, up, up_act, conv1, act1, conv2, act2, cat_dim: int):
        super().__init__()
        self.up, self.up_act = up, up_act
        self.conv1, self.act1, self.conv2, self.act2 = conv1, act1, conv2, act2
        self.cat_dim = cat_dim

    def forward(self, x: Tensor, skip: Tensor) -> Tensor:
        u = self.up_act(self.up(x))
        h = torch.cat([skip, u], dim=self.cat_dim)
        return self.act2(self.conv2(self.act1(self.conv1(h))))


class SpikingUNet(SpikingRestorer):
    """Spiking U-Net with multi-threshold neurons (defaults) and residual output.

    Args:
        in_channels: 1 or 3.
        base_channels: channels of level 0 (None = from ``preset``).
        levels: resolutions (None = from ``preset``).
        width: multiplies every level's channels.
        preset: ``"full"`` (64, 5) or ``"tiny"`` (8, 3); default ``"full"``.
        neuron: ``"multi_threshold"`` (default here), ``"if"``, ``"lif"`` or ``"relu"`` (ANN twin).
        **spiking: the shared options of :class:`students.base.SpikingRestorer` (T, threshold, coding, ...;
            conversion sets ``init_membrane`` 0.125).
    """

    def __init__(
        self,
        in_channels: int = 1,
        base_channels: int | None = None,
        levels: int | None = None,
        width: float = 1.0,
        preset: str | None = None,
        neuron: str = "multi_threshold",
        **spiking: Any,
    ):
        super().__init__(in_channels, neuron=neuron, **spiking)
        base, nlev = resolve_unet_preset(preset, base_channels, levels)
        self.channels = channels_for(base, nlev, width)
        self.base_channels, self.levels, self.width = base, nlev, float(width)
        act = self.make_neuron

        def conv(cin, cout):
            return TimeDistributed(nn.Conv2d(cin, cout, 3, padding=1))

        ch = self.channels
        encoders = []
        for i, c in enumerate(ch):
            if i == 0:
                first = self.input_layer(nn.Conv2d(in_channels, c, 3, padding=1))
                encoders.append(_EncoderLevel(None, first, act(), conv(c, c), act()))
            else:
                pool = TimeDistributed(nn.AvgPool2d(2))
                encoders.append(_EncoderLevel(pool, conv(ch[i - 1], c), act(), conv(c, c), act()))
        self.encoders = nn.ModuleList(encoders)
        decoders = []
        for i in range(nlev - 2, -1, -1):
            up = TimeDistributed(nn.ConvTranspose2d(ch[i + 1], ch[i], 2, stride=2))
            decoders.append(_DecoderLevel(up, act(), conv(2 * ch[i], ch[i]), act(), conv(ch[i], ch[i]), act(), 2))
        self.decoders = nn.ModuleList(decoders)
        self.out = self.output_layer(nn.Conv2d(ch[0], in_channels, 1))

    def _body(self, current: Tensor) -> Tensor:
        h = self.encoders[0](current)
        skips = [h]
        for enc in self.encoders[1:]:
            h = enc(h)
            skips.append(h)
        for j, dec in enumerate(self.decoders):
            h = dec(h, skips[-2 - j])
        return h

    def forward(self, x: Tensor) -> Tensor:
        check_input(x, self.in_channels, type(self).__name__)
        xp, (H, W) = pad_to_multiple(x, 2 ** (self.levels - 1))
        current = self.encoders[0].conv1(xp)
        h = run_over_time(self, self._body, current, self.checkpoint_segments)
        r = self.out(decode(h, self.decoding, self.decode_beta))[..., :H, :W]
        return self.restored(x, r)
