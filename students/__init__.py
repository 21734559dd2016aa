"""Spiking students: neurons, the multi-step engine, probes, encoding and spiking models.

Tensors inside a student are ``[T, B, ...]``; models map ``[B, C, H, W] -> [B, C, H, W]``.
"""
from .conversion import ConvertedSpikingUNet, convert_unet
from .encoding import InputLayer, decode, rate_encode
from .engine import TimeDistributed, is_recomputing, run_over_time
from .esdnet import ESDNet
from .neurons import IF, LIF, MultiThresholdIF, SpikingNeuron, build_neuron
from .probes import firing_rates, probing, reset_probes, spike_counts, timestep_firing_rates
from .spiker_ir import SpikerIR
from .spiking_dncnn import SpikingDnCNN
from .spiking_unet import SpikingUNet
from .surrogates import ATan, FastSigmoid, StraightThrough, Surrogate, Triangle, get_surrogate

__all__ = [
    "ATan", "FastSigmoid", "StraightThrough", "Surrogate", "Triangle", "get_surrogate",
    "SpikingNeuron", "LIF", "IF", "MultiThresholdIF", "build_neuron",
    "TimeDistributed", "run_over_time", "is_recomputing",
    "InputLayer", "rate_encode", "decode",
    "probing", "reset_probes", "firing_rates", "spike_counts", "timestep_firing_rates",
    "SpikingDnCNN", "SpikingUNet", "ESDNet", "SpikerIR", "convert_unet", "ConvertedSpikingUNet",
]
