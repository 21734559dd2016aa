"""The training losses read off a spiking network's neuron outputs: the rate regulariser and the twin hint."""
from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, Iterator

from torch import Tensor, nn

from distill.rate_regularizer import RateRegularizer, SpikeTaps
from distill.warm_start import TwinHint


class SpikeLosses:
    """One training step's spike-read loss terms: hooks the network's neurons only when a term reads them."""

    def __init__(self, network: nn.Module, regularizer: RateRegularizer | None, targets: dict[str, float | None],
                 twin_hint: TwinHint | None) -> None:
        self.regularizer, self.targets, self.twin_hint = regularizer, targets, twin_hint
        self.taps = SpikeTaps(network) if regularizer is not None or twin_hint is not None else None

    @contextmanager
    def tapped(self) -> Iterator[None]:
        """Capture the neurons' outputs for the block (nothing is hooked when no term reads them)."""
        if self.taps is None:
            yield
        else:
            with self.taps.attached():
                yield

    def terms(self, x: Tensor, step: int, log: Callable[[str, Tensor], None]) -> dict[str, Tensor]:
        """``rate_loss`` (each layer's rate logged as ``train/rate/<layer>``) and ``twin_hint``, as configured;
        ``x`` is the step's network input, which the twin hint runs the twin on."""
        if self.taps is None:
            return {}
        spikes, terms = self.taps.outputs(), {}
        if self.regularizer is not None:
            rates = {path: out.mean() for path, out in spikes.items()}
            for layer, rate in rates.items():
                log(f"train/rate/{layer}", rate.detach())
            terms["rate_loss"] = self.regularizer.loss(rates, self.targets, step)
        if self.twin_hint is not None:
            terms["twin_hint"] = self.twin_hint.loss(spikes, x)
        return terms
