"""DataModules (denoising, deraining), image I/O with clear errors, the embedded sample set, synthetic rain."""
from distill.data.base import (
    Degradation,
    EpochSampler,
    EvalDataset,
    ImageRecord,
    PatchDataset,
    RestorationDataModule,
    ResumableDataLoader,
    derive_seed,
)
from distill.data.denoising import DenoisingDataModule, GaussianNoise
from distill.data.deraining import DerainingDataModule, Rain, find_pairs
from distill.data.images import IMAGE_EXTENSIONS, list_images, load_image, read_image
from distill.data.rain import PRESETS as RAIN_PRESETS
from distill.data.rain import add_rain, rain_layer
from distill.data.samples import SAMPLES_NAME, SAMPLES_TRAIN, SAMPLES_VAL, sample_paths, samples_dir
from students.conversion import set_default_calibration


def _default_calibration(channels: int) -> DenoisingDataModule:
    """What ``students.conversion.ConvertedSpikingUNet(calibration=None)`` calibrates on (students cannot
    import distill, so distill registers it): the embedded training split, sigma = 25, 40 x 40 crops."""
    return DenoisingDataModule(channels=channels, sigma=25.0, patch_size=40)


set_default_calibration(_default_calibration)

__all__ = [
    "IMAGE_EXTENSIONS",
    "RAIN_PRESETS",
    "SAMPLES_NAME",
    "SAMPLES_TRAIN",
    "SAMPLES_VAL",
    "Degradation",
    "DenoisingDataModule",
    "DerainingDataModule",
    "EpochSampler",
    "EvalDataset",
    "GaussianNoise",
    "ImageRecord",
    "PatchDataset",
    "Rain",
    "RestorationDataModule",
    "ResumableDataLoader",
    "add_rain",
    "derive_seed",
    "find_pairs",
    "list_images",
    "load_image",
    "rain_layer",
    "read_image",
    "sample_paths",
    "samples_dir",
]
