"""UNet: the ANN U-Net of Spiking-UNet (the teacher whose conversion initialises ``SpikingUNet``).

``levels`` resolutions with channels ``base * width * 2**i`` (full size: 64 -> 1024 over 5 levels),
two 3x3 conv + ReLU per level, average pooling down, 2x2 transposed conv (+ ReLU) up,
concatenated skips ``[skip, up]``, a 1x1 output conv and a residual output (predicts the noise).

The module tree is the same as ``students.spiking_unet.SpikingUNet``'s: parameter ``encoders.0.conv1.weight``
here is ``encoders.0.conv1.layer.weight`` there (the spiking model wraps each layer for time), and
each ReLU here (``act1``, ``act2``, ``up_act``) is a spiking neuron there.
"""
from __future__ import annotations

import os

import torch
from torch import Tensor, nn

from spikedistill_core.checks import check_int
from students.layers import channels_for, check_input, pad_to_multiple
from students.spiking_unet import UNET_PRESETS, resolve_unet_preset

__all__ = ["UNet", "UNET_PRESETS"]


class _EncoderLevel(nn.Module):
    def __init__(self, cin: int, cout: int, pool: bool):
        super().__init__()
        if pool:
            self.pool = nn.AvgPool2d(2)
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.act1 = nn.ReLU()
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
        self.act2 = nn.ReLU()

    def forward(self, x: Tensor) -> Tensor:
        if hasattr(self, "pool"):
            x = self.pool(x)
        return self.act2(self.conv2(self.act1(self.conv1(x))))


class _DecoderLevel(nn.Module):
    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.up = nn.ConvTranspose2d(cin, cout, 2, stride=2)
        self.up_act = nn.ReLU()
        self.conv1 = nn.Conv2d(2 * cout, cout, 3, padding=1)
        self.act1 = nn.ReLU()
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
        self.act2 = nn.ReLU()

    def forward(self, x: Tensor, skip: Tensor) -> Tensor:
        u = self.up_act(self.up(x))
        h = torch.cat([skip, u], dim=1)
        return self.act2(self.conv2(self.act1(self.conv1(h))))


class UNet(nn.Module):
    """ANN U-Net denoiser (residual).

    Args:
        in_channels: 1 or 3.
        base_channels, levels: size (None = from ``preset``: ``"full"`` = 64, 5; ``"tiny"`` = 8, 3).
        width: channel multiplier.
        preset: ``"full"`` (default) or ``"tiny"``.
        residual: output ``x + prediction``.
        checkpoint: weights loaded with ``teachers.weights.load_weights``; the resolved path is kept
            in ``checkpoint_path``.
    """

    def __init__(
        self,
        in_channels: int = 1,
        base_channels: int | None = None,
        levels: int | None = None,
        width: float = 1.0,
        preset: str | None = None,
        residual: bool = True,
        checkpoint: str | None = None,
    ):
        super().__init__()
        self.in_channels = check_int("in_channels", in_channels)
        base, nlev = resolve_unet_preset(preset, base_channels, levels)
        self.channels = channels_for(base, nlev, width)
        self.base_channels, self.levels, self.width = base, nlev, float(width)
        self.residual = bool(residual)
        ch = self.channels
        self.encoders = nn.ModuleList(
            _EncoderLevel(in_channels if i == 0 else ch[i - 1], c, pool=i > 0) for i, c in enumerate(ch)
        )
        self.decoders = nn.ModuleList(_DecoderLevel(ch[i + 1], ch[i]) for i in range(nlev - 2, -1, -1))
        self.out = nn.Conv2d(ch[0], in_channels, 1)
        self.checkpoint_path: str | None = None
        if checkpoint is not None:
            from teachers.weights import load_weights  # lazy: only needed when loading

            resolved = load_weights(self, checkpoint)
            self.checkpoint_path = str(resolved) if isinstance(resolved, (str, os.PathLike)) else str(checkpoint)

    def forward(self, x: Tensor) -> Tensor:
        check_input(x, self.in_channels, type(self).__name__)
        xp, (H, W) = pad_to_multiple(x, 2 ** (self.levels - 1))
        h = self.encoders[0](xp)
        skips = [h]
        for enc in self.encoders[1:]:
            h = enc(h)
            skips.append(h)
        for j, dec in enumerate(self.decoders):
            h = dec(h, skips[-2 - j])
        r = self.out(h)[..., :H, :W]
        return x + r if self.residual else r
