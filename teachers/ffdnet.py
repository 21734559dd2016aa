"""FFDNet (Zhang et al., TIP 2018): denoising on a pixel-unshuffled image plus a noise-level map.

Layout (mirrors KAIR's ``models/network_ffdnet.py``, ``act_mode='R'``, so its releases load):
``down`` (``nn.PixelUnshuffle(2)``), ``body`` a flat ``nn.Sequential`` with conv ``body.{2i}`` and
ReLU ``body.{2i+1}`` (last conv ``body.{2(depth-1)}``, no ReLU), ``up`` (``nn.PixelShuffle(2)``).
Odd sizes are padded by replication to even and cropped back, as KAIR does.

Which arguments match which KAIR release (see ``KAIR_PRESETS``):

==================  ===================================================
``ffdnet_gray.pth``   ``FFDNet(in_channels=1, features=64, depth=15)``
``ffdnet_color.pth``  ``FFDNet(in_channels=3, features=96, depth=12)``
==================  ===================================================

``sigma`` is on the [0, 1] scale (sigma/255), as in KAIR's test script.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from distill.errors import ConfigError
from teachers.dncnn import _check_positive
from teachers.weights import load_weights

__all__ = ["FFDNet", "KAIR_PRESETS"]

#: Constructor arguments matching each KAIR FFDNet release (file stem -> kwargs).
KAIR_PRESETS: dict[str, dict[str, Any]] = {
    "ffdnet_gray": dict(in_channels=1, features=64, depth=15),
    "ffdnet_color": dict(in_channels=3, features=96, depth=12),
}


class FFDNet(nn.Module):
    """FFDNet non-blind denoiser: pixel-unshuffle(2), concat noise map, conv+ReLU stack, pixel-shuffle."""

    needs_sigma = True

    def __init__(
        self,
        in_channels: int = 1,
        features: int = 64,
        depth: int = 15,
        checkpoint: str | None = None,
    ) -> None:
        super().__init__()
        _check_positive("in_channels", in_channels)
        _check_positive("features", features)
        _check_positive("depth", depth, minimum=2)
        self.in_channels = in_channels
        self.features = features
        self.depth = depth
        self.down = nn.PixelUnshuffle(2)
        layers: list[nn.Module] = [nn.Conv2d(in_channels * 4 + 1, features, 3, padding=1, bias=True), nn.ReLU()]
        for _ in range(depth - 2):
            layers += [nn.Conv2d(features, features, 3, padding=1, bias=True), nn.ReLU()]
        layers.append(nn.Conv2d(features, in_channels * 4, 3, padding=1, bias=True))
        self.body = nn.Sequential(*layers)
        self.up = nn.PixelShuffle(2)
        self.checkpoint_path = load_weights(self, checkpoint) if checkpoint else None

    @classmethod
    def from_preset(cls, name: str, checkpoint: str | None = None, **overrides: Any) -> "FFDNet":
        """Build the configuration of a KAIR release (``"ffdnet_gray"`` or ``"ffdnet_color"``)."""
        if name not in KAIR_PRESETS:
            raise ConfigError(f"FFDNet preset {name!r} unknown; allowed: {sorted(KAIR_PRESETS)}")
        return cls(**{**KAIR_PRESETS[name], **overrides}, checkpoint=checkpoint)

    def _sigma_map(self, sigma: torch.Tensor | float, x: torch.Tensor) -> torch.Tensor:
        """Broadcast ``sigma`` (scalar, ``[B]`` or KAIR's ``[B,1,1,1]``) to a ``[B,1,h,w]`` map."""
        b, _, h, w = x.shape
        s = torch.as_tensor(sigma, dtype=x.dtype, device=x.device)
        if s.dim() == 0 or s.numel() == 1:
            s = s.reshape(1).expand(b)
        elif s.dim() == 4 and s.shape[1:] == (1, 1, 1):
            s = s.reshape(-1)
        if s.dim() != 1 or s.shape[0] != b:
            raise ConfigError(
                f"FFDNet sigma has shape {tuple(s.shape)}; allowed: a scalar, [B] or [B,1,1,1] with B={b}"
            )
        return s.view(b, 1, 1, 1).expand(b, 1, h, w)

    def forward(self, x: torch.Tensor, sigma: torch.Tensor | float) -> torch.Tensor:
        """Denoise ``x`` ([B,C,H,W]) at noise level ``sigma`` ([B], [0,1] scale)."""
        h, w = x.shape[-2:]
        pad_h, pad_w = h % 2, w % 2
        if pad_h or pad_w:
            x = F.pad(x, (0, pad_w, 0, pad_h), mode="replicate")
        z = self.down(x)
        z = torch.cat([z, self._sigma_map(sigma, z)], dim=1)
        out = self.up(self.body(z))
        return out[..., :h, :w]

    def hint_points(self) -> list[str]:
        """Module paths of the post-ReLU feature maps (at half resolution), first to last."""
        return [f"body.{name}" for name, m in self.body.named_children() if isinstance(m, nn.ReLU)]

    def kair_key_map(self) -> dict[str, str]:
        """``{KAIR key: own key}``: KAIR names the same flat sequence ``model`` instead of ``body``."""
        return {"model." + k[len("body."):]: k for k in self.state_dict() if k.startswith("body.")}
