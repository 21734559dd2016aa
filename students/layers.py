"""Building blocks shared by the spiking students (and, with ReLU and T=1, by their ANN twins)."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from spikedistill_core.errors import ConfigError

from .engine import TimeDistributed

__all__ = [
    "NORMS",
    "TDBatchNorm2d",
    "build_norm",
    "td_conv",
    "MultiDimensionalAttention",
    "RefinementHead",
    "pad_to_multiple",
    "check_input",
]

NORMS = ("bn", "tdbn", "none")


class TDBatchNorm2d(nn.BatchNorm2d):
    """Threshold-dependent batch norm (tdBN, Zheng et al. 2021): batch norm over the folded ``T*B``
    batch (wrap it in :class:`TimeDistributed`) whose scale starts at ``alpha * threshold``."""

    def __init__(self, num_features: int, alpha: float = 1.0, threshold: float = 1.0, **kwargs):
        super().__init__(num_features, **kwargs)
        self.alpha = float(alpha)
        self.v_threshold = float(threshold)
        if self.affine:
            with torch.no_grad():
                self.weight.fill_(self.alpha * self.v_threshold)

    def extra_repr(self) -> str:
        return super().extra_repr() + f", alpha={self.alpha:g}, threshold={self.v_threshold:g}"


def build_norm(norm: str, channels: int, threshold: float = 1.0, alpha: float = 1.0) -> nn.Module | None:
    """``"bn"`` -> TimeDistributed(BatchNorm2d), ``"tdbn"`` -> TimeDistributed(TDBatchNorm2d), ``"none"`` -> None."""
    if norm == "bn":
        return TimeDistributed(nn.BatchNorm2d(channels))
    if norm == "tdbn":
        return TimeDistributed(TDBatchNorm2d(channels, alpha=alpha, threshold=threshold))
    if norm == "none":
        return None
    raise ConfigError(f"norm={norm!r} is not allowed; use one of {list(NORMS)}")


def td_conv(cin: int, cout: int, kernel_size: int = 3, stride: int = 1, bias: bool = True) -> TimeDistributed:
    return TimeDistributed(nn.Conv2d(cin, cout, kernel_size, stride, kernel_size // 2, bias=bias))


def check_input(x: Tensor, in_channels: int, owner: str) -> None:
    if x.dim() != 4 or x.shape[1] != in_channels:
        raise ValueError(f"{owner} expects [B, {in_channels}, H, W], got shape {tuple(x.shape)}")


class MultiDimensionalAttention(nn.Module):
    """Temporal, channel and spatial attention over ``[T, B, C, H, W]`` (after MA-SNN, Yao et al. 2023),
    applied in that order, each a sigmoid gate multiplied into the input, then a ReLU.

    * temporal: per-step average and max over (C, H, W) -> a 1-D conv across time (kernel
      ``kernel_t``) -> sigmoid. A conv rather than MA-SNN's ``Linear(T, T/r)`` keeps the parameter
      shapes independent of T (so the T=1 ANN twin has the same parameters);
    * channel: average and max over (T, H, W) -> shared MLP ``C -> C/r -> C`` -> sigmoid;
    * spatial: mean and max over (T, C) -> ``kernel_size`` conv -> sigmoid.
    """

    def __init__(self, channels: int, reduction_c: int = 16, kernel_t: int = 3, kernel_size: int = 3):
        super().__init__()
        hidden = max(1, channels // reduction_c)
        self.temporal = nn.Conv1d(2, 1, kernel_t, padding=kernel_t // 2, bias=False)
        self.channel = nn.Sequential(
            nn.Conv2d(channels, hidden, 1, bias=False), nn.ReLU(), nn.Conv2d(hidden, channels, 1, bias=False)
        )
        self.spatial = nn.Conv2d(2, 1, kernel_size, padding=kernel_size // 2, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        T, B, C, H, W = x.shape
        # temporal gate [T, B, 1, 1, 1]
        flat = x.reshape(T, B, -1)
        desc = torch.stack([flat.mean(-1), flat.amax(-1)], dim=0)  # [2, T, B]
        wt = torch.sigmoid(self.temporal(desc.permute(2, 0, 1)))  # [B, 1, T]
        out = x * wt.permute(2, 0, 1).reshape(T, B, 1, 1, 1)
        # channel gate [1, B, C, 1, 1]
        avg = out.mean(dim=(0, 3, 4)).reshape(B, C, 1, 1)
        mx = out.amax(dim=(0, 3, 4)).reshape(B, C, 1, 1)
        wc = torch.sigmoid(self.channel(avg) + self.channel(mx))
        out = out * wc.unsqueeze(0)
        # spatial gate [1, B, 1, H, W]
        sp = torch.stack([out.mean(dim=(0, 2)), out.amax(dim=(0, 2))], dim=1)  # [B, 2, H, W]
        ws = torch.sigmoid(self.spatial(sp))
        out = out * ws.unsqueeze(0)
        return torch.relu(out)


class RefinementHead(nn.Module):
    """ANN head on time-averaged features ``[B, C, H, W]``: channel and spatial gating, residual."""

    def __init__(self, channels: int, reduction: int = 8):
        super().__init__()
        hidden = max(1, channels // reduction)
        self.channel = nn.Sequential(
            nn.AdaptiveAvgPool2d(1),
            nn.Conv2d(channels, hidden, 1),
            nn.ReLU(),
            nn.Conv2d(hidden, channels, 1),
            nn.Sigmoid(),
        )
        self.spatial = nn.Sequential(
            nn.Conv2d(channels, hidden, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(hidden, 1, 3, padding=1),
            nn.Sigmoid(),
        )

    def forward(self, x: Tensor) -> Tensor:
        return x + x * self.channel(x) * self.spatial(x)


def pad_to_multiple(x: Tensor, multiple: int) -> tuple[Tensor, tuple[int, int]]:
    """Pad ``[B, C, H, W]`` at the bottom/right to multiples of ``multiple`` (reflect when possible,
    else replicate); returns the padded tensor and the original ``(H, W)``."""
    H, W = x.shape[-2:]
    ph = (-H) % multiple
    pw = (-W) % multiple
    if ph == 0 and pw == 0:
        return x, (H, W)
    mode = "reflect" if ph < H and pw < W else "replicate"
    return F.pad(x, (0, pw, 0, ph), mode=mode), (H, W)


def channels_for(base: int, levels: int, width: float) -> list[int]:
    """``[round(base * width * 2**i)]`` for each level (at least 1)."""
    if not (isinstance(width, (int, float)) and math.isfinite(width) and width > 0):
        raise ConfigError(f"width={width!r} is not allowed; it must be a number > 0")
    return [max(1, int(round(base * width * 2**i))) for i in range(levels)]
