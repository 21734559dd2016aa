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
from distill.data.pairs import PAIRED_LAYOUTS, find_pairs, load_pair, pair_key, paired_layout  # noqa: F401 (re-exported)
from distill.data.rain import PRESETS, add_rain
from distill.data.samples import SAMPLES_NAME
from distill.errors import ConfigError


def load_paired_records(folders: list[str], split: str, channels: int) -> list[ImageRecord]:
    records = []
    for folder in folders:
        base = Path(folder).resolve().name
        for rainy_path, clean_path in find_pairs(folder):
            inp, target = load_pair(rainy_path, clean_path, channels)
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
            if SAMPLES_NAME in folders:
                raise ConfigError(f"{split}: the entry {SAMPLES_NAME!r} (the embedded samples) has no rainy partners; "
                                  "set synthetic to a rain preset to train or score on it")
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
