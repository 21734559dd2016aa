"""Restoration losses (L1, MSE, Charbonnier, 1-SSIM, FFT amplitude), composable with weights."""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchmetrics.functional.image import structural_similarity_index_measure

from distill.errors import ConfigError
from distill.schedules import WeightSchedule, scheduled
from spikedistill_core.checks import check_number


def charbonnier(pred: Tensor, target: Tensor, eps: float = 1e-3) -> Tensor:
    """Charbonnier loss sqrt((x - y)^2 + eps^2), a smooth L1."""
    return torch.sqrt((pred - target) ** 2 + eps * eps).mean()


def ssim_loss(pred: Tensor, target: Tensor) -> Tensor:
    """1 - SSIM (Gaussian window 11, sigma 1.5, data range 1)."""
    return 1.0 - structural_similarity_index_measure(pred, target, data_range=1.0)


def fft_loss(pred: Tensor, target: Tensor) -> Tensor:
    """L1 distance between the FFT amplitude spectra, the frequency term of the Bridge recipe."""
    return F.l1_loss(torch.fft.rfft2(pred, norm="ortho").abs(), torch.fft.rfft2(target, norm="ortho").abs())


PIXEL_LOSSES: dict[str, Callable[[Tensor, Tensor], Tensor]] = {
    "l1": F.l1_loss,
    "mse": F.mse_loss,
    "charbonnier": charbonnier,
    "ssim": ssim_loss,
    "fft": fft_loss,
}


def pixel_loss(name: str) -> Callable[[Tensor, Tensor], Tensor]:
    """The loss function called `name`, or a ConfigError listing the valid names."""
    try:
        return PIXEL_LOSSES[name]
    except KeyError:
        raise ConfigError(f"unknown loss {name!r}; choose one of {sorted(PIXEL_LOSSES)}") from None


class RestorationLoss(nn.Module):
    """Weighted sum of pixel losses; each weight may follow a schedule. Bridge: l1=1, fft=0.1."""

    def __init__(
        self,
        l1: float = 1.0,
        mse: float = 0.0,
        charbonnier: float = 0.0,
        ssim: float = 0.0,
        fft: float = 0.0,
        schedules: dict[str, WeightSchedule] | None = None,
    ) -> None:
        super().__init__()
        self.weights = {"l1": l1, "mse": mse, "charbonnier": charbonnier, "ssim": ssim, "fft": fft}
        for name, weight in self.weights.items():
            check_number(f"loss weight {name}", weight, 0)
        if not any(self.weights.values()):
            raise ConfigError("RestorationLoss needs at least one positive weight among " f"{sorted(self.weights)}")
        self.schedules = dict(schedules or {})
        unknown = set(self.schedules) - set(self.weights)
        if unknown:
            raise ConfigError(f"schedules for unknown loss terms {sorted(unknown)}; valid: {sorted(self.weights)}")

    def forward(self, pred: Tensor, target: Tensor, step: int = 0) -> tuple[Tensor, dict[str, Tensor]]:
        """Total loss and the unweighted value of every active term."""
        total = pred.new_zeros(())
        parts: dict[str, Tensor] = {}
        for name, weight in self.weights.items():
            weight = scheduled(weight, self.schedules.get(name), step)
            if weight == 0:
                continue
            parts[name] = PIXEL_LOSSES[name](pred, target)
            total = total + weight * parts[name]
        return total, parts
