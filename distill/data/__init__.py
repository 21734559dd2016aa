"""DataModules (denoising, deraining), image I/O with clear errors, the embedded sample set, synthetic rain.

Names load lazily (PEP 562): `import distill.data.images` or `distill.data.pairs` does not import Lightning, so
commands that only read images (`spikedistill data check`) start fast; `from distill.data import X` works as before.
"""
from __future__ import annotations

import importlib
from typing import Any

from students.conversion import set_default_calibration

_EXPORTS: dict[str, tuple[str, str]] = {
    **{name: ("distill.data.base", name) for name in (
        "Degradation", "EpochSampler", "EvalDataset", "ImageRecord", "PatchDataset", "RestorationDataModule",
        "derive_seed")},
    "DenoisingDataModule": ("distill.data.denoising", "DenoisingDataModule"),
    "GaussianNoise": ("distill.data.denoising", "GaussianNoise"),
    "DerainingDataModule": ("distill.data.deraining", "DerainingDataModule"),
    "Rain": ("distill.data.deraining", "Rain"),
    "find_pairs": ("distill.data.pairs", "find_pairs"),
    **{name: ("distill.data.images", name) for name in ("IMAGE_EXTENSIONS", "list_images", "load_image",
                                                        "read_image")},
    "RAIN_PRESETS": ("distill.data.rain", "PRESETS"),
    "add_rain": ("distill.data.rain", "add_rain"),
    "rain_layer": ("distill.data.rain", "rain_layer"),
    **{name: ("distill.data.samples", name) for name in ("SAMPLES_NAME", "SAMPLES_TRAIN", "SAMPLES_VAL",
                                                         "sample_paths", "samples_dir")},
}


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    module, attr = _EXPORTS[name]
    value = getattr(importlib.import_module(module), attr)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))


def _default_calibration(channels: int) -> Any:
    """What ``students.conversion.ConvertedSpikingUNet(calibration=None)`` calibrates on (students cannot
    import distill, so distill registers it): the embedded training split, sigma = 25, 40 x 40 crops."""
    from distill.data.denoising import DenoisingDataModule

    return DenoisingDataModule(channels=channels, sigma=25.0, patch_size=40)


set_default_calibration(_default_calibration)

__all__ = sorted(_EXPORTS)
