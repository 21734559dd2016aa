"""Uniform calls on restoration models: the noise level goes only to models that take one."""
from __future__ import annotations

from torch import Tensor, nn


def run_model(model: nn.Module, x: Tensor, sigma: Tensor) -> Tensor:
    """Call a restoration model, passing the noise level `sigma` ([B], 0-1 scale) to models with `needs_sigma`."""
    return model(x, sigma) if getattr(model, "needs_sigma", False) else model(x)


def count_parameters(module: nn.Module) -> int:
    """Number of parameters (trainable or not) of `module`."""
    return sum(p.numel() for p in module.parameters())


def network_args_to_ignore(*names: str) -> list[str]:
    """Init args to leave out of `save_hyperparameters`: injected networks passed as live objects.

    Under LightningCLI the hyper-parameters are the recipe's `class_path` dicts, which `load_from_checkpoint`
    rebuilds, so nothing is ignored; objects passed directly would otherwise be pickled whole.
    """
    from lightning.pytorch.core.mixins.hparams_mixin import _given_hyperparameters  # set by LightningCLI

    return [] if _given_hyperparameters.get() is not None else list(names)
