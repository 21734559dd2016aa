"""Firing-rate probes over every spiking neuron of a model.

A neuron with ``probe = True`` adds, on each forward, the number of non-zero outputs per time step
to ``spike_count`` (``[T]``) and the number of outputs per step to ``elements`` (``[T]``). With
``probe = False`` (the default) the forward does one attribute check and nothing else.

    with probing(model):
        model(x)
    rates = firing_rates(model)        # {"blocks.3.neuron": 0.12, ...}
    per_step = spike_counts(model)     # {"blocks.3.neuron": tensor([..T..])}
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch
from torch import Tensor, nn

from .neurons import SpikingNeuron

__all__ = [
    "spiking_neurons",
    "probing",
    "reset_probes",
    "firing_rates",
    "spike_counts",
    "element_counts",
    "timestep_firing_rates",
    "overall_firing_rate",
]


def spiking_neurons(model: nn.Module) -> dict[str, SpikingNeuron]:
    """``{module path: neuron}`` for every :class:`SpikingNeuron` in ``model`` (path ``""`` for itself)."""
    return {name: m for name, m in model.named_modules() if isinstance(m, SpikingNeuron)}


def reset_probes(model: nn.Module) -> None:
    """Clear every neuron's ``spike_count`` and ``elements``."""
    for n in spiking_neurons(model).values():
        n.reset_probes()


@contextmanager
def probing(model: nn.Module, reset: bool = True) -> Iterator[nn.Module]:
    """Turn probes on for every neuron inside the block (clearing counts first unless ``reset=False``);
    the previous ``probe`` flags are restored on exit and the counts are kept for reading."""
    neurons = list(spiking_neurons(model).values())
    previous = [n.probe for n in neurons]
    if reset:
        for n in neurons:
            n.reset_probes()
    for n in neurons:
        n.probe = True
    try:
        yield model
    finally:
        for n, p in zip(neurons, previous):
            n.probe = p


def spike_counts(model: nn.Module) -> dict[str, Tensor]:
    """``{path: spike_count [T]}`` for the neurons that counted something."""
    return {k: n.spike_count.clone() for k, n in spiking_neurons(model).items() if n.spike_count is not None}


def element_counts(model: nn.Module) -> dict[str, Tensor]:
    """``{path: elements [T]}`` for the neurons that counted something."""
    return {k: n.elements.clone() for k, n in spiking_neurons(model).items() if n.elements is not None}


def firing_rates(model: nn.Module) -> dict[str, float]:
    """``{path: non-zero outputs / outputs}`` over all counted steps, for neurons that counted."""
    out = {}
    for k, n in spiking_neurons(model).items():
        if n.elements is not None and int(n.elements.sum()) > 0:
            out[k] = float(n.spike_count.sum()) / float(n.elements.sum())
    return out


def timestep_firing_rates(model: nn.Module) -> dict[str, Tensor]:
    """``{path: rate per time step [T]}`` (float64)."""
    out = {}
    for k, n in spiking_neurons(model).items():
        if n.elements is not None:
            out[k] = n.spike_count.to(torch.float64) / n.elements.clamp(min=1).to(torch.float64)
    return out


def overall_firing_rate(model: nn.Module) -> float:
    """All non-zero outputs over all outputs of all probed neurons (NaN if nothing was counted)."""
    spikes = total = 0
    for n in spiking_neurons(model).values():
        if n.elements is not None:
            spikes += int(n.spike_count.sum())
            total += int(n.elements.sum())
    return spikes / total if total else float("nan")
