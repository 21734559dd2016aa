"""ANN twins of the spiking students: the same topology (same module tree, parameter names and
shapes) with ReLU in place of every spiking neuron and T = 1. Each twin *is* its student class built
with ``neuron="relu", timesteps=1``; these small named classes exist so recipes can name them
(``class_path: teachers.twins.DnCNNTwin``) and load weights like any teacher.

A twin has no neuron parameters, so its ``state_dict`` equals the student's minus learnable
``beta``/``threshold`` entries (and neuron buffers), which lets twin weights initialise a student
(``student.load_state_dict(twin.state_dict(), strict=False)``).

Like DnCNN, a twin keeps the default initialisation of its last conv (``zero_tail=False``), which the
shipped twin weights were trained from; ``zero_tail=True`` starts it as the identity, as students do.
"""
from __future__ import annotations

import os
from typing import Sequence

from torch import nn

from students.esdnet import ESDNet
from students.spiker_ir import SpikerIR
from students.spiking_dncnn import SpikingDnCNN
from students.spiking_unet import SpikingUNet

__all__ = ["DnCNNTwin", "UNetTwin", "ESDNetTwin", "SpikerIRTwin"]


def _load(model: nn.Module, checkpoint: str | None) -> None:
    model.checkpoint_path = None
    if checkpoint is not None:
        from teachers.weights import load_weights  # lazy: only needed when loading

        resolved = load_weights(model, checkpoint)
        model.checkpoint_path = str(resolved) if isinstance(resolved, (str, os.PathLike)) else str(checkpoint)


class DnCNNTwin(SpikingDnCNN):
    """ANN twin of :class:`students.spiking_dncnn.SpikingDnCNN` (a plain DnCNN)."""

    def __init__(
        self,
        in_channels: int = 1,
        features: int = 32,
        depth: int = 10,
        norm: str = "bn",
        residual: bool = True,
        zero_tail: bool = False,
        checkpoint: str | None = None,
    ):
        super().__init__(
            in_channels, features, depth, timesteps=1, neuron="relu", norm=norm, residual=residual, zero_tail=zero_tail
        )
        _load(self, checkpoint)


class UNetTwin(SpikingUNet):
    """ANN twin of :class:`students.spiking_unet.SpikingUNet` (module tree with ``.layer`` wrappers;
    ``teachers.unet.UNet`` is the same network with plain names, used for conversion)."""

    def __init__(
        self,
        in_channels: int = 1,
        base_channels: int | None = None,
        levels: int | None = None,
        width: float = 1.0,
        preset: str | None = None,
        residual: bool = True,
        zero_tail: bool = False,
        checkpoint: str | None = None,
    ):
        super().__init__(
            in_channels, base_channels, levels, width, preset, timesteps=1, neuron="relu", residual=residual,
            zero_tail=zero_tail,
        )
        _load(self, checkpoint)


class ESDNetTwin(ESDNet):
    """ANN twin of :class:`students.esdnet.ESDNet`."""

    def __init__(
        self,
        in_channels: int = 3,
        dim: int | None = None,
        encoder_blocks: Sequence[int] | None = None,
        decoder_blocks: Sequence[int] | None = None,
        preset: str | None = None,
        reduction_c: int = 16,
        spiking_shortcut: bool = False,
        residual: bool = True,
        zero_tail: bool = False,
        checkpoint: str | None = None,
    ):
        super().__init__(
            in_channels, dim, encoder_blocks, decoder_blocks, preset, timesteps=1, neuron="relu",
            reduction_c=reduction_c, spiking_shortcut=spiking_shortcut, residual=residual, zero_tail=zero_tail,
        )
        _load(self, checkpoint)


class SpikerIRTwin(SpikerIR):
    """ANN twin of :class:`students.spiker_ir.SpikerIR`."""

    def __init__(
        self,
        in_channels: int = 3,
        channels: Sequence[int] | None = None,
        blocks: int | None = None,
        preset: str | None = None,
        norm: str = "bn",
        residual: bool = True,
        zero_tail: bool = False,
        checkpoint: str | None = None,
    ):
        super().__init__(
            in_channels, channels, blocks, preset, timesteps=1, neuron="relu", norm=norm, residual=residual,
            zero_tail=zero_tail,
        )
        _load(self, checkpoint)
