"""The base class of the spiking restorers: the options they share (time steps, neurons, coding,
output), checked once here, so each student defines only its own topology."""
from __future__ import annotations

from typing import Any, Sequence

from torch import Tensor, nn

from spikedistill_core.checks import check_int

from .encoding import InputLayer, check_coding
from .engine import check_timesteps
from .neurons import build_neuron
from .surrogates import Surrogate

__all__ = ["SpikingRestorer"]


class SpikingRestorer(nn.Module):
    """A spiking image restorer ``[B, C, H, W] -> [B, C, H, W]`` running over T time steps.

    Subclasses build their layers with :meth:`input_layer` and :meth:`make_neuron`.

    Args:
        in_channels: image channels, 1 (gray) or 3 (RGB).
        timesteps: T >= 1.
        neuron: ``"lif"``, ``"if"``, ``"multi_threshold"`` or ``"relu"`` (the ANN twin).
        beta: LIF membrane decay in [0, 1].
        threshold: firing threshold (> 0).
        reset_mechanism: ``"subtract"`` or ``"zero"``.
        spike_grad: surrogate gradient, by name or as a :class:`students.surrogates.Surrogate`.
        learn_beta: train beta.
        learn_threshold: train the threshold.
        init_membrane: initial membrane, a fraction of the threshold (0 = from rest).
        neuron_levels: the ``"multi_threshold"`` neuron's ladder (None: its default ``(2, 1, 0.5, 0.25)``); a uniform
            one that sums to 1, such as ``[0.5, 0.5]`` (up to 2 spikes a step), has an exact QCFS twin with 2T levels.
        encoding: ``"direct"`` (analog current each step) or ``"rate"`` (Bernoulli spikes).
        decoding: ``"mean"`` over T or ``"membrane"`` (leaky integrator with ``decode_beta``).
        decode_beta: decay of the membrane decoding, in (0, 1].
        residual: output ``x + prediction`` (predict the degradation).
        zero_tail: start the output conv at zero, so that the untrained residual model is the identity.
            Without it, RGB students sat at the identity plateau for a 200-step CPU budget (BENCHMARKS.md).
        rate_seed: seed of the rate encoding (None = the global RNG).
        checkpoint_segments: None, or split T into this many checkpointed chunks (bounds BPTT memory;
            see :func:`students.engine.run_over_time`).
    """

    def __init__(
        self,
        in_channels: int,
        timesteps: int = 4,
        neuron: str = "lif",
        beta: float = 0.9,
        threshold: float = 1.0,
        reset_mechanism: str = "subtract",
        spike_grad: str | Surrogate = "atan",
        learn_beta: bool = False,
        learn_threshold: bool = False,
        init_membrane: float = 0.0,
        neuron_levels: Sequence[float] | None = None,
        encoding: str = "direct",
        decoding: str = "mean",
        decode_beta: float = 0.9,
        residual: bool = True,
        zero_tail: bool = True,
        rate_seed: int | None = 0,
        checkpoint_segments: int | None = None,
    ) -> None:
        super().__init__()
        self.in_channels = check_int("in_channels", in_channels)
        self.timesteps = check_timesteps(timesteps)
        check_coding(encoding, decoding, decode_beta)
        self.encoding, self.rate_seed = encoding, rate_seed
        self.decoding, self.decode_beta = decoding, float(decode_beta)
        self.residual = bool(residual)
        self.zero_tail = bool(zero_tail)
        self.checkpoint_segments = checkpoint_segments
        self.neuron_kind = neuron
        self.neuron_options: dict[str, Any] = dict(
            beta=beta, threshold=threshold, reset_mechanism=reset_mechanism, spike_grad=spike_grad,
            learn_beta=learn_beta, learn_threshold=learn_threshold, init_membrane=init_membrane,
        )
        if neuron_levels is not None:
            self.neuron_options["levels"] = tuple(neuron_levels)

    def make_neuron(self) -> nn.Module:
        """A new neuron of this model's kind and options."""
        return build_neuron(self.neuron_kind, **self.neuron_options)

    def output_layer(self, conv: nn.Conv2d) -> nn.Conv2d:
        """``conv`` (the last layer, which predicts the residual), zeroed when ``zero_tail`` is set."""
        if self.zero_tail:
            nn.init.zeros_(conv.weight)
            if conv.bias is not None:
                nn.init.zeros_(conv.bias)
        return conv

    def restored(self, x: Tensor, prediction: Tensor) -> Tensor:
        """The output image: ``x + prediction`` when ``residual``, else the prediction itself."""
        return x + prediction if self.residual else prediction

    def input_layer(self, layer: nn.Module) -> InputLayer:
        """``layer`` (the first conv) as the input layer, with this model's T and encoding."""
        return InputLayer(layer, self.timesteps, self.encoding, self.rate_seed)
