"""Export a spiking student as a NIR graph (Neuromorphic Intermediate Representation, ``nir`` 1.0).

Supported: chains of conv -> (BatchNorm) -> IF/LIF neuron layers with direct encoding, a linear tail and a
residual output, i.e. :class:`students.spiking_dncnn.SpikingDnCNN` and a one-level
:class:`students.spiking_unet.SpikingUNet` (``levels=1``: no pooling, no up-sampling), both with IF or LIF
neurons that reset to zero. The graph, for images ``[C, H, W]`` of a fixed size (SpikingDnCNN's names;
the U-Net's are ``encoders.0.conv1``, ``encoders.0.act1``, ``encoders.0.conv2``, ``encoders.0.act2``, ``out``)::

    input -> head.conv -> head.neuron -> blocks.i.conv -> blocks.i.neuron ... -> tail -> output
    input --------------------------------------------------------------------------> output  (residual)

NIR sums the edges into a node, so ``output = input + tail(spikes)`` at every step. Node names are the
project's module paths.

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
* BatchNorm (eval statistics, tdBN included) is folded into the conv before it.
* Decoding over T: not a NIR node. The reader weights the per-step ``output`` by
  ``metadata["decode_weights"]`` (``1/T`` each for ``decoding="mean"``) and sums. That equals our
  ``x + tail(decode(spikes))`` only because everything after decoding is linear (a conv, then ``+ x``) and
  the weights sum to 1 (so ``x`` and the tail's bias come out once); a student with a nonlinearity after
  decoding (ESDNet's refinement head) could not use it.

What NIR 1.0 cannot express raises :class:`ConfigError` naming the first offending module (its path, in
``named_modules`` order) and the reason, then the first module of each other kind of problem, so that one
error lists all that stands in the way:

* multi-threshold neurons (Spiking-UNet's default): the output is graded (``theta`` times a sum of
  levels) and the reset subtracts that sum; NIR's IF, LIF and CubaLIF emit one binary spike and reset to
  ``v_reset``. ReLU (the ANN twins) and QCFS are not spiking neurons.
* transposed convolutions (SpikerIR's ``up.k.1.layer``, Spiking-UNet's ``decoders.j.up.layer``) and
  up-sampling (ESDNet's ``up.k.0.layer``): NIR 1.0.8 has no such node (nor a reshape). A 2x2 stride-2
  transposed conv doubles the map: an input shifted by one pixel moves its output by two, where NIR's
  Conv2d (integer stride, padding, dilation, groups) moves by at most one. Its only exact NIR form is a
  dense ``Affine`` on the flattened map, and since NIR has no un-flatten, everything after it would be
  dense too: ``(C H W)^2`` weights per layer (10^9 for 8 channels at 64 x 64), which this exporter does
  not write.
* ESDNet's multi-dimensional attention (``encoder.0.0.attention``) multiplies the membrane input by
  sigmoid gates computed from it (means and maxima over time, channels and space); NIR edges only add, and
  it has no product, sigmoid or max node. Its refinement head gates the same way after decoding.
* rate encoding (a seeded Bernoulli draw) and, for IF, ``init_membrane > 0`` (see above).

SpikerIR: its other parts are expressible, so they are recorded here for when NIR gains an up-sampling
node: the membrane shortcut ``x + BN(conv(LIF(x)))`` is a sum of edges into each neuron; down is
LIF -> stride-2 Conv2d (BN folded); the fuse ``1x1 conv(concat[up, skip])`` equals the sum of two 1x1 convs
on the parts (summed edges again); decoding then the output conv and ``+ x`` is linear, so the
decode-weights rule above holds. The up path (``up.k``) lies on every path from input to output, so no
part of SpikerIR ends in an image without it, and none is exported.

``metadata`` holds ``dt``, ``timesteps``, ``decode_weights``, ``decoding``, ``encoding``, ``residual`` and
``source`` (the class path).
"""
from __future__ import annotations

import nir
import numpy as np
import torch
from torch import nn

from spikedistill_core.errors import ConfigError

from .base import SpikingRestorer
from .encoding import InputLayer, decode_weights
from .layers import MultiDimensionalAttention, RefinementHead
from .neurons import IF, LIF, QCFS, SpikingNeuron
from .spiking_dncnn import SpikingDnCNN
from .spiking_unet import SpikingUNet

__all__ = ["DT", "to_nir", "nir_problems"]

#: the length of one simulator step, in NIR time units
DT = 1.0

_NO_RESIZE = ("NIR 1.0 has no transposed-convolution, up-sampling or reshape node, and its Conv2d has an integer "
              "stride (an input shifted by one pixel moves its output by at most one, where this layer's moves by "
              "two); the only exact form, a dense Affine on the flattened map (and on everything after it, as NIR "
              "cannot un-flatten), needs (C*H*W)^2 weights per layer and is not written")
#: modules that NIR cannot express whatever the options, and why
_INEXPRESSIBLE: tuple[tuple[type, str], ...] = (
    (nn.ConvTranspose2d, "a transposed convolution doubles the map; " + _NO_RESIZE),
    (nn.Upsample, "up-sampling doubles the map; " + _NO_RESIZE),
    (MultiDimensionalAttention, "attention multiplies the membrane input by sigmoid gates computed from it "
                                "(means and maxima over time, channels and space); NIR edges only add, and NIR "
                                "has no product, sigmoid or max node"),
    (RefinementHead, "the refinement head multiplies features by sigmoid gates computed from them, after "
                     "decoding over T; NIR has no product or sigmoid node (and a nonlinearity after decoding "
                     "breaks the decode-weights rule)"),
)


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


def _neuron_problem(neuron: nn.Module, path: str) -> tuple[str, str] | None:
    """``(kind, message)`` when ``neuron`` has no NIR form, else None."""
    if not isinstance(neuron, (IF, LIF)):
        if isinstance(neuron, SpikingNeuron):  # MultiThresholdIF
            why = ("NIR has no graded (multi-threshold) neuron: this one outputs theta times the sum of the levels "
                   "that fired and resets by subtracting it, where NIR's IF, LIF and CubaLIF emit one binary spike "
                   "and reset to v_reset")
        else:
            why = "it is an ANN activation (NIR has no ReLU or QCFS node), not a spiking neuron"
        kind = type(neuron).__name__
        return kind, f"{path} ({kind}): NIR export supports IF and LIF neurons only; {why}"
    if neuron.reset_mechanism != "zero":
        return "reset", (
            f"{path}: reset_mechanism={neuron.reset_mechanism!r} cannot be exported; NIR's IF and LIF reset to "
            "v_reset and have no reset by subtraction, so use reset_mechanism='zero'"
        )
    if neuron.init_membrane and min(max(float(neuron.beta.detach()), 0.0), 1.0) == 1.0:
        return "init", (
            f"{path}: init_membrane={neuron.init_membrane!r} cannot be exported for an IF neuron; NIR has no "
            "initial state and IF no resting potential, so use init_membrane=0 or a LIF neuron"
        )
    return None


def nir_problems(model: nn.Module) -> list[str]:
    """Why NIR 1.0 cannot express ``model``: the first module of each kind of problem, in module order."""
    found: dict[str, str] = {}
    flagged: list[str] = []
    for path, module in model.named_modules():
        if any(path.startswith(f"{p}.") for p in flagged):
            continue  # inside a module already refused (attention's own ReLU, ...)
        problem = None
        if isinstance(module, InputLayer) and module.encoding != "direct":
            problem = "encoding", (f"{path}: encoding={module.encoding!r} cannot be exported; NIR has no "
                                   "(seeded Bernoulli) rate encoder, so use encoding='direct'")
        elif isinstance(module, (SpikingNeuron, nn.ReLU, QCFS)):
            problem = _neuron_problem(module, path)
        else:
            for kind, reason in _INEXPRESSIBLE:
                if isinstance(module, kind):
                    problem = kind.__name__, f"{path} ({kind.__name__}): {reason}"
        if problem is not None:
            flagged.append(path)
            found.setdefault(*problem)
    return list(found.values())


def _chain(model: nn.Module) -> tuple[list[tuple[str, nn.Conv2d, nn.Module | None, str, nn.Module]],
                                      tuple[str, nn.Conv2d]] | None:
    """``([(conv path, conv, norm, neuron path, neuron), ...], (tail path, tail))`` of a supported student."""
    if isinstance(model, SpikingDnCNN):
        layers = [("head.conv", model.head.conv.layer, None, "head.neuron", model.head.neuron)]
        for i, block in enumerate(model.blocks):
            norm = block.bn.layer if hasattr(block, "bn") else None
            layers.append((f"blocks.{i}.conv", block.conv.layer, norm, f"blocks.{i}.neuron", block.neuron))
        return layers, ("tail", model.tail)
    if isinstance(model, SpikingUNet) and model.levels == 1:
        level = model.encoders[0]
        return [("encoders.0.conv1", level.conv1.layer, None, "encoders.0.act1", level.act1),
                ("encoders.0.conv2", level.conv2.layer, None, "encoders.0.act2", level.act2)], ("out", model.out)
    return None


def _neuron_node(neuron: nn.Module, shape: tuple[int, ...]) -> tuple[nir.NIRNode, float, float]:
    """``(node, gain, shift)``: the NIR neuron, and how the conv feeding it is rescaled (``gain * I + shift``)."""
    theta = float(neuron.threshold.detach())
    u0 = neuron.init_membrane * theta
    beta = min(max(float(neuron.beta.detach()), 0.0), 1.0)
    if beta == 1.0:
        return nir.IF(r=_full(shape, 1.0), v_threshold=_full(shape, theta), v_reset=_full(shape, 0.0)), 1.0, 0.0
    tau = DT / (1.0 - beta)
    node = nir.LIF(tau=_full(shape, tau), r=_full(shape, 1.0), v_leak=_full(shape, u0),
                   v_threshold=_full(shape, theta), v_reset=_full(shape, 0.0))
    return node, tau / DT, -u0


def _metadata(model: SpikingRestorer) -> dict[str, object]:
    weights = decode_weights(model.timesteps, model.decoding, model.decode_beta)
    return {
        "dt": DT, "timesteps": model.timesteps, "decode_weights": weights.numpy(),
        "decoding": model.decoding, "encoding": model.encoding, "residual": int(model.residual),
        "source": f"{type(model).__module__}.{type(model).__name__}",
    }


def _check_model(model: nn.Module):
    name = type(model).__name__
    if not isinstance(model, SpikingRestorer):
        raise ConfigError(f"{name}: NIR export is for the spiking students only (SpikingDnCNN, SpikingUNet with "
                          "levels=1); an ANN has no spiking layers to map")
    problems = nir_problems(model)
    if problems:
        raise ConfigError(f"{name} cannot be exported to NIR: " + "; ".join(problems))
    chain = _chain(model)
    if chain is None:
        raise ConfigError(f"{name}: NIR export supports SpikingDnCNN and SpikingUNet with levels=1 only")
    return chain


@torch.no_grad()
def to_nir(model: nn.Module, input_size: tuple[int, int] = (64, 64)) -> nir.NIRGraph:
    """The NIR graph of a spiking student for images of ``input_size`` (H, W); see the module docstring."""
    layers, (tail_path, tail) = _check_model(model)
    height, width = (int(v) for v in input_size)
    if height < 1 or width < 1:
        raise ConfigError(f"input_size={tuple(input_size)!r} is not allowed; use (H, W) with both >= 1")
    size = (height, width)
    nodes: dict[str, nir.NIRNode] = {"input": nir.Input(np.array([model.in_channels, height, width]))}
    edges: list[tuple[str, str]] = []
    previous = "input"
    for conv_path, conv, norm, neuron_path, neuron in layers:
        weight, bias = _folded_conv(conv, norm)
        node, gain, shift = _neuron_node(neuron, (conv.out_channels, height, width))
        nodes[conv_path] = _conv_node(weight * gain, bias * gain + shift, conv, size)
        nodes[neuron_path] = node
        edges += [(previous, conv_path), (conv_path, neuron_path)]
        previous = neuron_path
    nodes[tail_path] = _conv_node(*_folded_conv(tail, None), tail, size)
    nodes["output"] = nir.Output(np.array([model.in_channels, height, width]))
    edges += [(previous, tail_path), (tail_path, "output")] + ([("input", "output")] if model.residual else [])
    return nir.NIRGraph(nodes=nodes, edges=edges, metadata=_metadata(model))
