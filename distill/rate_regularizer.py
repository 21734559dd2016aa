"""Firing-rate regulariser: a penalty on a spiking network's spikes in training, to trade quality for energy.

The output of every spiking neuron is captured by module path during the training forward (`distill.hints.FeatureTap`,
so time-chunked students are joined and recompute passes ignored); the penalty is computed from those tensors and
reaches the weights through the surrogate gradient.
"""
from __future__ import annotations

from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from typing import Iterator, Literal, get_args

from torch import Tensor, nn

from distill.errors import ConfigError
from distill.hints import FeatureTap
from distill.schedules import WeightSchedule, scheduled
from spikedistill_core.checks import check_number
from students.probes import spiking_neurons

RateKind = Literal["l1", "target"]
RATE_KINDS = get_args(RateKind)


def _is_rate(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and 0.0 <= value <= 1.0


class SpikeTaps:
    """The outputs of a network's spiking neurons, captured while `attached`."""

    def __init__(self, network: nn.Module) -> None:
        self.taps = {path: FeatureTap(neuron, "spikes", path) for path, neuron in spiking_neurons(network).items()}

    @contextmanager
    def attached(self) -> Iterator["SpikeTaps"]:
        """Hook every neuron for the duration of the block."""
        with ExitStack() as stack:
            for tap in self.taps.values():
                stack.enter_context(tap.attached())
            yield self

    def outputs(self) -> dict[str, Tensor]:
        """`{neuron path: output}` as captured, differentiable (the taps are emptied)."""
        return {path: tap.take() for path, tap in self.taps.items()}

    def rates(self) -> dict[str, Tensor]:
        """`{neuron path: mean output}`: spikes per neuron per step, differentiable (the taps are emptied)."""
        return {path: out.mean() for path, out in self.outputs().items()}


@dataclass
class RateRegularizer:
    """Recipe option ``model.init_args.rate_regularizer``: a penalty on the spiking network's firing rates.

    A layer's rate is the mean of its neuron's output over time steps, batch and units (spikes per neuron per step;
    for a graded multi-threshold neuron, the mean emitted value).

    * ``kind: l1``: ``weight`` x the mean over every spiking layer of its rate.
    * ``kind: target``: ``weight`` x the mean over the targeted layers of ``(rate - target)^2``; ``target`` is one
      rate for every layer, or ``{neuron path: rate}`` for the layers named (the others are only logged).

    ``schedule`` (a `distill.schedules.WeightSchedule`) scales ``weight`` by the optimizer step.
    """

    kind: RateKind = "l1"
    weight: float = 1.0
    target: float | dict[str, float] | None = None
    schedule: WeightSchedule | None = None

    def __post_init__(self) -> None:
        if self.kind not in RATE_KINDS:
            raise ConfigError(f"rate_regularizer kind={self.kind!r} is not one of {list(RATE_KINDS)}")
        check_number("rate_regularizer weight", self.weight, 0)
        if self.kind == "l1" and self.target is not None:
            raise ConfigError(
                f"rate_regularizer target={self.target!r} is not allowed with kind 'l1', which penalises the mean rate "
                "itself; remove target, or use kind 'target'"
            )
        if self.kind == "target":
            self._check_target()

    def _check_target(self) -> None:
        allowed = "a rate in [0, 1] (spikes per neuron per step) or {neuron path: rate}"
        target = self.target
        if target is None:
            raise ConfigError(f"rate_regularizer kind 'target' needs target: {allowed}")
        if isinstance(target, dict):
            bad = {path: rate for path, rate in target.items() if not (isinstance(path, str) and _is_rate(rate))}
            if not target or bad:
                raise ConfigError(f"rate_regularizer target={target!r} is not allowed"
                                  f"{f' (bad entries {bad})' if bad else ' (empty)'}; use {allowed}")
        elif not _is_rate(target):
            raise ConfigError(f"rate_regularizer target={target!r} is not allowed; use {allowed}")

    def targets(self, network: nn.Module) -> dict[str, float | None]:
        """`{neuron path: target rate}` of the layers penalised in `network` (None under ``l1``); a ConfigError when
        `network` has no spiking neuron or `target` names a path that is not one of its neurons."""
        paths = list(spiking_neurons(network))
        if not paths:
            raise ConfigError(
                f"rate_regularizer needs a spiking network, but {type(network).__name__} has no spiking neuron "
                "(students.neurons.SpikingNeuron); remove model.init_args.rate_regularizer"
            )
        if not isinstance(self.target, dict):
            return dict.fromkeys(paths, self.target)
        unknown = [path for path in self.target if path not in paths]
        if unknown:
            raise ConfigError(f"rate_regularizer target names {unknown}, which are not spiking neurons of "
                              f"{type(network).__name__}; its neuron paths are {paths}")
        return {path: float(rate) for path, rate in self.target.items()}

    def loss(self, rates: dict[str, Tensor], targets: dict[str, float | None], step: int) -> Tensor:
        """The weighted penalty at optimizer `step` from the layer `rates` (`SpikeTaps.rates`) and `targets`."""
        if self.kind == "l1":
            terms = [rates[path] for path in targets]
        else:
            terms = [(rates[path] - target) ** 2 for path, target in targets.items()]
        return scheduled(self.weight, self.schedule, step) * sum(terms) / len(terms)
