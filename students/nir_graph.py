"""Export a spiking student as a NIR graph (Neuromorphic Intermediate Representation, ``nir`` 1.0).

Supported: :class:`students.spiking_dncnn.SpikingDnCNN` with direct encoding and IF or LIF neurons that
reset to zero. The graph, for images ``[C, H, W]`` of a fixed size::

    input -> head.conv -> head.neuron -> blocks.i.conv -> blocks.i.neuron ... -> tail -> output
    input --------------------------------------------------------------------------> output  (residual)

NIR sums the edges into a node, so ``output = input + tail(spikes)`` at every step.

Discretisation (NIR neurons are continuous-time; one simulator step is ``dt = 1`` time unit,
forward-Euler, as snntorch's and norse's NIR code use):

* Direct encoding: the reader feeds the same (noisy) image to ``input`` at each of the T steps.
* IF (``U[t] = V[t-1] + I[t]``) -> ``nir.IF(r=1, v_threshold=theta, v_reset=0)``: Euler of ``dv/dt = r I``.
* LIF (``U[t] = beta V[t-1] + I[t]``) -> ``nir.LIF(tau = dt / (1 - beta), r=1, v_leak=u0,
  v_threshold=theta, v_reset=0)``. Euler of ``tau dv/dt = (v_leak - v) + r I`` gives
  ``v[t] = beta v + (1 - beta)(r I + v_leak)``, so the conv feeding the neuron is multiplied by
  ``tau / dt = 1 / (1 - beta)`` (weights and bias) and its bias lowered by ``v_leak``: ``r`` stays 1
  (norse ignores ``r``) and the Euler step equals ours. ``beta = 1`` exports as IF.
* Spikes: ``S[t] = v > theta`` (strict, as ours and NIR). Reset to zero is NIR's ``v_reset = 0``.
  Reset by subtraction (snntorch's ``U[t] -= theta S[t-1]``) has no NIR IF/LIF primitive (both reset to
  ``v_reset``), so it raises :class:`ConfigError`.
* ``init_membrane`` ``u0 = init_membrane * theta``: NIR has no initial-state field. For LIF it is the
  resting potential ``v_leak = u0`` (readers start at rest, ``v = v_leak``; the bias shift above cancels
  its drive). IF has no resting potential, so an IF student with ``init_membrane > 0`` is refused.
* BatchNorm (eval statistics) is folded into the conv before it.
* Decoding over T: not a NIR node. The reader weights the per-step ``output`` by
  ``metadata["decode_weights"]`` (``1/T`` each for ``decoding="mean"``) and sums; as the tail is linear
  and the weights sum to 1 this equals ``x + tail(decode(spikes))``.

``metadata`` holds ``dt``, ``timesteps``, ``decode_weights``, ``decoding``, ``encoding``, ``residual`` and
``source`` (the class path).
"""
from __future__ import annotations

import nir
import numpy as np
import torch
from torch import nn

from spikedistill_core.errors import ConfigError

from .encoding import decode_weights
from .neurons import IF, LIF
from .spiking_dncnn import SpikingDnCNN

__all__ = ["DT", "to_nir"]

#: the length of one simulator step, in NIR time units
DT = 1.0


def _folded_conv(conv: nn.Conv2d, norm: nn.Module | None) -> tuple[torch.Tensor, torch.Tensor]:
    """``(weight, bias)`` of ``conv`` followed by the eval-mode batch norm ``norm`` (if any)."""
    weight = conv.weight.detach().double()
    bias = conv.bias.detach().double() if conv.bias is not None else weight.new_zeros(weight.shape[0])
    if norm is None:
        return weight, bias
    scale = norm.weight.detach().double() if norm.affine else torch.ones_like(bias)
    shift = norm.bias.detach().double() if norm.affine else torch.zeros_like(bias)
    gain = scale / torch.sqrt(norm.running_var.double() + norm.eps)
    return weight * gain[:, None, None, None], (bias - norm.running_mean.double()) * gain + shift


def _conv_node(weight: torch.Tensor, bias: torch.Tensor, conv: nn.Conv2d, size: tuple[int, int]) -> nir.Conv2d:
    """The NIR convolution of ``conv``'s geometry with the given (folded) weights."""
    return nir.Conv2d(
        input_shape=size, weight=weight.float().numpy(), stride=conv.stride, padding=conv.padding,
        dilation=conv.dilation, groups=conv.groups, bias=bias.float().numpy(),
    )


def _full(shape: tuple[int, ...], value: float) -> np.ndarray:
    return np.full(shape, value, dtype=np.float32)


def _neuron_node(neuron: nn.Module, path: str, shape: tuple[int, ...]) -> tuple[nir.NIRNode, float, float]:
    """``(node, gain, shift)``: the NIR neuron, and how the conv feeding it is rescaled (``gain * I + shift``)."""
    if not isinstance(neuron, (IF, LIF)):
        raise ConfigError(
            f"{path} ({type(neuron).__name__}): NIR export supports IF and LIF neurons only; NIR has no "
            "multi-threshold (graded) neuron and no ReLU"
        )
    if neuron.reset_mechanism != "zero":
        raise ConfigError(
            f"{path}: reset_mechanism={neuron.reset_mechanism!r} cannot be exported; NIR's IF and LIF reset to "
            "v_reset and have no reset by subtraction, so use reset_mechanism='zero'"
        )
    theta = float(neuron.threshold.detach())
    u0 = neuron.init_membrane * theta
    beta = min(max(float(neuron.beta.detach()), 0.0), 1.0)
    if beta == 1.0:
        if u0:
            raise ConfigError(
                f"{path}: init_membrane={neuron.init_membrane!r} cannot be exported for an IF neuron; NIR has no "
                "initial state and IF no resting potential, so use init_membrane=0 or a LIF neuron"
            )
        return nir.IF(r=_full(shape, 1.0), v_threshold=_full(shape, theta), v_reset=_full(shape, 0.0)), 1.0, 0.0
    tau = DT / (1.0 - beta)
    node = nir.LIF(tau=_full(shape, tau), r=_full(shape, 1.0), v_leak=_full(shape, u0),
                   v_threshold=_full(shape, theta), v_reset=_full(shape, 0.0))
    return node, tau / DT, -u0


def _check_model(model: nn.Module) -> None:
    if not isinstance(model, SpikingDnCNN):
        raise ConfigError(f"{type(model).__name__}: NIR export supports SpikingDnCNN only")
    if model.encoding != "direct":
        raise ConfigError(
            f"{type(model).__name__}.head.conv: encoding={model.encoding!r} cannot be exported; NIR has no "
            "(seeded Bernoulli) rate encoder, so use encoding='direct'"
        )


def _spiking_layers(model: SpikingDnCNN) -> list[tuple[str, nn.Conv2d, nn.Module | None, nn.Module]]:
    """``(path, conv, norm, neuron)`` of the head and every block, in order."""
    layers = [("head", model.head.conv.layer, None, model.head.neuron)]
    for i, block in enumerate(model.blocks):
        norm = block.bn.layer if hasattr(block, "bn") else None
        layers.append((f"blocks.{i}", block.conv.layer, norm, block.neuron))
    return layers


def _metadata(model: SpikingDnCNN) -> dict[str, object]:
    weights = decode_weights(model.timesteps, model.decoding, model.decode_beta)
    return {
        "dt": DT, "timesteps": model.timesteps, "decode_weights": weights.numpy(),
        "decoding": model.decoding, "encoding": model.encoding, "residual": int(model.residual),
        "source": f"{type(model).__module__}.{type(model).__name__}",
    }


@torch.no_grad()
def to_nir(model: nn.Module, input_size: tuple[int, int] = (64, 64)) -> nir.NIRGraph:
    """The NIR graph of a spiking student for images of ``input_size`` (H, W); see the module docstring."""
    _check_model(model)
    height, width = (int(v) for v in input_size)
    if height < 1 or width < 1:
        raise ConfigError(f"input_size={tuple(input_size)!r} is not allowed; use (H, W) with both >= 1")
    size = (height, width)
    nodes: dict[str, nir.NIRNode] = {"input": nir.Input(np.array([model.in_channels, height, width]))}
    edges: list[tuple[str, str]] = []
    previous = "input"
    for path, conv, norm, neuron in _spiking_layers(model):
        weight, bias = _folded_conv(conv, norm)
        node, gain, shift = _neuron_node(neuron, f"{path}.neuron", (conv.out_channels, height, width))
        nodes[f"{path}.conv"] = _conv_node(weight * gain, bias * gain + shift, conv, size)
        nodes[f"{path}.neuron"] = node
        edges += [(previous, f"{path}.conv"), (f"{path}.conv", f"{path}.neuron")]
        previous = f"{path}.neuron"
    nodes["tail"] = _conv_node(*_folded_conv(model.tail, None), model.tail, size)
    nodes["output"] = nir.Output(np.array([model.in_channels, height, width]))
    edges += [(previous, "tail"), ("tail", "output")] + ([("input", "output")] if model.residual else [])
    return nir.NIRGraph(nodes=nodes, edges=edges, metadata=_metadata(model))
