"""Seeded synthetic rain streaks, in the additive model of Rain100L/H: ``O = clip(B + S)``.

Per streak layer:

1. sparse seeds: each pixel is a drop with probability ``density``, brightness ``U[0.5, 1]``;
2. one kernel = a line of ``length`` pixels at ``angle`` degrees from vertical, widened by a
   Gaussian of std ``width``, normalised to peak 1 (a lone drop becomes a streak of its brightness);
3. the seeds (drawn on a canvas padded by the kernel, so streak density is uniform up to the
   borders) are convolved with that kernel, scaled by ``intensity``;

the layers are summed, clipped to [0, 1] and added to every channel of the background, then the
result is clipped to [0, 1]. All randomness comes from one ``torch.Generator``: same seed, same rain.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from distill.errors import ConfigError


@dataclass(frozen=True)
class RainPreset:
    """Parameters of the generator; each ``(a, b)`` pair is a uniform range drawn per layer."""

    density: tuple[float, float]
    length: tuple[int, int]
    width: tuple[float, float]
    angle: tuple[float, float]  # base angle from vertical, degrees, drawn once per image
    angle_jitter: float  # per-layer deviation from the base angle, degrees
    intensity: tuple[float, float]
    layers: int


PRESETS: dict[str, RainPreset] = {
    "light": RainPreset(density=(0.002, 0.004), length=(9, 15), width=(0.4, 0.6),
                        angle=(-20.0, 20.0), angle_jitter=3.0, intensity=(0.35, 0.5), layers=1),
    "heavy": RainPreset(density=(0.0025, 0.004), length=(13, 23), width=(0.5, 0.8),
                        angle=(-30.0, 30.0), angle_jitter=8.0, intensity=(0.35, 0.55), layers=3),
}


def get_preset(preset: str | RainPreset) -> RainPreset:
    if isinstance(preset, RainPreset):
        return preset
    if preset not in PRESETS:
        raise ConfigError(f"rain preset {preset!r} is not allowed: use one of {', '.join(PRESETS)}")
    return PRESETS[preset]


def _uniform(g: torch.Generator, lo: float, hi: float) -> float:
    return lo + (hi - lo) * float(torch.rand((), generator=g, dtype=torch.float64))


def streak_kernel(length: int, angle_deg: float, width: float) -> torch.Tensor:
    """``[k, k]`` kernel: an anti-aliased line of `length` px at `angle_deg` from vertical, Gaussian
    widened by `width` (std, px), peak normalised to 1."""
    radius = int(math.ceil(length / 2 + 3 * width)) + 1
    k = 2 * radius + 1
    theta = math.radians(angle_deg)
    dy, dx = math.cos(theta), math.sin(theta)
    ys = torch.arange(k, dtype=torch.float64) - radius
    yy, xx = torch.meshgrid(ys, ys, indexing="ij")
    # distance from each pixel centre to the segment of half-length L/2 through the centre
    t = (yy * dy + xx * dx).clamp(-length / 2, length / 2)
    dist2 = (yy - t * dy) ** 2 + (xx - t * dx) ** 2
    kern = torch.exp(-dist2 / (2 * max(width, 0.25) ** 2))
    kern = kern / kern.max()
    return kern.to(torch.float32)


def rain_layer(height: int, width: int, preset: str | RainPreset = "light",
               generator: torch.Generator | None = None) -> torch.Tensor:
    """Rain streak layer ``[1, height, width]`` in [0, 1]."""
    if height < 1 or width < 1:
        raise ConfigError(f"rain_layer size {height}x{width} is not allowed: both must be >= 1")
    p = get_preset(preset)
    g = generator if generator is not None else torch.Generator().manual_seed(0)
    base = _uniform(g, *p.angle)
    out = torch.zeros(1, 1, height, width)
    for _ in range(p.layers):
        length = int(round(_uniform(g, p.length[0], p.length[1])))
        angle = base + _uniform(g, -p.angle_jitter, p.angle_jitter)
        kern = streak_kernel(length, angle, _uniform(g, *p.width))
        r = kern.shape[-1] // 2
        density = _uniform(g, *p.density)
        intensity = _uniform(g, *p.intensity)
        shape = (1, 1, height + 2 * r, width + 2 * r)
        drops = (torch.rand(shape, generator=g) < density).to(torch.float32)
        drops = drops * (0.5 + 0.5 * torch.rand(shape, generator=g))
        out += intensity * _conv_valid(drops, kern)
    return out[0].clamp_(0.0, 1.0)


def _fast_len(n: int) -> int:
    """Smallest 5-smooth integer >= n (FFT sizes with only factors 2, 3, 5 are fast)."""
    m = n
    while True:
        r = m
        for f in (2, 3, 5):
            while r % f == 0:
                r //= f
        if r == 1:
            return m
        m += 1


def _conv_valid(canvas: torch.Tensor, kern: torch.Tensor) -> torch.Tensor:
    """'Valid' convolution of ``[1, 1, H + k - 1, W + k - 1]`` with a symmetric ``[k, k]`` kernel, via FFT.

    Values below 1e-6 (FFT round-off where there is no streak) are set to exactly 0.
    """
    hh, ww = canvas.shape[-2:]
    k = kern.shape[-1]
    size = (_fast_len(hh), _fast_len(ww))
    spec = torch.fft.rfft2(canvas[0, 0].double(), s=size) * torch.fft.rfft2(kern.double(), s=size)
    full = torch.fft.irfft2(spec, s=size)
    out = full[k - 1:hh, k - 1:ww].to(torch.float32)
    out = torch.where(out.abs() < 1e-6, torch.zeros_like(out), out)
    return out[None, None]


def add_rain(clean: torch.Tensor, preset: str | RainPreset = "light",
             generator: torch.Generator | int | None = None) -> torch.Tensor:
    """Rainy version of `clean` (``[C, H, W]`` or ``[B, C, H, W]`` in [0, 1], gray or RGB), clipped to [0, 1].

    `generator` may be a ``torch.Generator`` or an int seed (None means seed 0). A batch gets an
    independent layer per image, drawn in order from the generator.
    """
    if generator is None or isinstance(generator, int):  # one generator for the batch: a layer per image
        generator = torch.Generator().manual_seed(generator or 0)
    if clean.dim() == 4:
        return torch.stack([add_rain(c, preset, generator) for c in clean])
    if clean.dim() != 3:
        raise ConfigError(f"add_rain expects [C, H, W] or [B, C, H, W], got shape {tuple(clean.shape)}")
    layer = rain_layer(clean.shape[-2], clean.shape[-1], preset, generator)
    return (clean + layer.to(clean.dtype)).clamp(0.0, 1.0)
