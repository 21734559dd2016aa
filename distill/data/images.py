"""Image reading with Pillow: every failure is a `DataError` that names the file or folder.

Images are decoded once into numpy arrays laid out ``[H, W, C]`` (``uint8`` for 8-bit files,
``float32`` in [0, 1] for 16-bit and float files) and converted to float32 ``[C, H, W]`` tensors in
[0, 1] only when a crop is taken, so a whole dataset stays in memory cheaply.

Channel conversion:

* ``channels=1``: Pillow's ``"L"`` conversion, i.e. BT.601 luma ``L = 0.299 R + 0.587 G + 0.114 B``.
* ``channels=3``: RGB; a gray file is replicated over the three channels.
* Alpha is dropped, palettes are expanded, CMYK/YCbCr are converted by Pillow.
* 16-bit integer images are scaled by 1/65535; float (``"F"``) images must already lie in [0, 1].
* Multi-frame files (GIF, multipage TIFF) use their first frame.
"""
from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from distill.errors import ConfigError, DataError

#: File name endings read as images (case-insensitive).
IMAGE_EXTENSIONS: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")

_SIXTEEN_BIT_MODES = {"I;16", "I;16L", "I;16B", "I;16N", "I"}


def check_channels(channels: object) -> int:
    """Return `channels` if it is 1 or 3, else raise `ConfigError`."""
    if isinstance(channels, bool) or channels not in (1, 3):
        raise ConfigError(f"channels={channels!r} is not allowed: use 1 (gray) or 3 (RGB)")
    return int(channels)  # type: ignore[arg-type]


def list_images(folder: str | os.PathLike) -> list[Path]:
    """Image files directly inside `folder` (not recursive), sorted by name.

    Hidden files (starting with ``.``) are ignored. Raises `DataError` when the folder is missing,
    is not a folder, or holds no file with one of `IMAGE_EXTENSIONS`.
    """
    path = Path(folder)
    if not path.exists():
        raise DataError(f"image folder {str(path)!r} does not exist")
    if not path.is_dir():
        raise DataError(f"image folder {str(path)!r} is not a folder")
    try:
        entries = list(path.iterdir())
    except OSError as exc:
        raise DataError(f"image folder {str(path)!r} cannot be listed: {exc}") from exc
    files = sorted(
        (p for p in entries
         if p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith(".") and p.is_file()),
        key=lambda p: p.name,
    )
    if not files:
        raise DataError(
            f"image folder {str(path)!r} holds no images: allowed extensions are "
            f"{', '.join(IMAGE_EXTENSIONS)}"
        )
    return files


def _decode(path: Path, channels: int) -> np.ndarray:
    """Decode `path` into an ``[H, W, channels]`` array (uint8, or float32 in [0, 1])."""
    try:
        with Image.open(path) as im:
            im.seek(0)
            im.load()
            mode = im.mode
            if mode in _SIXTEEN_BIT_MODES or mode == "F":
                arr = np.asarray(im, dtype=np.float32)
                if mode != "F":
                    arr = arr / 65535.0
                if arr.ndim != 2:
                    raise DataError(f"image {str(path)!r}: unsupported layout {arr.shape} for mode {mode}")
                arr = arr[:, :, None]
            else:
                if mode in ("1", "L"):
                    gray = im.convert("L")
                    arr = np.asarray(gray, dtype=np.uint8)[:, :, None]
                    if channels == 3:
                        arr = np.repeat(arr, 3, axis=2)
                else:
                    rgb = im.convert("RGB")
                    conv = rgb.convert("L") if channels == 1 else rgb
                    arr = np.asarray(conv, dtype=np.uint8)
                    if arr.ndim == 2:
                        arr = arr[:, :, None]
    except DataError:
        raise
    except Exception as exc:  # Pillow raises many types on bad bytes (OSError, SyntaxError, ValueError ...)
        raise DataError(f"image {str(path)!r} cannot be read: {type(exc).__name__}: {exc}") from exc

    if arr.dtype == np.float32:
        if not np.isfinite(arr).all():
            raise DataError(f"image {str(path)!r} holds NaN or Inf values")
        lo, hi = float(arr.min()), float(arr.max())
        if lo < 0.0 or hi > 1.0:
            raise DataError(
                f"image {str(path)!r} (mode {mode}): pixel values scale to [{lo:g}, {hi:g}], outside [0, 1]; "
                f"float images must hold values in [0, 1], integer images 0..65535"
            )
        if channels == 3 and arr.shape[2] == 1:
            arr = np.repeat(arr, 3, axis=2)
    if arr.shape[0] < 1 or arr.shape[1] < 1:
        raise DataError(f"image {str(path)!r} is empty ({arr.shape[1]}x{arr.shape[0]})")
    arr = np.ascontiguousarray(arr)
    arr.setflags(write=False)
    return arr


@lru_cache(maxsize=32)
def _decode_cached(path: str, channels: int, mtime_ns: int, size: int) -> np.ndarray:
    return _decode(Path(path), channels)


def load_image(path: str | os.PathLike, channels: int = 3) -> np.ndarray:
    """Decode an image file into a read-only ``[H, W, channels]`` array (uint8 or float32 in [0, 1]).

    Recently decoded files are cached per process (keyed by path, channels, mtime and size).
    Raises `DataError` naming the file when it is missing or cannot be decoded.
    """
    channels = check_channels(channels)
    p = Path(path)
    try:
        st = p.stat()
    except OSError as exc:
        raise DataError(f"image {str(p)!r} cannot be opened: {exc}") from exc
    if not p.is_file():
        raise DataError(f"image {str(p)!r} is not a file")
    return _decode_cached(str(p.resolve()), channels, st.st_mtime_ns, st.st_size)


def to_tensor(arr: np.ndarray) -> torch.Tensor:
    """``[H, W, C]`` uint8/float array (or a crop of one) -> float32 ``[C, H, W]`` in [0, 1].

    One float32 result is allocated and filled in place (a large image costs its float size once,
    not three times).
    """
    src = torch.from_numpy(np.array(arr, copy=True))
    out = torch.empty((src.shape[2], src.shape[0], src.shape[1]), dtype=torch.float32)
    out.copy_(src.permute(2, 0, 1))
    if src.dtype == torch.uint8:
        out.div_(255.0)
    return out


def read_image(path: str | os.PathLike, channels: int = 3, cache: bool = True) -> torch.Tensor:
    """Read an image as float32 ``[channels, H, W]`` in [0, 1]. Errors are `DataError` naming the file.

    ``cache=False`` decodes without keeping the decoded array (for large images read once, as in predict).
    """
    if cache:
        return to_tensor(load_image(path, channels))
    channels = check_channels(channels)
    p = Path(path)
    if not p.is_file():
        raise DataError(f"image {str(p)!r} cannot be opened: not an existing file")
    return to_tensor(_decode(p, channels))
