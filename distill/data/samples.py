"""The embedded sample set: natural photos shipped inside scikit-image's wheel (nothing downloads).

Files are read straight from the ``skimage/data/`` folder of the installed package; the
``skimage.data.*`` loader functions are never called (some of them fetch from the network).

Fixed split (documented, never shuffled):

* validation / test (3 images, gray and colour): ``camera.png`` (gray 512x512),
  ``chelsea.png`` (colour 451x300), ``coins.png`` (gray 384x303).
* training (13 images): astronaut, brick, cell, coffee, grass, gravel, hubble_deep_field, ihc,
  moon, motorcycle_left, motorcycle_right, retina, rocket.

Left out on purpose: synthetic or non-photo pictures (chessboard, color wheel, horse silhouette,
logo, page, phantom, text, the animated GIF, multipage TIFFs, lfw npy), ``clock_motion.png``
(already motion-blurred) and ``microaneurysms.png`` (a 102x102 crop of a fundus photo).
"""
from __future__ import annotations

import importlib.util
from pathlib import Path

from distill.errors import ConfigError, DataError

#: Name used for the embedded set in results (``dataset``).
SAMPLES_NAME = "skimage-samples"

#: Held-out images (validation, and test unless test folders are given).
SAMPLES_VAL: tuple[str, ...] = ("camera.png", "chelsea.png", "coins.png")

#: Training images.
SAMPLES_TRAIN: tuple[str, ...] = (
    "astronaut.png",
    "brick.png",
    "cell.png",
    "coffee.png",
    "grass.png",
    "gravel.png",
    "hubble_deep_field.jpg",
    "ihc.png",
    "moon.png",
    "motorcycle_left.png",
    "motorcycle_right.png",
    "retina.jpg",
    "rocket.jpg",
)


def samples_dir() -> Path:
    """The ``skimage/data`` folder of the installed scikit-image (found without importing it)."""
    spec = importlib.util.find_spec("skimage")
    if spec is None or not spec.submodule_search_locations:
        raise DataError("scikit-image is not installed: the embedded sample set lives in its wheel")
    return Path(list(spec.submodule_search_locations)[0]) / "data"


def sample_paths(split: str) -> list[Path]:
    """Paths of the embedded images of `split` (``"train"`` or ``"val"``/``"test"``) present on disk."""
    if split == "train":
        names = SAMPLES_TRAIN
    elif split in ("val", "test"):
        names = SAMPLES_VAL
    else:
        raise ConfigError(f"split={split!r} is not allowed: use 'train', 'val' or 'test'")
    folder = samples_dir()
    paths = [folder / n for n in names if (folder / n).is_file()]
    if not paths:
        raise DataError(
            f"none of the embedded {split} images ({', '.join(names)}) is in {str(folder)!r}"
        )
    return paths
