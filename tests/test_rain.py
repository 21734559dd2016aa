"""Synthetic rain and the deraining DataModule."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from distill.data import DerainingDataModule, add_rain, find_pairs, rain_layer
from distill.errors import ConfigError, DataError


def _write(path: Path, arr: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)


def _clean(i: int, size=(36, 44)) -> np.ndarray:
    rng = np.random.default_rng(i)
    return rng.integers(0, 128, size=size + (3,), dtype=np.uint8)


OFFSET = 64  # "rain" in the fake paired sets: a constant brightening, so crops can be checked


def _rain100(tmp_path: Path, n: int = 3) -> Path:
    root = tmp_path / "Rain100L"
    for i in range(1, n + 1):
        c = _clean(i)
        _write(root / "norain" / f"norain-{i}.png", c)
        _write(root / "rain" / f"rain-{i}.png", c + OFFSET)
    return root


def _input_target(tmp_path: Path, n: int = 2) -> Path:
    root = tmp_path / "pairs"
    for i in range(n):
        c = _clean(10 + i)
        _write(root / "target" / f"{i:03d}.png", c)
        _write(root / "input" / f"{i:03d}.png", c + OFFSET)
    return root


# ------------------------------------------------------------------------------------------ generator


def test_rain_deterministic_per_seed_gray_and_rgb():
    rgb = torch.rand(3, 48, 40, generator=torch.Generator().manual_seed(0)) * 0.5
    a = add_rain(rgb, "light", 7)
    b = add_rain(rgb, "light", torch.Generator().manual_seed(7))
    c = add_rain(rgb, "light", 8)
    assert a.shape == rgb.shape and torch.equal(a, b) and not torch.equal(a, c)
    assert float(a.min()) >= 0 and float(a.max()) <= 1
    assert bool((a >= rgb - 1e-6).all()) and float((a - rgb).max()) > 0.2  # rain only brightens
    gray = rgb[:1]
    g = add_rain(gray, "heavy", 3)
    assert g.shape == (1, 48, 40) and torch.equal(g, add_rain(gray, "heavy", 3))
    # the same streaks land on every channel of an RGB image
    flat = torch.zeros(3, 48, 40)
    r = add_rain(flat, "heavy", 3)
    assert torch.equal(r[0], r[1]) and torch.equal(r[1], r[2])
    assert torch.equal(r[:1], add_rain(torch.zeros(1, 48, 40), "heavy", 3))
    batch = add_rain(torch.zeros(2, 1, 20, 20), "light", 1)
    assert batch.shape == (2, 1, 20, 20) and not torch.equal(batch[0], batch[1])
    default = add_rain(torch.zeros(2, 1, 20, 20), "light")  # no generator: seed 0, still a layer per image
    assert not torch.equal(default[0], default[1]) and torch.equal(default, add_rain(torch.zeros(2, 1, 20, 20), "light", 0))


def test_light_rain_weaker_than_heavy():
    light = torch.stack([rain_layer(64, 64, "light", torch.Generator().manual_seed(s)) for s in range(4)])
    heavy = torch.stack([rain_layer(64, 64, "heavy", torch.Generator().manual_seed(s)) for s in range(4)])
    assert 0 < float(light.mean()) < float(heavy.mean())
    assert float((light > 0.05).float().mean()) < float((heavy > 0.05).float().mean())


def test_rain_bad_preset_and_shape():
    with pytest.raises(ConfigError, match="drizzle"):
        add_rain(torch.zeros(1, 8, 8), "drizzle")
    with pytest.raises(ConfigError, match="shape"):
        add_rain(torch.zeros(8, 8), "light")
    with pytest.raises(ConfigError, match="synthetic='drizzle'"):
        DerainingDataModule(synthetic="drizzle")


# ------------------------------------------------------------------------------------------ paired


@pytest.mark.parametrize("layout", ["rain100", "input_target"])
def test_paired_layouts_load(tmp_path, layout):
    root = _rain100(tmp_path) if layout == "rain100" else _input_target(tmp_path)
    dm = DerainingDataModule(train=[str(root)], val=[str(root)], patch_size=16, patches_per_epoch=8,
                             batch_size=4)
    assert dm.task == "derain" and dm.channels == 3 and dm.sigma == 0.0
    assert dm.dataset_name == root.name
    dm.setup()
    b = next(iter(dm.train_dataloader()))
    assert b["input"].shape == b["target"].shape == (4, 3, 16, 16)
    assert torch.equal(b["sigma"], torch.zeros(4)) and b["sigma"].dtype == torch.float32
    # the input crop is the partner file's crop, under the same dihedral transform
    assert torch.allclose(b["input"] - b["target"], torch.full_like(b["target"], OFFSET / 255), atol=1e-6)
    vb = next(iter(dm.val_dataloader()))
    assert vb["input"].shape[-2:] == (36, 44)
    assert torch.allclose(vb["input"] - vb["target"], torch.full_like(vb["target"], OFFSET / 255), atol=1e-6)
    prefix = "rain-" if layout == "rain100" else ""
    assert vb["name"][0] == f"{root.name}/{prefix}{'1' if layout == 'rain100' else '000'}.png"


def test_unmatched_pairs_listed(tmp_path):
    root = _rain100(tmp_path)
    _write(root / "rain" / "rain-7.png", _clean(7))
    _write(root / "norain" / "norain-9.png", _clean(9))
    with pytest.raises(DataError) as info:
        find_pairs(root)
    msg = str(info.value)
    assert "rain-7.png" in msg and "norain-9.png" in msg
    dm = DerainingDataModule(train=[str(root)], val=[str(root)], patch_size=8)
    with pytest.raises(DataError, match="rain-7.png"):
        dm.setup("fit")


def test_pair_size_mismatch_and_no_layout(tmp_path):
    root = tmp_path / "bad"
    _write(root / "input" / "a.png", _clean(1, (20, 20)))
    _write(root / "target" / "a.png", _clean(1, (20, 22)))
    with pytest.raises(DataError, match="a.png"):
        DerainingDataModule(train=[str(root)], val=[str(root)], patch_size=8).setup("fit")
    flat = tmp_path / "flat"
    _write(flat / "x.png", _clean(2))
    with pytest.raises(DataError, match="synthetic"):
        DerainingDataModule(train=[str(flat)], val=[str(flat)], patch_size=8).setup("fit")


# ------------------------------------------------------------------------------------------ synthetic


def test_synthetic_on_embedded_deterministic():
    kw = dict(eval_size=32, patch_size=16, patches_per_epoch=4, batch_size=4, channels=1)
    a = DerainingDataModule(seed=2, **kw)
    b = DerainingDataModule(seed=2, **kw)
    c = DerainingDataModule(seed=3, **kw)
    assert a.dataset_name == "skimage-samples-rain-light" and a.channels == 1
    va, vb_, vc = (next(iter(m.val_dataloader())) for m in (a, b, c))
    assert torch.equal(va["input"], vb_["input"]) and not torch.equal(va["input"], vc["input"])
    assert bool((va["input"] >= va["target"] - 1e-6).all()) and float((va["input"] - va["target"]).max()) > 0.1
    ta, tb = a.train_dataset(), b.train_dataset()
    assert torch.equal(ta[(1, 2)]["input"], tb[(1, 2)]["input"])
    assert not torch.equal(ta[(1, 2)]["input"], ta[(2, 2)]["input"])


def test_synthetic_on_clean_folders(tmp_path):
    root = _rain100(tmp_path)  # synthetic on a paired folder reads its clean side
    flat = tmp_path / "clean"
    _write(flat / "c.png", _clean(4))
    dm = DerainingDataModule(train=[str(root)], val=[str(flat)], synthetic="heavy", patch_size=16,
                             patches_per_epoch=4, batch_size=4)
    assert dm.dataset_name == "clean-rain-heavy"
    assert all(r.name.startswith("norain/norain-") for r in dm.records("train"))
    b = next(iter(dm.train_dataloader()))
    assert float((b["input"] - b["target"]).min()) >= -1e-6
    vb = next(iter(dm.val_dataloader()))
    assert vb["name"] == ["clean/c.png"] and not torch.equal(vb["input"], vb["target"])


def test_embedded_entry_needs_synthetic_rain(tmp_path):
    """The embedded samples have no rainy partners: beside paired folders they need synthetic rain."""
    root = _rain100(tmp_path)
    with pytest.raises(ConfigError, match="'skimage-samples'.*synthetic"):
        DerainingDataModule(train=[str(root), "skimage-samples"], patch_size=16).records("train")
    dm = DerainingDataModule(train=[str(root), "skimage-samples"], synthetic="light", patch_size=16)
    names = [r.name for r in dm.records("train")]
    assert names[0].startswith("norain/") and "skimage-samples/astronaut.png" in names
