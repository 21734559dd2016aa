"""Image reading, the embedded sample set and the denoising DataModule."""
from __future__ import annotations

import socket
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from lightning.fabric.utilities.data import _set_sampler_epoch
from PIL import Image

from distill.data import (
    IMAGE_EXTENSIONS,
    SAMPLES_TRAIN,
    SAMPLES_VAL,
    DenoisingDataModule,
    list_images,
    read_image,
    samples_dir,
)
from distill.data.images import to_tensor
from distill.errors import ConfigError, DataError


def _write(path: Path, arr: np.ndarray, mode: str | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr, mode=mode).save(path) if mode else Image.fromarray(arr).save(path)
    return path


def _folder(tmp_path: Path, name: str = "imgs", n: int = 3, size: tuple[int, int] = (48, 40),
            rgb: bool = True, seed: int = 0) -> str:
    """`n` smooth-ish random images of `size` (H, W) in tmp_path/name."""
    rng = np.random.default_rng(seed)
    d = tmp_path / name
    for i in range(n):
        shape = size + ((3,) if rgb else ())
        arr = rng.integers(30, 220, size=shape, dtype=np.uint8)
        _write(d / f"img{i}.png", arr)
    return str(d)


def _dm(tmp_path: Path, **kw) -> DenoisingDataModule:
    folder = kw.pop("folder", None) or _folder(tmp_path)
    args = dict(train=[folder], val=[folder], patch_size=16, patches_per_epoch=8, batch_size=4)
    args.update(kw)
    return DenoisingDataModule(**args)


# ------------------------------------------------------------------------------------------ reading


@pytest.mark.parametrize("ext", [".png", ".jpg", ".tif"])
def test_read_formats_shapes_and_range(tmp_path, ext):
    rng = np.random.default_rng(1)
    rgb = rng.integers(0, 256, size=(20, 30, 3), dtype=np.uint8)
    p = _write(tmp_path / f"a{ext}", rgb)
    x3 = read_image(p, 3)
    x1 = read_image(p, 1)
    assert x3.shape == (3, 20, 30) and x1.shape == (1, 20, 30)
    assert x3.dtype == torch.float32 and x1.dtype == torch.float32
    assert 0.0 <= float(x3.min()) and float(x3.max()) <= 1.0
    # gray is Pillow's "L" (BT.601 luma) of the decoded file
    expected = np.asarray(Image.open(p).convert("L"), dtype=np.float32) / 255.0
    np.testing.assert_allclose(x1[0].numpy(), expected, atol=1e-7)
    if ext != ".jpg":  # lossless formats decode exactly
        np.testing.assert_allclose(x3.permute(1, 2, 0).numpy(), rgb / 255.0, atol=1e-7)


def test_gray_file_replicated_to_rgb_and_16bit_scaled(tmp_path):
    g = np.arange(0, 240, dtype=np.uint8).reshape(12, 20)
    p = _write(tmp_path / "g.png", g)
    x = read_image(p, 3)
    assert torch.equal(x[0], x[1]) and torch.equal(x[1], x[2])
    assert torch.allclose(x[0], torch.from_numpy(g / 255.0).float())
    g16 = (np.arange(12 * 20, dtype=np.uint16).reshape(12, 20) * 270)
    p16 = tmp_path / "g16.png"
    Image.fromarray(g16).save(p16)
    y = read_image(p16, 1)
    assert torch.allclose(y[0].double(), torch.from_numpy(g16 / 65535.0), atol=1e-6)


def test_corrupt_image_names_file(tmp_path):
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 20)
    with pytest.raises(DataError, match="broken.png"):
        read_image(bad)
    # and through the DataModule
    folder = tmp_path / "set"
    folder.mkdir()
    (folder / "zz.png").write_bytes(b"not an image at all")
    _write(folder / "ok.png", np.zeros((20, 20), np.uint8))
    dm = DenoisingDataModule(train=[str(folder)], val=[str(folder)], patch_size=8)
    with pytest.raises(DataError, match="zz.png"):
        dm.setup("fit")


def test_empty_and_missing_folder(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("no images here")
    with pytest.raises(DataError) as info:
        list_images(empty)
    assert str(empty) in str(info.value) and ".png" in str(info.value) and ".tif" in str(info.value)
    dm = DenoisingDataModule(train=[str(empty)], patch_size=8)
    with pytest.raises(DataError, match="empty"):
        dm.setup("fit")
    missing = tmp_path / "nowhere"
    with pytest.raises(DataError, match="nowhere"):
        DenoisingDataModule(train=[str(missing)])
    with pytest.raises(DataError, match="nowhere"):
        list_images(missing)
    assert ".jpeg" in IMAGE_EXTENSIONS


# ------------------------------------------------------------------------------------------ embedded


def test_embedded_set_loads_without_network(monkeypatch):
    def no_network(*args, **kwargs):
        raise AssertionError("network access attempted")

    monkeypatch.setattr(socket, "socket", no_network)
    monkeypatch.setattr(socket, "create_connection", no_network)
    monkeypatch.setattr(socket, "getaddrinfo", no_network)
    dm = DenoisingDataModule(channels=3, eval_size=32, patch_size=24, patches_per_epoch=4, batch_size=4)
    dm.setup()
    train = dm.records("train")
    val = dm.records("val")
    assert {r.name for r in train} == set(SAMPLES_TRAIN)
    assert [r.name for r in val] == list(SAMPLES_VAL)
    assert not {r.name for r in train} & {r.name for r in val}
    assert all(Path(r.path).parent == samples_dir() for r in train + val)
    assert dm.records("test") == val and dm.dataset_name == "skimage-samples"
    # the held-out split mixes gray and colour content
    colour = [not (np.array_equal(r.target[..., 0], r.target[..., 1])) for r in val]
    assert any(colour) and not all(colour)
    batch = next(iter(dm.train_dataloader()))
    assert batch["input"].shape == (4, 3, 24, 24)
    vb = next(iter(dm.val_dataloader()))
    assert vb["input"].shape == (3, 3, 32, 32) and vb["name"] == list(SAMPLES_VAL)


# ------------------------------------------------------------------------------------------ batches


def test_batch_format(tmp_path):
    dm = _dm(tmp_path, channels=1, sigma=25.0)
    assert dm.channels == 1 and dm.task == "denoise" and dm.sigma == 25.0
    assert dm.dataset_name == "imgs"
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert set(batch) == {"input", "target", "sigma", "name"}
    assert batch["input"].shape == batch["target"].shape == (4, 1, 16, 16)
    assert batch["input"].dtype == batch["target"].dtype == batch["sigma"].dtype == torch.float32
    assert batch["sigma"].shape == (4,)
    assert torch.allclose(batch["sigma"], torch.full((4,), 25 / 255))
    assert 0 <= float(batch["target"].min()) and float(batch["target"].max()) <= 1
    assert isinstance(batch["name"], list) and all(n.startswith("imgs/img") for n in batch["name"])
    # the input is not clipped
    big = _dm(tmp_path, folder=_folder(tmp_path, "b"), sigma=200.0)
    b = next(iter(big.train_dataloader()))
    assert float(b["input"].min()) < 0 and float(b["input"].max()) > 1
    # eval: whole images, batched when they share a size
    vb = next(iter(dm.val_dataloader()))
    assert vb["input"].shape == (3, 1, 48, 40)
    assert torch.allclose(vb["sigma"], torch.full((3,), 25 / 255))


def test_eval_size_centre_crop_and_mixed_sizes(tmp_path):
    d = tmp_path / "mixed"
    base = (np.arange(30 * 50).reshape(30, 50) % 251).astype(np.uint8)
    _write(d / "a.png", base)
    _write(d / "b.png", np.zeros((20, 24), np.uint8))
    dm = DenoisingDataModule(train=[str(d)], val=[str(d)], patch_size=8, eval_size=16, batch_size=4)
    items = list(dm.val_dataloader())
    assert [tuple(b["target"].shape) for b in items] == [(2, 1, 16, 16)]
    expected = torch.from_numpy(base[7:23, 17:33] / 255.0).float()
    assert torch.allclose(items[0]["target"][0, 0], expected)
    dm2 = DenoisingDataModule(train=[str(d)], val=[str(d)], patch_size=8, batch_size=4)
    shapes = [tuple(b["target"].shape) for b in dm2.val_dataloader()]
    assert shapes == [(1, 1, 30, 50), (1, 1, 20, 24)]


# ------------------------------------------------------------------------------------------ seeding


def _val_inputs(dm):
    return torch.cat([b["input"].flatten() for b in dm.val_dataloader()])


def test_val_noise_fixed_per_seed(tmp_path):
    folder = _folder(tmp_path)
    a = _val_inputs(_dm(tmp_path, folder=folder, seed=3))
    b = _val_inputs(_dm(tmp_path, folder=folder, seed=3))
    c = _val_inputs(_dm(tmp_path, folder=folder, seed=4))
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)
    # independent of order / batching: one image at a time gives the same inputs
    ds = _dm(tmp_path, folder=folder, seed=3).eval_dataset("val")
    single = torch.cat([ds[i]["input"].flatten() for i in reversed(range(len(ds)))])
    n = ds[0]["input"].numel()
    assert torch.equal(single, torch.cat([a[2 * n:], a[n:2 * n], a[:n]]))


def test_training_crops_deterministic_per_seed_epoch_index(tmp_path):
    folder = _folder(tmp_path)
    d1 = _dm(tmp_path, folder=folder, seed=5).train_dataset()
    d2 = _dm(tmp_path, folder=folder, seed=5).train_dataset()
    d3 = _dm(tmp_path, folder=folder, seed=6).train_dataset()
    _ = d2[(2, 7)]  # access order does not matter
    for key in [(0, 0), (0, 3), (2, 7)]:
        assert torch.equal(d1[key]["input"], d2[key]["input"])
        assert torch.equal(d1[key]["target"], d2[key]["target"])
    assert not torch.equal(d1[(0, 0)]["input"], d1[(1, 0)]["input"])
    assert not torch.equal(d1[(0, 0)]["input"], d1[(0, 1)]["input"])
    assert not torch.equal(d1[(0, 0)]["input"], d3[(0, 0)]["input"])


def test_lightning_sampler_hook_sets_epoch(tmp_path):
    dm = _dm(tmp_path, seed=1, patches_per_epoch=4, batch_size=4)
    loader = dm.train_dataloader()
    _set_sampler_epoch(loader, 3)  # what Lightning's fit loop does at each epoch start
    batch = next(iter(loader))
    ds = dm.train_dataset()
    expected = torch.stack([ds[(3, i)]["input"] for i in range(4)])
    assert torch.equal(batch["input"], expected)
    dm.set_epoch(0)
    batch0 = next(iter(loader))
    assert torch.equal(batch0["input"], torch.stack([ds[(0, i)]["input"] for i in range(4)]))
    assert not torch.equal(batch0["input"], batch["input"])


# ------------------------------------------------------------------------------------------ noise


def test_noise_sigma_statistics(tmp_path):
    dm = _dm(tmp_path, sigma=25.0, patch_size=32, patches_per_epoch=16, batch_size=16)
    b = next(iter(dm.train_dataloader()))
    resid = b["input"] - b["target"]
    assert abs(float(resid.std()) - 25 / 255) < 0.02 * 25 / 255
    assert abs(float(resid.mean())) < 0.003


def test_blind_sigma_within_range(tmp_path):
    dm = _dm(tmp_path, sigma=None, sigma_range=(5.0, 50.0), patch_size=40, patches_per_epoch=16,
             batch_size=16)
    assert dm.sigma is None
    b = next(iter(dm.train_dataloader()))
    s = b["sigma"] * 255
    assert bool(((s >= 5) & (s <= 50)).all()) and float(s.max() - s.min()) > 5
    est = (b["input"] - b["target"]).flatten(1).std(dim=1) * 255
    assert torch.allclose(est, s, rtol=0.1)
    # eval: a per-image level from the image's seed, or eval_sigma
    vb = next(iter(dm.val_dataloader()))
    assert bool(((vb["sigma"] * 255 >= 5) & (vb["sigma"] * 255 <= 50)).all())
    fixed = _dm(tmp_path, sigma=None, sigma_range=(5.0, 50.0), eval_sigma=15.0)
    vb = next(iter(fixed.val_dataloader()))
    assert torch.allclose(vb["sigma"], torch.full((3,), 15 / 255))


# ------------------------------------------------------------------------------------------ errors


def test_small_images_error_and_skip(tmp_path):
    d = tmp_path / "small"
    _write(d / "big.png", np.full((40, 40), 100, np.uint8))
    _write(d / "tiny.png", np.full((10, 12), 100, np.uint8))
    dm = DenoisingDataModule(train=[str(d)], val=[str(d)], patch_size=16)
    with pytest.raises(DataError) as info:
        dm.setup("fit")
    msg = str(info.value)
    assert "tiny.png" in msg and "12x10" in msg and "16x16" in msg
    dm = DenoisingDataModule(train=[str(d)], val=[str(d)], patch_size=16, small_images="skip")
    with pytest.warns(UserWarning, match="tiny.png"):
        recs = dm.records("train")
    assert [r.name for r in recs] == ["small/big.png"]
    # eval keeps every image at full size
    assert len(dm.records("val")) == 2
    dm = DenoisingDataModule(train=[str(d)], patch_size=64, small_images="skip")
    with pytest.warns(UserWarning), pytest.raises(DataError, match="every training image"):
        dm.records("train")


def test_embedded_entry_trains_beside_own_folders(tmp_path):
    """The entry ``skimage-samples`` adds the embedded split to one's own folders, with the right split per role."""
    own = _folder(tmp_path, n=2, size=(40, 40), rgb=False)
    dm = DenoisingDataModule(train=[own, "skimage-samples"], val=["skimage-samples"], patch_size=16)
    names = [r.name for r in dm.records("train")]
    assert names == ["imgs/img0.png", "imgs/img1.png"] + [f"skimage-samples/{n}" for n in SAMPLES_TRAIN]
    assert [r.name for r in dm.records("val")] == [f"skimage-samples/{n}" for n in SAMPLES_VAL]
    camera = read_image(samples_dir() / "camera.png", 1)
    assert torch.equal(to_tensor(dm.records("val")[0].target), camera)
    assert dm.split_names["train"] == "imgs+skimage-samples"
    with pytest.raises(DataError, match="skimage-sample"):
        DenoisingDataModule(train=[own, "skimage-sample"])  # a typo is a missing folder, not the embedded split



@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"sigma": -5.0}, "-5.0"),
        ({"sigma": float("nan")}, "nan"),
        ({"sigma": 25.0, "sigma_range": (5, 50)}, "mutually exclusive"),
        ({"sigma": None}, "sigma_range"),
        ({"sigma": None, "sigma_range": (50, 5)}, "min must be <= max"),
        ({"sigma": None, "sigma_range": (-1, 5)}, "-1"),
        ({"channels": 2}, "channels=2"),
        ({"patch_size": 0}, "patch_size=0"),
        ({"batch_size": 0}, "batch_size=0"),
        ({"patches_per_epoch": -1}, "patches_per_epoch"),
        ({"eval_size": 0}, "eval_size"),
        ({"small_images": "crop"}, "small_images='crop'"),
        ({"seed": -1}, "seed"),
        ({"num_workers": -2}, "num_workers"),
    ],
)
def test_config_errors(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        DenoisingDataModule(**kwargs)


def test_duplicate_names_across_folders(tmp_path):
    a = _folder(tmp_path / "x", name="same", n=1)
    b = _folder(tmp_path / "y", name="same", n=1)
    dm = DenoisingDataModule(train=[a, b], val=[a], patch_size=8)
    assert dm.split_names["train"] == "same+same"
    with pytest.raises(DataError, match="same/img0.png"):
        dm.records("train")


# ------------------------------------------------------------------------------------------ Lightning


class _Recorder(L.LightningModule):
    """Records (epoch, batch input) and learns nothing useful."""

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))
        self.seen: list[tuple[int, torch.Tensor]] = []

    def training_step(self, batch, batch_idx):
        self.seen.append((self.current_epoch, batch["input"].clone()))
        return (self.w * batch["input"].mean()).sum()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.0)


@pytest.mark.parametrize("workers", [0, 1])
def test_trainer_epochs_see_seeded_crops(tmp_path, workers):
    dm = _dm(tmp_path, seed=9, patches_per_epoch=4, batch_size=2, num_workers=workers)
    model = _Recorder()
    trainer = L.Trainer(max_epochs=2, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
                        default_root_dir=tmp_path)
    trainer.fit(model, datamodule=dm)
    ds = _dm(tmp_path, seed=9, patches_per_epoch=4, batch_size=2, num_workers=0).train_dataset()
    assert [e for e, _ in model.seen] == [0, 0, 1, 1]
    for k, (epoch, inp) in enumerate(model.seen):
        i = 2 * (k % 2)
        assert torch.equal(inp, torch.stack([ds[(epoch, i)]["input"], ds[(epoch, i + 1)]["input"]]))
