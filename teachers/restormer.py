"""Restormer (Zamir et al., CVPR 2022): a U-shaped transformer with transposed (channel) attention.

Built from MDTA (multi-Dconv-head transposed attention: attention over channels, so its cost is
linear in the pixel count) and GDFN (gated depth-wise-conv feed-forward) blocks. With ``L`` levels
(``len(num_blocks)``) the modules are named as in the official ``restormer_arch.py`` (for ``L = 4``
its released ``params`` load unchanged):

``patch_embed`` -> ``encoder_level1`` -> ``down1_2`` -> ``encoder_level2`` ... ``down{L-1}_{L}`` ->
``latent`` -> ``up{L}_{L-1}`` + skip concat + ``reduce_chan_level{L-1}`` (1x1) -> ``decoder_level{L-1}``
... -> ``up2_1`` + skip concat (no reduce) -> ``decoder_level1`` -> ``refinement`` -> ``output``
(+ input). Level ``i`` runs at ``dim * 2**(i-1)`` channels (``decoder_level1`` and ``refinement``
at ``2 * dim``) and ``1 / 2**(i-1)`` resolution. Inputs are padded (reflect, replicate when too
small) to a multiple of ``2**(L-1)`` and the output is cropped back.

Official releases (BasicSR files ``{"params": state dict}``, read by ``load_weights``): deraining and
deblurring use the defaults; the Gaussian and real denoising ones use ``layernorm_type="BiasFree"``
(grayscale Gaussian also ``in_channels=1``). Dual-pixel defocus deblurring is not supported.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from spikedistill_core.errors import ConfigError
from teachers.weights import load_weights

__all__ = ["Restormer", "PRESETS", "LAYERNORM_TYPES"]

LAYERNORM_TYPES = ("WithBias", "BiasFree")

#: Architecture presets: ``default`` is the paper's model, ``tiny`` a CPU-sized one (0.74 M params vs 26.1 M).
PRESETS: dict[str, dict[str, Any]] = {
    "default": dict(dim=48, num_blocks=(4, 6, 6, 8), num_refinement_blocks=4, heads=(1, 2, 4, 8),
                    ffn_expansion_factor=2.66),
    "tiny": dict(dim=16, num_blocks=(1, 1, 1, 1), num_refinement_blocks=1, heads=(1, 1, 2, 4),
                 ffn_expansion_factor=2.0),
}
_DEFAULTS = PRESETS["default"]


class _LayerNormWeights(nn.Module):
    """Per-channel scale (and shift) of the channel layer norm; holds the parameters only."""

    def __init__(self, channels: int, with_bias: bool) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels)) if with_bias else None


class ChannelLayerNorm(nn.Module):
    """Layer norm over the channels of every pixel of a ``[B, C, H, W]`` map."""

    def __init__(self, channels: int, layernorm_type: str = "WithBias", eps: float = 1e-5) -> None:
        super().__init__()
        self.with_bias = layernorm_type == "WithBias"
        self.eps = eps
        self.body = _LayerNormWeights(channels, self.with_bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Normalise over dim 1; ``BiasFree`` scales by the variance without centring the output."""
        var = x.var(dim=1, keepdim=True, unbiased=False)
        scale = self.body.weight.view(1, -1, 1, 1)
        if self.with_bias:
            mu = x.mean(dim=1, keepdim=True)
            return (x - mu) * torch.rsqrt(var + self.eps) * scale + self.body.bias.view(1, -1, 1, 1)
        return x * torch.rsqrt(var + self.eps) * scale


class MDTA(nn.Module):
    """Multi-Dconv-head transposed attention: per head, a C/h x C/h attention map over channels."""

    def __init__(self, dim: int, num_heads: int, bias: bool) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.temperature = nn.Parameter(torch.ones(num_heads, 1, 1))
        self.qkv = nn.Conv2d(dim, dim * 3, 1, bias=bias)
        self.qkv_dwconv = nn.Conv2d(dim * 3, dim * 3, 3, padding=1, groups=dim * 3, bias=bias)
        self.project_out = nn.Conv2d(dim, dim, 1, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Attend across channels with L2-normalised queries and keys and a learned temperature."""
        b, c, h, w = x.shape
        q, k, v = self.qkv_dwconv(self.qkv(x)).chunk(3, dim=1)
        q, k, v = (t.reshape(b, self.num_heads, c // self.num_heads, h * w) for t in (q, k, v))
        q = F.normalize(q, dim=-1)
        k = F.normalize(k, dim=-1)
        attn = (q @ k.transpose(-2, -1)) * self.temperature
        out = attn.softmax(dim=-1) @ v
        return self.project_out(out.reshape(b, c, h, w))


class GDFN(nn.Module):
    """Gated-Dconv feed-forward network: GELU(dwconv branch 1) * dwconv branch 2, then 1x1 out."""

    def __init__(self, dim: int, ffn_expansion_factor: float, bias: bool) -> None:
        super().__init__()
        hidden = int(dim * ffn_expansion_factor)
        self.project_in = nn.Conv2d(dim, hidden * 2, 1, bias=bias)
        self.dwconv = nn.Conv2d(hidden * 2, hidden * 2, 3, padding=1, groups=hidden * 2, bias=bias)
        self.project_out = nn.Conv2d(hidden, dim, 1, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Gate one half of the expanded features with the GELU of the other."""
        gate, value = self.dwconv(self.project_in(x)).chunk(2, dim=1)
        return self.project_out(F.gelu(gate) * value)


class TransformerBlock(nn.Module):
    """Pre-norm residual block: ``x + MDTA(LN(x))`` then ``x + GDFN(LN(x))``."""

    def __init__(self, dim: int, num_heads: int, ffn_expansion_factor: float, bias: bool,
                 layernorm_type: str) -> None:
        super().__init__()
        self.norm1 = ChannelLayerNorm(dim, layernorm_type)
        self.attn = MDTA(dim, num_heads, bias)
        self.norm2 = ChannelLayerNorm(dim, layernorm_type)
        self.ffn = GDFN(dim, ffn_expansion_factor, bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the attention and feed-forward sub-blocks with residuals."""
        x = x + self.attn(self.norm1(x))
        return x + self.ffn(self.norm2(x))


class OverlapPatchEmbed(nn.Module):
    """3x3 conv embedding of the image into ``dim`` channels."""

    def __init__(self, in_channels: int, dim: int, bias: bool = False) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_channels, dim, 3, padding=1, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Embed the image."""
        return self.proj(x)


class Downsample(nn.Module):
    """Halve the resolution, double the channels: 3x3 conv to C/2, then pixel-unshuffle(2)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(channels, channels // 2, 3, padding=1, bias=False),
                                  nn.PixelUnshuffle(2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Downsample ``x``."""
        return self.body(x)


class Upsample(nn.Module):
    """Double the resolution, halve the channels: 3x3 conv to 2C, then pixel-shuffle(2)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(channels, channels * 2, 3, padding=1, bias=False),
                                  nn.PixelShuffle(2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Upsample ``x``."""
        return self.body(x)


def _stage(n: int, dim: int, heads: int, ffn: float, bias: bool, ln: str) -> nn.Sequential:
    return nn.Sequential(*[TransformerBlock(dim, heads, ffn, bias, ln) for _ in range(n)])


class Restormer(nn.Module):
    """Restormer U-shaped transformer restorer (MDTA + GDFN), levels and heads configurable, residual output."""

    needs_sigma = False

    def __init__(
        self,
        in_channels: int = 3,
        dim: int = 48,
        num_blocks: Sequence[int] = (4, 6, 6, 8),
        num_refinement_blocks: int = 4,
        heads: Sequence[int] = (1, 2, 4, 8),
        ffn_expansion_factor: float = 2.66,
        bias: bool = False,
        layernorm_type: str = "WithBias",
        preset: str | None = None,
        checkpoint: str | None = None,
    ) -> None:
        super().__init__()
        if preset is not None:
            if preset not in PRESETS:
                raise ConfigError(f"Restormer preset {preset!r} unknown; allowed: {sorted(PRESETS)}")
            given = dict(dim=dim, num_blocks=tuple(num_blocks), num_refinement_blocks=num_refinement_blocks,
                         heads=tuple(heads), ffn_expansion_factor=ffn_expansion_factor)
            changed = [k for k, v in given.items() if v != _DEFAULTS[k] and v != PRESETS[preset][k]]
            if changed:
                raise ConfigError(
                    f"Restormer preset {preset!r} sets {changed}; pass either the preset or those "
                    "arguments, not both"
                )
            dim = PRESETS[preset]["dim"]
            num_blocks = PRESETS[preset]["num_blocks"]
            num_refinement_blocks = PRESETS[preset]["num_refinement_blocks"]
            heads = PRESETS[preset]["heads"]
            ffn_expansion_factor = PRESETS[preset]["ffn_expansion_factor"]
        num_blocks, heads = tuple(int(n) for n in num_blocks), tuple(int(h) for h in heads)
        self._validate(in_channels, dim, num_blocks, num_refinement_blocks, heads,
                       ffn_expansion_factor, layernorm_type)
        self.in_channels = in_channels
        self.dim = dim
        self.num_blocks = num_blocks
        self.heads = heads
        self.levels = levels = len(num_blocks)
        self.preset = preset
        ffn, ln = ffn_expansion_factor, layernorm_type

        self.patch_embed = OverlapPatchEmbed(in_channels, dim)
        for i in range(1, levels):  # encoder levels 1 .. L-1 and the downsamplers between them
            width = dim * 2 ** (i - 1)
            self.add_module(f"encoder_level{i}", _stage(num_blocks[i - 1], width, heads[i - 1], ffn, bias, ln))
            self.add_module(f"down{i}_{i + 1}", Downsample(width))
        self.latent = _stage(num_blocks[-1], dim * 2 ** (levels - 1), heads[-1], ffn, bias, ln)
        for i in range(levels - 1, 0, -1):  # decoder levels L-1 .. 1
            width = dim * 2 ** (i - 1)
            self.add_module(f"up{i + 1}_{i}", Upsample(width * 2))
            if i > 1:
                self.add_module(f"reduce_chan_level{i}", nn.Conv2d(width * 2, width, 1, bias=bias))
            else:
                width = dim * 2  # level 1 keeps the concatenated 2*dim channels
            self.add_module(f"decoder_level{i}", _stage(num_blocks[i - 1], width, heads[i - 1], ffn, bias, ln))
        self.refinement = _stage(num_refinement_blocks, dim * 2, heads[0], ffn, bias, ln)
        self.output = nn.Conv2d(dim * 2, in_channels, 3, padding=1, bias=bias)
        self.checkpoint_path = load_weights(self, checkpoint) if checkpoint else None

    @staticmethod
    def _validate(in_channels: int, dim: int, num_blocks: tuple[int, ...], num_refinement_blocks: int,
                  heads: tuple[int, ...], ffn_expansion_factor: float, layernorm_type: str) -> None:
        if in_channels < 1:
            raise ConfigError(f"in_channels={in_channels}: must be >= 1")
        if dim < 2 or dim % 2:
            raise ConfigError(f"dim={dim}: must be an even integer >= 2 (downsampling halves it)")
        if len(num_blocks) < 2 or min(num_blocks) < 1:
            raise ConfigError(f"num_blocks={num_blocks}: need >= 2 levels, each with >= 1 block")
        if num_refinement_blocks < 0:
            raise ConfigError(f"num_refinement_blocks={num_refinement_blocks}: must be >= 0")
        if len(heads) != len(num_blocks):
            raise ConfigError(f"heads={heads}: need one entry per level ({len(num_blocks)})")
        for i, h in enumerate(heads):
            width = dim * 2 ** i
            if h < 1 or width % h:
                raise ConfigError(f"heads[{i}]={h}: must divide the level's {width} channels")
        if ffn_expansion_factor <= 0:
            raise ConfigError(f"ffn_expansion_factor={ffn_expansion_factor}: must be > 0")
        if layernorm_type not in LAYERNORM_TYPES:
            raise ConfigError(f"layernorm_type={layernorm_type!r}; allowed: {list(LAYERNORM_TYPES)}")

    @classmethod
    def tiny(cls, in_channels: int = 3, checkpoint: str | None = None, **kwargs: Any) -> "Restormer":
        """The ``tiny`` preset (same module names as the full model, CPU-sized)."""
        return cls(in_channels=in_channels, preset="tiny", checkpoint=checkpoint, **kwargs)

    def hint_points(self) -> list[str]:
        """Module paths of the stage outputs: encoders, latent, decoders (deep to shallow), refinement."""
        enc = [f"encoder_level{i}" for i in range(1, self.levels)]
        dec = [f"decoder_level{i}" for i in range(self.levels - 1, 0, -1)]
        return enc + ["latent"] + dec + (["refinement"] if len(self.refinement) else [])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Restore ``x`` ([B,C,H,W]); any H, W (padded internally, cropped back)."""
        h, w = x.shape[-2:]
        m = 2 ** (self.levels - 1)
        pad_h, pad_w = (-h) % m, (-w) % m
        inp = x
        if pad_h or pad_w:
            mode = "reflect" if pad_h < h and pad_w < w else "replicate"
            inp = F.pad(x, (0, pad_w, 0, pad_h), mode=mode)
        feat = self.patch_embed(inp)
        skips = []
        for i in range(1, self.levels):
            feat = getattr(self, f"encoder_level{i}")(feat)
            skips.append(feat)
            feat = getattr(self, f"down{i}_{i + 1}")(feat)
        feat = self.latent(feat)
        for i in range(self.levels - 1, 0, -1):
            feat = torch.cat([getattr(self, f"up{i + 1}_{i}")(feat), skips[i - 1]], dim=1)
            if i > 1:
                feat = getattr(self, f"reduce_chan_level{i}")(feat)
            feat = getattr(self, f"decoder_level{i}")(feat)
        feat = self.refinement(feat)
        out = self.output(feat) + inp
        return out[..., :h, :w]
