"""ANN -> SNN conversion: initialise a :class:`SpikingUNet` from a trained ``teachers.unet.UNet``.

Data-based, connection-wise weight normalisation (Rueckauer et al. 2017; Spiking-UNet):

* ``lambda_l`` is the ``percentile`` (default 99.9th) of the non-zero activations of ReLU ``l`` on
  the given training patches.
* A spiking layer must produce a membrane current ``theta * a_l / lambda_l`` from its inputs, which
  fire at ``kappa * a / lambda`` (``kappa = theta`` for multi-threshold neurons, whose outputs are
  in membrane units; ``kappa = 1`` for IF neurons, whose spikes are 1). Hence for each input slice
  coming from source ``s``: ``W'[:, slice_s] = W[:, slice_s] * lambda_s * theta / (kappa * lambda_l)``
  and ``b' = b * theta / lambda_l``. The image is the analog source of the first conv
  (``lambda = kappa = 1``). A concatenated input ``[skip, up]`` is scaled slice by slice, each with
  its own source's factor.
* The output 1x1 conv is not followed by a neuron: ``W' = W * lambda_src / kappa``, ``b' = b``, so the
  decoded (time-averaged) output is in the ANN's units.

The result is an ordinary :class:`SpikingUNet` (surrogate gradients), ready to fine-tune.

:class:`ConvertedSpikingUNet` does the conversion at construction, so a recipe can inject it as a
``class_path`` (the trained UNet and the calibration data are themselves injected)::

    student:
      class_path: students.conversion.ConvertedSpikingUNet
      init_args:
        ann: {class_path: teachers.unet.UNet, init_args: {preset: tiny, checkpoint: teachers/pretrained/....pt}}
        calibration: ../data/denoise_gray_s25.yaml   # training patches of this DataModule calibrate lambda
        timesteps: 4
"""
from __future__ import annotations

import math
import os
import warnings
from typing import TYPE_CHECKING, Callable, Iterable, Mapping

import torch
from torch import Tensor, nn

from spikedistill_core.checks import check_int
from spikedistill_core.errors import ConfigError

from .spiking_unet import SpikingUNet
from .surrogates import Surrogate

if TYPE_CHECKING:  # for annotations (and jsonargparse) only: students never import distill at run time
    from distill.data.base import RestorationDataModule

__all__ = [
    "ann_to_snn_key", "activation_scales", "unet_connections", "convert_unet", "calibration_inputs",
    "default_init_membrane", "ConvertedSpikingUNet", "set_default_calibration",
]

_CONVERTIBLE = ("multi_threshold", "if")


def ann_to_snn_key(name: str) -> str:
    """ANN parameter name -> SpikingUNet parameter name (every layer but ``out`` gains ``.layer``)."""
    module, _, leaf = name.rpartition(".")
    if module == "out":
        return name
    return f"{module}.layer.{leaf}"


def _batches(data) -> Iterable[Tensor]:
    if isinstance(data, Tensor):
        yield data
        return
    for item in data:
        if isinstance(item, Mapping):
            item = item["input"]
        elif isinstance(item, (list, tuple)):
            item = item[0]
        yield item


@torch.no_grad()
def activation_scales(
    ann: nn.Module, data, percentile: float = 99.9, max_values_per_batch: int = 1 << 20
) -> dict[str, float]:
    """``{relu path: lambda}``: the ``percentile`` of each ReLU's non-zero outputs over ``data``
    (a ``[N, C, H, W]`` tensor, or an iterable of tensors / dict batches with ``"input"``).
    Large batches are subsampled with a fixed stride (deterministic). An all-zero layer gets 1."""
    if not (0 < percentile <= 100):
        raise ConfigError(f"percentile={percentile!r} is not allowed; it must be in (0, 100]")
    relus = {name: m for name, m in ann.named_modules() if isinstance(m, nn.ReLU)}
    store: dict[str, list[Tensor]] = {name: [] for name in relus}

    def hook(name):
        def fn(_m, _i, out):
            v = out.detach().flatten()
            v = v[v > 0]
            if v.numel() > max_values_per_batch:
                v = v[:: math.ceil(v.numel() / max_values_per_batch)]
            store[name].append(v.float().cpu())

        return fn

    handles = [m.register_forward_hook(hook(name)) for name, m in relus.items()]
    was_training = ann.training
    ann.eval()
    try:
        seen = 0
        for x in _batches(data):
            ann(x)
            seen += 1
        if seen == 0:
            raise ConfigError("activation_scales: data is empty; pass training patches [N, C, H, W]")
    finally:
        for h in handles:
            h.remove()
        ann.train(was_training)
    scales = {}
    for name, parts in store.items():
        v = torch.cat(parts) if parts else torch.zeros(0)
        if v.numel() == 0:
            scales[name] = 1.0
            continue
        k = max(1, min(v.numel(), math.ceil(percentile / 100.0 * v.numel())))
        scales[name] = float(torch.kthvalue(v, k).values)
    return scales


def unet_connections(levels: int, channels: list[int]) -> list[tuple[str, list[tuple[str, int]], str | None]]:
    """``[(layer path, [(source relu path or "input", input channels), ...], relu path after it)]``
    for a U-Net with the module tree of ``teachers.unet.UNet``."""
    conns: list[tuple[str, list[tuple[str, int]], str | None]] = []
    prev = "input"
    for i in range(levels):
        e = f"encoders.{i}"
        conns.append((f"{e}.conv1", [(prev, -1)], f"{e}.act1"))
        conns.append((f"{e}.conv2", [(f"{e}.act1", -1)], f"{e}.act2"))
        prev = f"{e}.act2"
    for j in range(levels - 1):
        d = f"decoders.{j}"
        lvl = levels - 2 - j
        conns.append((f"{d}.up", [(prev, -1)], f"{d}.up_act"))
        skip = f"encoders.{lvl}.act2"
        conns.append((f"{d}.conv1", [(skip, channels[lvl]), (f"{d}.up_act", channels[lvl])], f"{d}.act1"))
        conns.append((f"{d}.conv2", [(f"{d}.act1", -1)], f"{d}.act2"))
        prev = f"{d}.act2"
    conns.append(("out", [(prev, -1)], None))
    return conns


def default_init_membrane(neuron: str) -> float:
    """Half the smallest firing quantum, as a fraction of threshold (see :func:`convert_unet`)."""
    return 0.125 if neuron == "multi_threshold" else 0.5


@torch.no_grad()
def convert_unet(
    ann: nn.Module,
    data,
    timesteps: int = 4,
    percentile: float = 99.9,
    neuron: str = "multi_threshold",
    threshold: float = 1.0,
    init_membrane: float | None = None,
    **snn_kwargs,
) -> SpikingUNet:
    """A :class:`SpikingUNet` whose weights are ``ann``'s, normalised as in the module docstring.

    ``ann`` is a ``teachers.unet.UNet``; ``data`` are training patches (see :func:`activation_scales`);
    extra keyword arguments go to :class:`SpikingUNet` (e.g. ``spike_grad``, ``decoding``).
    ``init_membrane`` (fraction of threshold) defaults to half the smallest firing quantum: 0.125 for
    multi-threshold neurons (levels 2, 1, 0.5, 0.25), 0.5 for IF. Starting there instead of at rest
    turns the neurons' truncation into rounding and cuts the conversion error about tenfold at small T.
    """
    if neuron not in _CONVERTIBLE:
        raise ConfigError(f"neuron={neuron!r} is not allowed for conversion; use one of {list(_CONVERTIBLE)}")
    for attr in ("in_channels", "base_channels", "levels", "width", "channels", "residual"):
        if not hasattr(ann, attr):
            raise ConfigError(f"convert_unet: ann lacks {attr!r}; pass a teachers.unet.UNet")
    if init_membrane is None:
        init_membrane = default_init_membrane(neuron)
    snn = SpikingUNet(
        in_channels=ann.in_channels,
        base_channels=ann.base_channels,
        levels=ann.levels,
        width=ann.width,
        timesteps=timesteps,
        neuron=neuron,
        threshold=threshold,
        init_membrane=init_membrane,
        residual=ann.residual,
        **snn_kwargs,
    )
    if snn.channels != list(ann.channels):
        raise ConfigError(f"convert_unet: channel mismatch ANN {ann.channels} vs SNN {snn.channels}")
    lam = activation_scales(ann, data, percentile)
    lam["input"] = 1.0
    theta = float(threshold)
    kappa_neuron = theta if neuron == "multi_threshold" else 1.0

    def kappa(src: str) -> float:
        return 1.0 if src == "input" else kappa_neuron

    ann_params = dict(ann.named_parameters())
    snn_params = dict(snn.named_parameters())
    done = set()
    for layer, sources, act in unet_connections(ann.levels, list(ann.channels)):
        w = ann_params[f"{layer}.weight"].detach().clone()
        b = ann_params[f"{layer}.bias"].detach().clone()
        transposed = layer.endswith(".up")
        in_dim = 0 if transposed else 1
        if act is None:  # output layer: decoded output stays in ANN units
            (src, _), = sources
            w.mul_(lam[src] / kappa(src))
        else:
            start = 0
            for src, n in sources:
                n = w.shape[in_dim] if n < 0 else n
                factor = lam[src] * theta / (kappa(src) * lam[act])
                w.narrow(in_dim, start, n).mul_(factor)
                start += n
            if start != w.shape[in_dim]:
                raise ConfigError(f"convert_unet: {layer} has {w.shape[in_dim]} input channels, sources give {start}")
            b.mul_(theta / lam[act])
        for leaf, value in (("weight", w), ("bias", b)):
            key = ann_to_snn_key(f"{layer}.{leaf}")
            snn_params[key].copy_(value)
            done.add(key)
    missing = [k for k in snn_params if k not in done and not k.endswith(("threshold", "beta"))]
    if missing:
        raise ConfigError(f"convert_unet: SNN parameters not set by conversion: {missing}")
    snn.activation_scales = lam
    return snn


_default_calibration: "Callable[[int], RestorationDataModule] | None" = None


def set_default_calibration(factory: "Callable[[int], RestorationDataModule] | None") -> None:
    """Register what ``ConvertedSpikingUNet(calibration=None)`` calibrates on: ``factory(channels)`` returns a
    DataModule. ``distill.data`` registers its embedded training split (Gaussian noise sigma = 25, 40 x 40 crops)
    when it is imported; ``students`` cannot build it itself, since students and teachers never import distill."""
    global _default_calibration
    _default_calibration = factory


def calibration_inputs(data: "RestorationDataModule", count: int, channels: int | None = None) -> Tensor:
    """The first `count` training patches (degraded inputs, ``[count, C, p, p]``) of DataModule `data`.

    They are the epoch-0 crops, a pure function of the DataModule's seed, so a conversion is reproducible.
    """
    check_int("calibration_patches", count)
    data_channels = getattr(data, "channels", None)
    if channels is not None and data_channels is not None and data_channels != channels:
        raise ConfigError(
            f"calibration data gives {data_channels}-channel images but the U-Net expects {channels}; "
            f"set the calibration DataModule's channels: {channels}"
        )
    dataset = data.train_dataset()
    count = min(count, len(dataset))
    return torch.stack([dataset[(0, i)]["input"] for i in range(count)])


class ConvertedSpikingUNet(SpikingUNet):
    """A :class:`SpikingUNet` initialised at construction by :func:`convert_unet` from a trained U-Net.

    Its module tree and ``state_dict`` are exactly a ``SpikingUNet``'s (the ANN is not kept as a
    submodule), so checkpoints, ``spikedistill export`` and hint paths work unchanged; a resumed run
    converts again and then loads the checkpoint over it.

    Args:
        ann: the trained ``teachers.unet.UNet`` (give it its ``checkpoint``).
        calibration: DataModule whose training patches calibrate the activation scales; None = the
            embedded training split with Gaussian noise sigma = 25 (``DenoisingDataModule``, 40 x 40 crops)
            in ``ann``'s channels, as registered by ``distill.data`` (see :func:`set_default_calibration`).
        calibration_patches: how many of its (epoch-0, seeded) training patches to use.
        timesteps, percentile, neuron, threshold, init_membrane: see :func:`convert_unet`.
        spike_grad, learn_threshold, decoding, checkpoint_segments: passed to :class:`SpikingUNet`.
    """

    def __init__(
        self,
        ann: nn.Module,
        calibration: "RestorationDataModule | None" = None,
        calibration_patches: int = 64,
        timesteps: int = 4,
        percentile: float = 99.9,
        neuron: str = "multi_threshold",
        threshold: float = 1.0,
        init_membrane: float | None = None,
        spike_grad: "str | Surrogate" = "atan",
        learn_threshold: bool = False,
        decoding: str = "mean",
        checkpoint_segments: int | None = None,
    ) -> None:
        for attr in ("in_channels", "base_channels", "levels", "width", "channels", "residual"):
            if not hasattr(ann, attr):
                raise ConfigError(
                    f"ConvertedSpikingUNet: ann is a {type(ann).__name__}, which lacks {attr!r}; pass a teachers.unet.UNet"
                )
        source = getattr(ann, "checkpoint_path", None)
        if source is None:
            warnings.warn(
                "ConvertedSpikingUNet: the U-Net has no checkpoint, so an untrained network is converted; "
                "give ann.init_args.checkpoint", UserWarning, stacklevel=2,
            )
        if calibration is None:
            if _default_calibration is None:
                raise ConfigError(
                    "ConvertedSpikingUNet: calibration=None needs the default calibration data, which "
                    "importing distill.data registers; give calibration (a DataModule) or import distill.data"
                )
            calibration = _default_calibration(ann.in_channels)
        if init_membrane is None:
            init_membrane = default_init_membrane(neuron)
        patches = calibration_inputs(calibration, calibration_patches, ann.in_channels)
        options = dict(spike_grad=spike_grad, learn_threshold=learn_threshold, decoding=decoding,
                       checkpoint_segments=checkpoint_segments)
        converted = convert_unet(ann, patches, timesteps=timesteps, percentile=percentile, neuron=neuron,
                                 threshold=threshold, init_membrane=init_membrane, **options)
        super().__init__(
            in_channels=ann.in_channels, base_channels=ann.base_channels, levels=ann.levels, width=ann.width,
            timesteps=timesteps, neuron=neuron, threshold=threshold, init_membrane=init_membrane,
            residual=ann.residual, **options,
        )
        self.load_state_dict(converted.state_dict())
        self.activation_scales = converted.activation_scales
        self.converted_from = None if source is None else os.fspath(source)
