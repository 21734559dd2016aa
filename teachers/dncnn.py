"""DnCNN (Zhang et al., TIP 2017): a plain conv stack that predicts the noise, output = input - noise.

Layout (mirrors KAIR's ``models/network_dncnn.py``, so its released weights load by index):
``body`` is one flat ``nn.Sequential``

* ``bn=False`` (KAIR ``act_mode='R'``): conv ``body.{2i}``, ReLU ``body.{2i+1}``, last conv ``body.{2(depth-1)}``;
* ``bn=True`` (KAIR ``act_mode='BR'``): ``body.0`` conv, ``body.1`` ReLU, then for every middle
  layer ``j`` conv/BN/ReLU at ``body.{2+3j}``/``{3+3j}``/``{4+3j}``, last conv ``body.{2+3(depth-2)}``.

Every conv has a bias (as in KAIR). ReLUs are not in-place, so a hook's captured conv output is
never overwritten. Which arguments match which KAIR release (see ``KAIR_PRESETS``):

=====================  ===============================================
``dncnn_15/25/50.pth``  ``DnCNN(in_channels=1, depth=17, bn=False)``
``dncnn_gray_blind``   ``DnCNN(in_channels=1, depth=20, bn=False)``
``dncnn_color_blind``  ``DnCNN(in_channels=3, depth=20, bn=False)``
=====================  ===============================================

KAIR's released DnCNN files have their batch norms merged into the convs, hence ``bn=False``.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from spikedistill_core.checks import check_bool, check_int
from spikedistill_core.errors import ConfigError
from students.neurons import QCFS
from students.transfer import positive_quantile
from teachers.weights import load_weights

__all__ = ["DnCNN", "KAIR_PRESETS", "PRESETS"]

#: Constructor arguments matching each KAIR DnCNN release (file stem -> kwargs).
KAIR_PRESETS: dict[str, dict[str, Any]] = {
    "dncnn_15": dict(in_channels=1, features=64, depth=17, bn=False),
    "dncnn_25": dict(in_channels=1, features=64, depth=17, bn=False),
    "dncnn_50": dict(in_channels=1, features=64, depth=17, bn=False),
    "dncnn_gray_blind": dict(in_channels=1, features=64, depth=20, bn=False),
    "dncnn_color_blind": dict(in_channels=3, features=64, depth=20, bn=False),
}

#: Named configurations: the paper's two depths (trainable, with BN) and the KAIR releases.
PRESETS: dict[str, dict[str, Any]] = {
    "dncnn17": dict(features=64, depth=17, bn=True),  # DnCNN-S, known sigma
    "dncnn20": dict(features=64, depth=20, bn=True),  # DnCNN-B / CDnCNN-B, blind
    **KAIR_PRESETS,
}


class DnCNN(nn.Module):
    """DnCNN residual denoiser: ``depth`` 3x3 convs, optional BN, output = input - predicted noise."""

    needs_sigma = False

    def __init__(
        self,
        in_channels: int = 1,
        features: int = 64,
        depth: int = 17,
        bn: bool = True,
        checkpoint: str | None = None,
        zero_tail: bool = False,
        nested_features: int | None = None,
        nested_levels: int | None = None,
        noise_map: bool = False,
    ) -> None:
        """``zero_tail``: start the last conv at zero, so the untrained model is the identity. Trained from
        scratch at 3 channels, the default (KAIR's) init sits at the identity plateau for a few hundred
        steps; a zero tail does not (BENCHMARKS.md, section 3).

        ``nested_features``: the first that many channels of every layer also form a denoiser of their own
        (``nested_output``; training adds its loss, as in slimmable networks), so a student of that width can
        start from it by weight selection. Needs ``bn=False``: one batch norm cannot hold both widths' statistics.

        ``nested_levels``: the nested network's activations are QCFS with that many levels and a learned
        threshold per layer (``students.neurons.QCFS``), so a twin of a student with that many time steps,
        selected from it, computes exactly the nested output (ReLU when None). The thresholds start at the
        99.9th percentile of each layer's positive pre-activations on the first training batch.

        ``noise_map``: the noise level (0-1 scale) enters as one more input channel, constant over the image, as in
        FFDNet, so one network serves every level (blind training); ``forward`` then takes ``sigma`` ([B])."""
        super().__init__()
        check_int("in_channels", in_channels)
        check_int("features", features)
        check_int("depth", depth, minimum=2)
        if nested_features is not None:
            check_int("nested_features", nested_features)
            if nested_features >= features:
                raise ConfigError(f"DnCNN nested_features={nested_features} is not allowed: use fewer than "
                                  f"features={features}")
            if bn:
                raise ConfigError(f"DnCNN nested_features={nested_features} needs bn=False: a batch norm's running "
                                  "statistics cannot serve both the full and the nested width")
        if nested_levels is not None and nested_features is None:
            raise ConfigError(f"DnCNN nested_levels={nested_levels} needs nested_features: it quantises the nested network")
        check_bool("noise_map", noise_map)
        self.nested_features = nested_features
        self.nested_levels = nested_levels
        self.noise_map = self.needs_sigma = noise_map
        self.in_channels = in_channels
        self.features = features
        self.depth = depth
        self.bn = bn
        layers: list[nn.Module] = [nn.Conv2d(in_channels + noise_map, features, 3, padding=1, bias=True), nn.ReLU()]
        for _ in range(depth - 2):
            layers.append(nn.Conv2d(features, features, 3, padding=1, bias=True))
            if bn:
                layers.append(nn.BatchNorm2d(features))
            layers.append(nn.ReLU())
        layers.append(nn.Conv2d(features, in_channels, 3, padding=1, bias=True))
        self.body = nn.Sequential(*layers)
        if nested_levels is not None:
            self.nested_acts = nn.ModuleList(QCFS(nested_levels, learn_threshold=True) for _ in range(depth - 1))
            self.register_buffer("nested_thresholds_set", torch.tensor(False))
        if zero_tail:
            nn.init.zeros_(self.body[-1].weight)
            nn.init.zeros_(self.body[-1].bias)
        self.checkpoint_path = load_weights(self, checkpoint) if checkpoint else None

    @classmethod
    def from_preset(cls, name: str, checkpoint: str | None = None, **overrides: Any) -> "DnCNN":
        """Build a named configuration from ``PRESETS`` (e.g. ``"dncnn17"``, ``"dncnn_25"``)."""
        if name not in PRESETS:
            raise ConfigError(f"DnCNN preset {name!r} unknown; allowed: {sorted(PRESETS)}")
        return cls(**{**PRESETS[name], **overrides}, checkpoint=checkpoint)

    def _with_map(self, x: torch.Tensor, sigma: torch.Tensor | None) -> torch.Tensor:
        """The body's input: ``x``, and with ``noise_map`` the level ``sigma`` ([B]) as one more constant channel."""
        if not self.noise_map:
            return x
        if sigma is None:
            raise ConfigError("this DnCNN has noise_map=True: call it with the noise level, model(x, sigma)")
        level = torch.as_tensor(sigma, dtype=x.dtype, device=x.device).reshape(-1, 1, 1, 1)
        return torch.cat([x, level.expand(x.shape[0], 1, *x.shape[2:])], dim=1)

    def forward(self, x: torch.Tensor, sigma: torch.Tensor | None = None) -> torch.Tensor:
        """Return the denoised image ``x - body(x)`` (``sigma`` only with ``noise_map``)."""
        return x - self.body(self._with_map(x, sigma))

    def nested_output(self, x: torch.Tensor, sigma: torch.Tensor | None = None) -> torch.Tensor:
        """The nested sub-network's denoised image: every conv restricted to its first ``nested_features``
        channels (shared weights, so its loss trains them for both widths)."""
        if self.nested_features is None:
            raise ConfigError("this DnCNN has no nested sub-network (nested_features is None)")
        k = self.nested_features
        convs = [m for m in self.body if isinstance(m, nn.Conv2d)]
        acts = getattr(self, "nested_acts", None)
        first_batch = acts is not None and self.training and not bool(self.nested_thresholds_set)
        h = self._with_map(x, sigma)
        for i, conv in enumerate(convs):
            last = i == len(convs) - 1
            weight = conv.weight if i == 0 else conv.weight[:, :k]
            weight, bias = (weight, conv.bias) if last else (weight[:k], conv.bias[:k])
            h = F.conv2d(h, weight, bias, padding=conv.padding)
            if last:
                break
            if acts is None:
                h = F.relu(h)
                continue
            if first_batch:
                with torch.no_grad():
                    acts[i].threshold.fill_(positive_quantile(h, 99.9))
            h = acts[i](h) * acts[i].threshold  # the quantised rate, back in this layer's units
        if first_batch:
            self.nested_thresholds_set.fill_(True)
        return x - h

    def auxiliary_outputs(self, x: torch.Tensor, sigma: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Restorations trained beside ``forward`` (the training module adds a loss for each): the nested one."""
        return {} if self.nested_features is None else {"nested": self.nested_output(x, sigma)}

    def hint_points(self) -> list[str]:
        """Module paths of the post-ReLU feature maps, first to last."""
        return [f"body.{name}" for name, m in self.body.named_children() if isinstance(m, nn.ReLU)]

    def kair_key_map(self) -> dict[str, str]:
        """``{KAIR key: own key}``: KAIR names the same flat sequence ``model`` instead of ``body``."""
        return {"model." + k[len("body."):]: k for k in self.state_dict() if k.startswith("body.")}
