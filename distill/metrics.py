"""Per-image PSNR / SSIM, averaged over images, as restoration papers report them.

Protocol (also returned by `RestorationMetrics.protocol()` for results.json):

* Every image is scored on its own and the scores are averaged over images. (torchmetrics'
  default PSNR pools the squared error over the whole batch, which is not the per-image mean; here
  PSNR uses ``reduction="elementwise_mean", dim=(1, 2, 3)``.)
* Predictions are clamped to ``[0, data_range]`` before scoring (a restored image is displayed and
  saved clipped); targets are scored as given. ``quantize=True`` also rounds predictions to the
  255 levels of an 8-bit image (BasicSR saves outputs as uint8 before scoring).
* ``y_channel=True``: RGB is converted to BT.601 luma as BasicSR does,
  ``Y = 16/255 + (65.481 R + 128.553 G + 24.966 B) / 255`` on the [0, 1] scale (so Y is in
  [16/255, 235/255]; for another `data_range` the image is scaled to [0, 1] and back). One-channel
  images are scored as they are.
* ``crop_border=n`` removes ``n`` pixels on each side (after the Y conversion).
* SSIM: Gaussian window 11x11, sigma 1.5, K1=0.01, K2=0.03, population covariance, mean over the
  valid region (the SSIM map without its 5-pixel border, as Wang et al.'s 'valid' filtering) and
  the channels: the same numbers as scikit-image's ``structural_similarity(gaussian_weights=True,
  sigma=1.5, use_sample_covariance=False, data_range=data_range, channel_axis=...)``.
  torchmetrics' SSIM class averages the map *including* the reflect-padded border, which reads
  higher on small images, so the map comes from torchmetrics' functional SSIM
  (``return_full_image=True``), is cropped here, and per-image values are averaged with
  ``MeanMetric``.
* Scores are computed in float64 (float32 on MPS). A perfect prediction has PSNR ``inf``.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn
from torchmetrics import MeanMetric
from torchmetrics.functional.image import peak_signal_noise_ratio, structural_similarity_index_measure
from torchmetrics.image import PeakSignalNoiseRatio

from distill.errors import DataError
from spikedistill_core.checks import check_int, check_number

SSIM_KERNEL = 11
SSIM_SIGMA = 1.5
_Y_WEIGHTS = (65.481, 128.553, 24.966)


def _check_protocol(data_range: object, crop_border: object) -> tuple[float, int]:
    check_number("data_range", data_range, 0, above=True, hint=" (1.0 for [0, 1] images)")
    check_int("crop_border", crop_border, 0)
    return float(data_range), crop_border


def rgb_to_y(x: Tensor, data_range: float = 1.0) -> Tensor:
    """BT.601 luma of ``[B, 3, H, W]`` RGB on the ``[0, data_range]`` scale, as BasicSR: ``[B, 1, H, W]``."""
    if x.dim() != 4 or x.shape[1] != 3:
        raise DataError(f"rgb_to_y expects [B, 3, H, W], got shape {tuple(x.shape)}")
    w = torch.tensor(_Y_WEIGHTS, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    y = (x / data_range * w).sum(dim=1, keepdim=True) / 255.0 + 16.0 / 255.0
    return y * data_range


def prepare(pred: Tensor, target: Tensor, data_range: float = 1.0, y_channel: bool = False,
            crop_border: int = 0, quantize: bool = False, min_size: int = 1) -> tuple[Tensor, Tensor]:
    """Apply the protocol (clamp, quantize, Y, border crop) and return float tensors ``[B, C, H, W]``."""
    data_range, crop_border = _check_protocol(data_range, crop_border)
    if pred.shape != target.shape:
        raise DataError(f"prediction shape {tuple(pred.shape)} differs from target shape {tuple(target.shape)}")
    if pred.dim() == 3:
        pred, target = pred.unsqueeze(0), target.unsqueeze(0)
    if pred.dim() != 4:
        raise DataError(f"images must be [B, C, H, W] or [C, H, W], got shape {tuple(pred.shape)}")
    dtype = torch.float32 if pred.device.type == "mps" else torch.float64
    pred = pred.detach().to(dtype).clamp(0.0, data_range)
    target = target.detach().to(dtype)
    if quantize:
        pred = torch.round(pred / data_range * 255.0) / 255.0 * data_range
    if y_channel:
        c = pred.shape[1]
        if c == 3:
            pred, target = rgb_to_y(pred, data_range), rgb_to_y(target, data_range)
        elif c != 1:
            raise DataError(f"y_channel needs 1 or 3 channels, got {c} (shape {tuple(pred.shape)})")
    if crop_border:
        pred = pred[..., crop_border:-crop_border, crop_border:-crop_border]
        target = target[..., crop_border:-crop_border, crop_border:-crop_border]
    h, w = pred.shape[-2:]
    if h < min_size or w < min_size:
        raise DataError(
            f"images of shape {tuple(target.shape)} after crop_border={crop_border} are smaller than "
            f"{min_size}x{min_size}, the least this metric needs"
        )
    return pred, target


def psnr_per_image(pred: Tensor, target: Tensor, data_range: float = 1.0, y_channel: bool = False,
                   crop_border: int = 0, quantize: bool = False) -> Tensor:
    """PSNR of each image of the batch, ``[B]`` (dB)."""
    p, t = prepare(pred, target, data_range, y_channel, crop_border, quantize)
    return peak_signal_noise_ratio(p, t, data_range=data_range, reduction="none", dim=(1, 2, 3))


def ssim_per_image(pred: Tensor, target: Tensor, data_range: float = 1.0, y_channel: bool = False,
                   crop_border: int = 0, quantize: bool = False) -> Tensor:
    """SSIM of each image of the batch, ``[B]`` (Gaussian 11x11, sigma 1.5)."""
    p, t = prepare(pred, target, data_range, y_channel, crop_border, quantize, min_size=SSIM_KERNEL)
    return _ssim(p, t, float(data_range))


def _ssim(p: Tensor, t: Tensor, data_range: float) -> Tensor:
    _, ssim_map = structural_similarity_index_measure(
        p, t, gaussian_kernel=True, sigma=SSIM_SIGMA, kernel_size=SSIM_KERNEL, reduction="none",
        data_range=data_range, return_full_image=True,
    )
    pad = (SSIM_KERNEL - 1) // 2
    return ssim_map[..., pad:-pad, pad:-pad].mean(dim=(1, 2, 3))


class RestorationMetrics(nn.Module):
    """Running per-image PSNR/SSIM means over every image seen since the last `reset`.

    ``update(pred, target)`` takes ``[B, C, H, W]`` (or ``[C, H, W]``); ``compute()`` returns
    ``{"psnr": float, "ssim": float}`` (NaN before any update). It is an ``nn.Module`` so it moves
    with its LightningModule; keep one instance per split.
    """

    def __init__(self, data_range: float = 1.0, y_channel: bool = False, crop_border: int = 0,
                 quantize: bool = False) -> None:
        super().__init__()
        self.data_range, self.crop_border = _check_protocol(data_range, crop_border)
        self.y_channel = bool(y_channel)
        self.quantize = bool(quantize)
        self.psnr = PeakSignalNoiseRatio(data_range=self.data_range, reduction="elementwise_mean", dim=(1, 2, 3))
        self.ssim = MeanMetric()
        self.count = 0

    def protocol(self) -> dict:
        """How the numbers were computed, for results.json (``metric_protocol``)."""
        return {
            "y_channel": self.y_channel,
            "crop_border": self.crop_border,
            "data_range": self.data_range,
            "quantize": self.quantize,
            "clamp_predictions": True,
            "average": "per-image, then mean over images",
            "ssim": {"window": "gaussian", "kernel_size": SSIM_KERNEL, "sigma": SSIM_SIGMA, "k1": 0.01, "k2": 0.03},
        }

    @torch.no_grad()
    def update(self, pred: Tensor, target: Tensor) -> None:
        p, t = prepare(pred, target, self.data_range, self.y_channel, self.crop_border, self.quantize,
                       min_size=SSIM_KERNEL)
        self.psnr.update(p, t)
        self.ssim.update(_ssim(p, t, self.data_range))
        self.count += p.shape[0]

    def compute(self) -> dict[str, float]:
        if self.count == 0:
            return {"psnr": float("nan"), "ssim": float("nan")}
        return {"psnr": float(self.psnr.compute()), "ssim": float(self.ssim.compute())}

    def reset(self) -> None:
        self.psnr.reset()
        self.ssim.reset()
        self.count = 0

    def forward(self, pred: Tensor, target: Tensor) -> None:  # pragma: no cover - alias
        self.update(pred, target)


class ScoresByRole(nn.ModuleDict):
    """One `RestorationMetrics` per scored role (the degraded input, the model, a teacher), fed and read together."""

    def __init__(self, roles: tuple[str, ...], **protocol: Any) -> None:
        super().__init__({role: RestorationMetrics(**protocol) for role in roles})

    def score(self, images: dict[str, Tensor], target: Tensor) -> None:
        """Add each role's images, scored against the same ``target``."""
        for role, image in images.items():
            self[role].update(image, target)

    def current(self) -> dict[str, dict[str, float]]:
        """``{role: {"psnr", "ssim"}}`` over the images seen since the last `collect`."""
        return {role: metric.compute() for role, metric in self.items()}

    def collect(self) -> dict[str, dict[str, float]]:
        """`current`, then reset for the next evaluation."""
        scores = self.current()
        for metric in self.values():
            metric.reset()
        return scores
