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

import torch
from torch import Tensor, nn

from distill.errors import ConfigError

from .encoding import InputLayer, check_coding, decode
from .engine import TimeDistributed, check_timesteps, run_over_time
from .layers import channels_for, check_input, check_positive_int, pad_to_multiple
from .neurons import build_neuron
from .surrogates import Surrogate

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
    return check_positive_int("base_channels", base), check_positive_int("levels", lv)


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


class SpikingUNet(nn.Module):
    """Spiking U-Net with multi-threshold neurons (defaults) and residual output.

    Args:
        in_channels: 1 or 3.
        base_channels, levels: U-Net size (None = from ``preset``); ``width`` multiplies channels.
        preset: ``"full"`` (64, 5) or ``"tiny"`` (8, 3); default ``"full"``.
        timesteps: T >= 1.
        neuron: ``"multi_threshold"`` (default), ``"if"``, ``"lif"`` or ``"relu"`` (ANN twin).
        threshold, spike_grad, learn_threshold, beta, reset_mechanism, learn_beta, init_membrane:
            neuron options (``init_membrane`` is a fraction of threshold; conversion uses 0.125).
        encoding, rate_seed, decoding, decode_beta: see :mod:`students.encoding`.
        residual: output ``x + prediction``.
        checkpoint_segments: None or the number of checkpointed time chunks.
    """

    def __init__(
        self,
        in_channels: int = 1,
        base_channels: int | None = None,
        levels: int | None = None,
        width: float = 1.0,
        preset: str | None = None,
        timesteps: int = 4,
        neuron: str = "multi_threshold",
        threshold: float = 1.0,
        spike_grad: "str | Surrogate" = "atan",
        learn_threshold: bool = False,
        beta: float = 0.9,
        reset_mechanism: str = "subtract",
        learn_beta: bool = False,
        init_membrane: float = 0.0,
        encoding: str = "direct",
        decoding: str = "mean",
        decode_beta: float = 0.9,
        residual: bool = True,
        rate_seed: int | None = 0,
        checkpoint_segments: int | None = None,
    ):
        super().__init__()
        self.in_channels = check_positive_int("in_channels", in_channels)
        self.timesteps = check_timesteps(timesteps)
        base, nlev = resolve_unet_preset(preset, base_channels, levels)
        check_coding(encoding, decoding, decode_beta)
        self.channels = channels_for(base, nlev, width)
        self.base_channels, self.levels, self.width = base, nlev, float(width)
        self.decoding, self.decode_beta = decoding, float(decode_beta)
        self.residual = bool(residual)
        self.checkpoint_segments = checkpoint_segments
        self.neuron_kind = neuron

        def act():
            return build_neuron(
                neuron, beta=beta, threshold=threshold, spike_grad=spike_grad,
                reset_mechanism=reset_mechanism, learn_beta=learn_beta, learn_threshold=learn_threshold,
                init_membrane=init_membrane,
            )

        def conv(cin, cout):
            return TimeDistributed(nn.Conv2d(cin, cout, 3, padding=1))

        ch = self.channels
        encoders = []
        for i, c in enumerate(ch):
            if i == 0:
                first = InputLayer(nn.Conv2d(in_channels, c, 3, padding=1), timesteps, encoding, rate_seed)
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
        self.out = nn.Conv2d(ch[0], in_channels, 1)

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
        return x + r if self.residual else r
