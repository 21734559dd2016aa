"""Gaussian denoising data: clean images, additive white Gaussian noise drawn on the fly."""
from __future__ import annotations

from typing import Any, Sequence

import torch

from distill.data.base import Degradation, ImageRecord, RestorationDataModule, load_flat_records
from distill.errors import ConfigError
from spikedistill_core.checks import check_number


def _check_level(name: str, value: object) -> float:
    return check_number(name, value, 0, hint=" on the 0-255 pixel scale")


def check_sigma(sigma: object, sigma_range: object) -> tuple[float | None, tuple[float, float] | None]:
    """Validate the fixed level `sigma` or the blind `sigma_range` (exactly one of them, 0-255 scale)."""
    if sigma is not None and sigma_range is not None:
        raise ConfigError(
            f"sigma={sigma!r} and sigma_range={sigma_range!r} are mutually exclusive: set sigma=null "
            f"for blind training on a range, or sigma_range=null for one fixed level"
        )
    if sigma is None and sigma_range is None:
        raise ConfigError("sigma=None and sigma_range=None: give a fixed sigma or a [min, max] sigma_range")
    if sigma is not None:
        return _check_level("sigma", sigma), None
    if isinstance(sigma_range, (str, bytes)) or not isinstance(sigma_range, Sequence) or len(sigma_range) != 2:
        raise ConfigError(f"sigma_range={sigma_range!r} is not allowed: use [min, max] on the 0-255 scale")
    lo = _check_level("sigma_range min", sigma_range[0])
    hi = _check_level("sigma_range max", sigma_range[1])
    if lo > hi:
        raise ConfigError(f"sigma_range={list(sigma_range)!r} is not allowed: min must be <= max")
    return None, (lo, hi)


class GaussianNoise(Degradation):
    """``input = target + N(0, (sigma/255)^2)``, not clipped.

    Training: `sigma`, or per patch ``U[min, max]`` of `sigma_range` (blind).
    Evaluation: `eval_sigma` if given, else `sigma`, else a per-image ``U[min, max]`` draw from the
    image's fixed seed.
    """

    def __init__(self, sigma: float | None, sigma_range: tuple[float, float] | None,
                 eval_sigma: float | None = None) -> None:
        self.sigma = sigma
        self.sigma_range = sigma_range
        self.eval_sigma = eval_sigma

    def _level(self, generator: torch.Generator) -> float:
        if self.sigma is not None:
            return self.sigma
        assert self.sigma_range is not None
        lo, hi = self.sigma_range
        u = float(torch.rand((), generator=generator, dtype=torch.float64))
        return lo + (hi - lo) * u

    @staticmethod
    def _noisy(target: torch.Tensor, level: float, generator: torch.Generator) -> tuple[torch.Tensor, float]:
        s = level / 255.0
        noise = torch.randn(target.shape, generator=generator, dtype=torch.float32)
        return target + noise * s, s

    def train(self, target, paired, generator):
        return self._noisy(target, self._level(generator), generator)

    def eval(self, target, paired, generator):
        level = self.eval_sigma if self.eval_sigma is not None else self._level(generator)
        return self._noisy(target, level, generator)


class DenoisingDataModule(RestorationDataModule):
    """Denoising batches (CONTRIBUTING.md): noisy `input`, clean `target`, `sigma` [B] on the 0-1 scale.

    Args:
        sigma: fixed noise level on the 0-255 scale; ``None`` for blind training with `sigma_range`.
        sigma_range: ``(min, max)``: blind training, level ``U[min, max]`` per patch. Needs ``sigma=None``.
        eval_sigma: level for validation/test; default `sigma`, or for blind data a per-image level
            drawn once from the image's fixed seed.
        **kwargs: the :class:`~distill.data.base.RestorationDataModule` arguments (folders, channels,
            crops, batch size, seed, ...).
    """

    task = "denoise"

    def __init__(
        self,
        sigma: float | None = 25.0,
        sigma_range: tuple[float, float] | None = None,
        eval_sigma: float | None = None,
        **kwargs: Any,
    ) -> None:
        self.sigma, self.sigma_range = check_sigma(sigma, sigma_range)
        self.eval_sigma = None if eval_sigma is None else _check_level("eval_sigma", eval_sigma)
        super().__init__(**kwargs)

    def _load_records(self, split: str, folders: list[str] | None) -> list[ImageRecord]:
        return load_flat_records(folders, split, self.channels)

    def _degradation(self) -> GaussianNoise:
        return GaussianNoise(self.sigma, self.sigma_range, self.eval_sigma)
