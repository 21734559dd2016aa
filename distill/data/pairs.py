"""Paired rainy/clean folders (Rain100L/H: ``rain/`` + ``norain/``; or ``input/`` + ``target/``): finding the
pairs and reading one pair, with `DataError`s naming the files. No Lightning here, so that
`spikedistill data check` starts fast; `distill.data.deraining` builds its records on these."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from distill.data.images import list_images, load_image
from distill.errors import DataError

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


def load_pair(rainy_path: Path, clean_path: Path, channels: int) -> tuple[np.ndarray, np.ndarray]:
    """``(rainy, clean)`` arrays of one pair; `DataError` naming both files when their sizes differ."""
    target = load_image(clean_path, channels)
    inp = load_image(rainy_path, channels)
    if inp.shape != target.shape:
        raise DataError(
            f"pair sizes differ: {str(rainy_path)!r} is {inp.shape[1]}x{inp.shape[0]}, "
            f"{str(clean_path)!r} is {target.shape[1]}x{target.shape[0]} (WxH)"
        )
    return inp, target
