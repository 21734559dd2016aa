"""SpikingDnCNN (SPIDEN): a DnCNN whose ReLUs are spiking neurons, predicting the noise residual.

Layout (``depth`` convolutions in total; module paths for hints in brackets)::

    head.conv  [InputLayer(Conv2d(in, F, 3))]  -> head.neuron
    blocks.i.conv [TimeDistributed(Conv2d(F, F, 3, bias=False))] -> blocks.i.bn -> blocks.i.neuron
                                                              for i in range(depth - 2)
    decode over T (mean or membrane) -> tail [Conv2d(F, in, 3)] -> input + residual

``neuron="relu"`` with ``timesteps=1`` is the ANN DnCNN (see ``teachers.twins.DnCNNTwin``).
"""
from __future__ import annotations

from torch import Tensor, nn

from .encoding import InputLayer, check_coding, decode
from .engine import check_timesteps, run_over_time
from .layers import build_norm, check_input, check_positive_int, td_conv
from .neurons import build_neuron
from .surrogates import Surrogate

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


class SpikingDnCNN(nn.Module):
    """Spiking DnCNN denoiser.

    Args:
        in_channels: 1 (gray) or 3 (RGB).
        features: channels of the hidden layers.
        depth: number of convolutions (>= 2): head + ``depth - 2`` blocks + tail.
        timesteps: T >= 1.
        neuron: ``"lif"``, ``"if"``, ``"multi_threshold"`` or ``"relu"`` (ANN twin).
        beta, threshold, reset_mechanism, spike_grad, learn_beta, learn_threshold: neuron options.
        norm: ``"bn"`` (BatchNorm over the folded T*B batch), ``"tdbn"`` (threshold-dependent BN)
            or ``"none"``.
        encoding: ``"direct"`` or ``"rate"``; ``rate_seed`` seeds rate encoding (None = global RNG).
        decoding: ``"mean"`` or ``"membrane"`` (with ``decode_beta``).
        residual: add the prediction to the input (predict the noise).
        checkpoint_segments: None, or split T into this many checkpointed chunks (bounds BPTT memory).
    """

    def __init__(
        self,
        in_channels: int = 1,
        features: int = 32,
        depth: int = 10,
        timesteps: int = 4,
        neuron: str = "lif",
        beta: float = 0.9,
        threshold: float = 1.0,
        reset_mechanism: str = "subtract",
        spike_grad: "str | Surrogate" = "atan",
        learn_beta: bool = False,
        learn_threshold: bool = False,
        norm: str = "bn",
        encoding: str = "direct",
        decoding: str = "mean",
        decode_beta: float = 0.9,
        residual: bool = True,
        rate_seed: int | None = 0,
        checkpoint_segments: int | None = None,
    ):
        super().__init__()
        self.in_channels = check_positive_int("in_channels", in_channels)
        self.timesteps = check_timesteps(timesteps)
        check_positive_int("features", features)
        check_positive_int("depth", depth, minimum=2)
        check_coding(encoding, decoding, decode_beta)
        self.decoding, self.decode_beta = decoding, float(decode_beta)
        self.residual = bool(residual)
        self.checkpoint_segments = checkpoint_segments

        def make_neuron():
            return build_neuron(
                neuron, beta=beta, threshold=threshold, spike_grad=spike_grad,
                reset_mechanism=reset_mechanism, learn_beta=learn_beta, learn_threshold=learn_threshold,
            )

        self.head = _Head(
            InputLayer(nn.Conv2d(in_channels, features, 3, padding=1), timesteps, encoding, rate_seed),
            make_neuron(),
        )
        use_norm = norm != "none"
        self.blocks = nn.ModuleList(
            _Block(
                td_conv(features, features, 3, bias=not use_norm),
                build_norm(norm, features, threshold=threshold),
                make_neuron(),
            )
            for _ in range(depth - 2)
        )
        self.tail = nn.Conv2d(features, in_channels, 3, padding=1)

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
        return x + r if self.residual else r
