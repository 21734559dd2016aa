"""Uniform calls on restoration models: the noise level goes only to models that take one."""
from __future__ import annotations

from torch import Tensor, nn


def run_model(model: nn.Module, x: Tensor, sigma: Tensor) -> Tensor:
    """Call a restoration model, passing the noise level `sigma` ([B], 0-1 scale) to models with `needs_sigma`."""
    return model(x, sigma) if getattr(model, "needs_sigma", False) else model(x)


def count_parameters(module: nn.Module) -> int:
    """Number of parameters (trainable or not) of `module`."""
    return sum(p.numel() for p in module.parameters())
