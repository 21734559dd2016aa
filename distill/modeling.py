"""Helpers on restoration networks: uniform calls (the noise level goes only to models that take one), parameter
counts, and hyper-parameters that leave live networks out."""
from __future__ import annotations

import inspect
import warnings
from typing import TYPE_CHECKING

from torch import Tensor, nn

if TYPE_CHECKING:
    from lightning import LightningModule


def run_model(model: nn.Module, x: Tensor, sigma: Tensor) -> Tensor:
    """Call a restoration model, passing the noise level `sigma` ([B], 0-1 scale) to models with `needs_sigma`."""
    return model(x, sigma) if getattr(model, "needs_sigma", False) else model(x)


def count_parameters(module: nn.Module) -> int:
    """Number of parameters (trainable or not) of `module`."""
    return sum(p.numel() for p in module.parameters())


def save_hyperparameters_without_networks(module: LightningModule, *names: str) -> None:
    """`save_hyperparameters()` of the calling `__init__`, leaving out the networks among `names` that are live objects.

    Under LightningCLI the hyper-parameters are the recipe's `class_path` dicts, which `load_from_checkpoint`
    rebuilds, so they stay; networks passed directly would otherwise be pickled whole into every checkpoint.
    """
    frame = inspect.currentframe().f_back  # the __init__ whose arguments are saved
    with warnings.catch_warnings():  # Lightning warns about the live networks dropped just below
        warnings.filterwarnings("ignore", message=r"Attribute '\w+' is an instance of `nn.Module`")
        module.save_hyperparameters(frame=frame)
    live = [name for name in names if isinstance(module.hparams.get(name), nn.Module)]
    if live:
        module.save_hyperparameters(ignore=live, frame=frame)
