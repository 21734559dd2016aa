"""SpikingDnCNN (SPIDEN): a DnCNN whose ReLUs are spiking neurons, predicting the noise residual.

Layout (``depth`` convolutions in total; module paths for hints in brackets)::

    head.conv  [InputLayer(Conv2d(in, F, 3))]  -> head.neuron
    blocks.i.conv [TimeDistributed(Conv2d(F, F, 3, bias=False))] -> blocks.i.bn -> blocks.i.neuron
                                                              for i in range(depth - 2)
    decode over T (mean or membrane) -> tail [Conv2d(F, in, 3)] -> input + residual

``neuron="relu"`` with ``timesteps=1`` is the ANN DnCNN (see ``teachers.twins.DnCNNTwin``).
"""
from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from spikedistill_core.checks import check_int
from .base import SpikingRestorer
from .encoding import InputLayer, decode
from .engine import run_over_time
from .layers import build_norm, check_input, td_conv

__all__ = ["SpikingDnCNN"]


class _Block(nn.Module):
    def __init__(self, conv: nn.Module, bn: nn.Module | None, neuron: nn.Module):
        super().__init__()
        self.conv = conv
        if bn is not None:
            self.bn = bn
        self.neuron = neuron

    def forward(self, x: Tensor) -> Tensor:
        x = self.conv(x)
        if hasattr(self, "bn"):
            x = self.bn(x)
        return self.neuron(x)


class _Head(nn.Module):
    def __init__(self, conv: InputLayer, neuron: nn.Module):
        super().__init__()
        self.conv = conv
        self.neuron = neuron

    def forward(self, x: Tensor) -> Tensor:
        # the image [B, C, H, W], or the already-encoded current [T, B, F, H, W]
        return self.neuron(self.conv(x) if x.dim() == 4 else x)


class SpikingDnCNN(SpikingRestorer):
    """Spiking DnCNN denoiser.

    Args:
        in_channels: 1 (gray) or 3 (RGB).
        features: channels of the hidden layers.
        depth: number of convolutions (>= 2): head + ``depth - 2`` blocks + tail.
        norm: ``"bn"`` (BatchNorm over the folded T*B batch), ``"tdbn"`` (threshold-dependent BN)
            or ``"none"``.
        **spiking: the shared options of :class:`students.base.SpikingRestorer` (T, neuron, coding, ...).
    """

    def __init__(self, in_channels: int = 1, features: int = 32, depth: int = 10, norm: str = "bn", **spiking: Any):
        super().__init__(in_channels, **spiking)
        check_int("features", features)
        check_int("depth", depth, minimum=2)
        self.head = _Head(self.input_layer(nn.Conv2d(in_channels, features, 3, padding=1)), self.make_neuron())
        use_norm = norm != "none"
        self.blocks = nn.ModuleList(
            _Block(
                td_conv(features, features, 3, bias=not use_norm),
                build_norm(norm, features, threshold=self.neuron_options["threshold"]),
                self.make_neuron(),
            )
            for _ in range(depth - 2)
        )
        self.tail = self.output_layer(nn.Conv2d(features, in_channels, 3, padding=1))

    def _body(self, current: Tensor) -> Tensor:
        h = self.head(current)
        for block in self.blocks:
            h = block(h)
        return h

    def forward(self, x: Tensor) -> Tensor:
        check_input(x, self.in_channels, type(self).__name__)
        current = self.head.conv(x)
        h = run_over_time(self, self._body, current, self.checkpoint_segments)
        r = self.tail(decode(h, self.decoding, self.decode_beta))
        return self.restored(x, r)
