"""Property tests: whatever bytes, shapes or values reach the data layer, it either works or raises
`DataError` / `ConfigError` (never a bare exception from inside Pillow, numpy or torch)."""
from __future__ import annotations

import io
import tempfile
from pathlib import Path

import numpy as np
import torch
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from PIL import Image

from distill.data import DenoisingDataModule, DerainingDataModule, read_image
from distill.errors import ConfigError, DataError

FUZZ = settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])

MAGIC = [b"", b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff\xe0", b"II*\x00", b"MM\x00*", b"BM", b"GIF89a"]
EXTS = [".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp"]


def _valid_png() -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.arange(64, dtype=np.uint8).reshape(8, 8)).save(buf, format="PNG")
    return buf.getvalue()


VALID_PNG = _valid_png()


def _check_tensor(x: torch.Tensor, channels: int) -> None:
    assert x.dtype == torch.float32 and x.dim() == 3 and x.shape[0] == channels
    assert bool(torch.isfinite(x).all()) and float(x.min()) >= 0 and float(x.max()) <= 1


@pytest.mark.filterwarnings("ignore::UserWarning")  # Pillow warns on some corrupt headers
@FUZZ
@given(
    magic=st.sampled_from(MAGIC),
    body=st.binary(max_size=300),
    ext=st.sampled_from(EXTS),
    channels=st.sampled_from([1, 3]),
)
def test_random_bytes_read_or_data_error(magic, body, ext, channels):
    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / f"fuzz{ext}"
        p.write_bytes(magic + body)
        try:
            x = read_image(p, channels)
        except DataError as exc:
            assert "fuzz" in str(exc)
        else:
            _check_tensor(x, channels)


@FUZZ
@given(
    cut=st.integers(min_value=0, max_value=len(VALID_PNG)),
    flips=st.lists(st.tuples(st.integers(0, len(VALID_PNG) - 1), st.integers(0, 255)), max_size=4),
    channels=st.sampled_from([1, 3]),
)
def test_damaged_png_read_or_data_error(cut, flips, channels):
    data = bytearray(VALID_PNG)
    for pos, val in flips:
        data[pos] = val
    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "damaged.png"
        p.write_bytes(bytes(data[:cut]))
        try:
            x = read_image(p, channels)
        except DataError as exc:
            assert "damaged.png" in str(exc)
        else:
            _check_tensor(x, channels)


_MODES = {
    "L": (np.uint8, None),
    "RGB": (np.uint8, 3),
    "RGBA": (np.uint8, 4),
    "LA": (np.uint8, 2),
    "1": (np.bool_, None),
    "P": (np.uint8, None),
    "I;16": (np.uint16, None),
    "F": (np.float32, None),
}


@st.composite
def image_files(draw):
    mode = draw(st.sampled_from(sorted(_MODES)))
    h = draw(st.integers(1, 24))
    w = draw(st.integers(1, 24))
    dtype, c = _MODES[mode]
    shape = (h, w) if c is None else (h, w, c)
    seed = draw(st.integers(0, 2**16))
    rng = np.random.default_rng(seed)
    if dtype == np.float32:
        arr = rng.uniform(-0.5, 1.5, size=shape).astype(np.float32) if draw(st.booleans()) \
            else rng.uniform(0, 1, size=shape).astype(np.float32)
        if draw(st.booleans()):
            arr.flat[0] = np.nan
    elif dtype == np.bool_:
        arr = rng.integers(0, 2, size=shape).astype(bool)
    else:
        arr = rng.integers(0, np.iinfo(dtype).max, size=shape, dtype=dtype, endpoint=True)
    ext = ".tif" if mode == "F" else draw(st.sampled_from([".png", ".tif"]))
    if mode in ("LA",) and ext == ".tif":
        ext = ".png"
    return mode, arr, ext


@pytest.mark.filterwarnings("ignore:.*smaller than.*:UserWarning")
@FUZZ
@given(
    files=st.lists(image_files(), min_size=1, max_size=3),
    channels=st.sampled_from([1, 3]),
    patch_size=st.integers(1, 20),
    small=st.sampled_from(["error", "skip"]),
    eval_size=st.one_of(st.none(), st.integers(1, 30)),
    derain=st.booleans(),
)
def test_random_images_through_datamodule(files, channels, patch_size, small, eval_size, derain):
    with tempfile.TemporaryDirectory() as d:
        folder = Path(d) / "set"
        folder.mkdir()
        for i, (mode, arr, ext) in enumerate(files):
            if mode == "P":
                Image.fromarray(arr, mode="L").convert("P").save(folder / f"f{i}{ext}")
            else:
                Image.fromarray(arr).save(folder / f"f{i}{ext}")
        kw = dict(train=[str(folder)], val=[str(folder)], channels=channels, patch_size=patch_size,
                  patches_per_epoch=2, batch_size=2, eval_size=eval_size, small_images=small)
        try:
            dm = DerainingDataModule(synthetic="light", **kw) if derain else DenoisingDataModule(**kw)
            dm.setup()
            batch = next(iter(dm.train_dataloader()))
            vb = next(iter(dm.val_dataloader()))
        except (DataError, ConfigError) as exc:
            event(type(exc).__name__)
            return
        event("loaded")
        assert batch["input"].shape == (2, channels, patch_size, patch_size)
        assert bool(torch.isfinite(batch["input"]).all())
        _check_tensor(batch["target"][0], channels)
        _check_tensor(vb["target"][0], channels)


@FUZZ
@given(
    sigma=st.one_of(st.none(), st.floats(allow_nan=True, allow_infinity=True), st.integers(-5, 300),
                    st.text(max_size=3)),
    sigma_range=st.one_of(st.none(), st.tuples(st.floats(-10, 300), st.floats(-10, 300)), st.just([1.0])),
    channels=st.one_of(st.integers(-1, 4), st.just(True), st.just("3")),
    patch_size=st.one_of(st.integers(-3, 64), st.floats(0, 10)),
    batch_size=st.integers(-2, 8),
    seed=st.one_of(st.integers(-3, 2**70), st.none()),
    small=st.sampled_from(["error", "skip", "", "ERROR"]),
)
def test_random_config_ok_or_config_error(sigma, sigma_range, channels, patch_size, batch_size, seed, small):
    try:
        dm = DenoisingDataModule(sigma=sigma, sigma_range=sigma_range, channels=channels, patch_size=patch_size,
                                 batch_size=batch_size, seed=seed, small_images=small)
    except ConfigError:
        return
    assert dm.channels in (1, 3) and dm.patch_size >= 1 and dm.batch_size >= 1
    assert (dm.sigma is None) != (dm.sigma_range is None)
