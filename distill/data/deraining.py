"""Deraining data: paired rainy/clean folders, or synthetic rain on clean images.

Paired layouts recognised inside each given folder:

* ``rain/`` (or ``rainy/``) + ``norain/``: ``rain-N.png`` pairs with ``norain-N.png`` (Rain100L/H);
  identical names in both folders pair too.
* ``input/`` + ``target/``: identical names (the extension may differ).

Pairs are matched by file stem with a leading ``rain-``/``norain-`` removed. A file without its
partner is a `DataError` listing the unmatched names; a pair of different sizes is a `DataError`
naming both files.

With ``synthetic="light"|"heavy"`` folders are read as clean images (the ``norain/`` or ``target/``
subfolder when the folder has a paired layout) and rain is synthesised: per training crop from
``(seed, epoch, index)``, per evaluation image from ``(seed, file name)``. The embedded sample set
has no real rain, so a split left to it (``None``) always uses synthetic rain (``light`` unless
`synthetic` says otherwise).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from distill.data.base import (
    Degradation,
    ImageRecord,
    RestorationDataModule,
    check_unique_names,
    folders_name,
    load_flat_records,
)
from distill.data.images import list_images, load_image
from distill.data.rain import PRESETS, add_rain
from distill.data.samples import SAMPLES_NAME
from distill.errors import ConfigError, DataError

#: (degraded subfolder names, clean subfolder name)
PAIRED_LAYOUTS: tuple[tuple[tuple[str, ...], str], ...] = (
    (("rain", "rainy"), "norain"),
    (("input",), "target"),
)

_PREFIXES = ("norain-", "rain-")


def pair_key(path: Path) -> str:
    """Matching key of a paired file: its stem without a leading ``rain-``/``norain-``."""
    stem = path.stem
    for prefix in _PREFIXES:
        if stem.lower().startswith(prefix):
            return stem[len(prefix):]
    return stem


def paired_layout(folder: str | Path) -> tuple[Path, Path] | None:
    """``(degraded folder, clean folder)`` when `folder` has a paired layout, else None."""
    root = Path(folder)
    for rainy_names, clean_name in PAIRED_LAYOUTS:
        clean = root / clean_name
        if not clean.is_dir():
            continue
        for name in rainy_names:
            if (root / name).is_dir():
                return root / name, clean
    return None


def _keyed(files: list[Path], folder: Path) -> dict[str, Path]:
    out: dict[str, Path] = {}
    for f in files:
        k = pair_key(f)
        if k in out:
            raise DataError(f"folder {str(folder)!r}: {out[k].name!r} and {f.name!r} have the same pair key {k!r}")
        out[k] = f
    return out


def _listing(names: list[str], limit: int = 10) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f" ... and {len(names) - limit} more" if len(names) > limit else "")


def find_pairs(folder: str | Path) -> list[tuple[Path, Path]]:
    """``[(rainy file, clean file)]`` of a paired folder, sorted by key. Raises `DataError` on unmatched files."""
    layout = paired_layout(folder)
    if layout is None:
        raise DataError(
            f"folder {str(folder)!r} has no paired layout: expected subfolders rain/ + norain/ "
            f"(or rainy/ + norain/) or input/ + target/; for clean images set synthetic='light' or 'heavy'"
        )
    rainy_dir, clean_dir = layout
    rainy = _keyed(list_images(rainy_dir), rainy_dir)
    clean = _keyed(list_images(clean_dir), clean_dir)
    only_rainy = sorted(rainy[k].name for k in rainy.keys() - clean.keys())
    only_clean = sorted(clean[k].name for k in clean.keys() - rainy.keys())
    if only_rainy or only_clean:
        parts = []
        if only_rainy:
            parts.append(f"{len(only_rainy)} in {str(rainy_dir)!r} without a clean partner: {_listing(only_rainy)}")
        if only_clean:
            parts.append(f"{len(only_clean)} in {str(clean_dir)!r} without a rainy partner: {_listing(only_clean)}")
        raise DataError(f"unmatched pairs in {str(folder)!r}: " + "; ".join(parts))
    return [(rainy[k], clean[k]) for k in sorted(rainy)]


def load_paired_records(folders: list[str], split: str, channels: int) -> list[ImageRecord]:
    records = []
    for folder in folders:
        base = Path(folder).resolve().name
        for rainy_path, clean_path in find_pairs(folder):
            target = load_image(clean_path, channels)
            inp = load_image(rainy_path, channels)
            if inp.shape != target.shape:
                raise DataError(
                    f"pair sizes differ: {str(rainy_path)!r} is {inp.shape[1]}x{inp.shape[0]}, "
                    f"{str(clean_path)!r} is {target.shape[1]}x{target.shape[0]} (WxH)"
                )
            records.append(ImageRecord(name=f"{base}/{rainy_path.name}", key=rainy_path.name, target=target,
                                       path=str(clean_path), input=inp))
    check_unique_names(records, split)
    return records


class Rain(Degradation):
    """The paired rainy crop when there is one, else synthetic rain of `preset`; sigma is always 0."""

    def __init__(self, preset: str) -> None:
        self.preset = preset

    def train(self, target, paired, generator):
        if paired is not None:
            return paired, 0.0
        return add_rain(target, self.preset, generator), 0.0


class DerainingDataModule(RestorationDataModule):
    """Deraining batches (CONTRIBUTING.md): rainy `input`, clean `target`, `sigma` all zeros.

    Args:
        train, val, test: folders with a paired layout (see module doc), or clean image folders when
            `synthetic` is set. ``None`` -> embedded sample split with synthetic rain; ``test=None`` -> val.
        channels: 3 (RGB, default) or 1 (gray).
        synthetic: ``None`` (paired folders), ``"light"`` or ``"heavy"`` (synthetic rain on clean images).
        **kwargs: the :class:`~distill.data.base.RestorationDataModule` arguments.
    """

    task = "derain"
    sigma = 0.0

    def __init__(self, channels: int = 3, synthetic: str | None = None, **kwargs: Any) -> None:
        if synthetic is not None and synthetic not in PRESETS:
            raise ConfigError(
                f"synthetic={synthetic!r} is not allowed: use null (paired folders) or one of {', '.join(PRESETS)}"
            )
        self.synthetic = synthetic
        super().__init__(channels=channels, **kwargs)

    @property
    def rain_preset(self) -> str:
        """Preset used wherever rain is synthesised."""
        return self.synthetic or "light"

    def _uses_synthetic(self, folders: list[str] | None) -> bool:
        return folders is None or self.synthetic is not None

    def _load_records(self, split: str, folders: list[str] | None) -> list[ImageRecord]:
        if folders is None:
            return load_flat_records(None, split, self.channels)
        if self.synthetic is None:
            return load_paired_records(folders, split, self.channels)
        clean = []
        for f in folders:
            layout = paired_layout(f)
            clean.append(str(layout[1]) if layout is not None else f)
        return load_flat_records(clean, split, self.channels)

    def _degradation(self) -> Rain:
        return Rain(self.rain_preset)

    def _describe(self, split: str) -> str:
        folders = self._split_folders(split)
        base = SAMPLES_NAME if folders is None else folders_name(folders)
        if self._uses_synthetic(folders):
            return f"{base}-rain-{self.rain_preset}"
        return base
