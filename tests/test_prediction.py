"""predict on a folder: whole images in, PNGs of the right size and mode out, tiled == untiled."""
import numpy as np
import pytest
import torch
from lightning.pytorch import Trainer
from PIL import Image
from torch import nn

from distill.errors import ConfigError, DataError
from distill.module import RestorationModule
from distill.prediction import ImageFolderDataModule, PNGWriter, save_png


class NearIdentity(nn.Module):
    """x + 0.05 * tanh(conv(conv(x))): receptive-field radius 2, keeps the size."""

    def __init__(self, in_channels: int) -> None:
        super().__init__()
        self.in_channels = in_channels
        torch.manual_seed(0)
        self.body = nn.Sequential(nn.Conv2d(in_channels, 4, 3, padding=1), nn.ReLU(),
                                  nn.Conv2d(4, in_channels, 3, padding=1))
        self.sizes = set()  # (H, W) of every input: tiles, or whole images

    def forward(self, x):
        self.sizes.add(tuple(x.shape[-2:]))
        return x + 0.05 * torch.tanh(self.body(x))


def predict(folder, out, channels, tile, overlap=8):
    module = RestorationModule(model=NearIdentity(channels))
    data = ImageFolderDataModule(str(folder), channels=channels, output_dir=str(out))
    writer = PNGWriter(tile_size=tile, tile_overlap=overlap)
    trainer = Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_checkpointing=False,
                      enable_model_summary=False, callbacks=[writer], default_root_dir=str(folder.parent))
    trainer.predict(module, datamodule=data, return_predictions=False)
    return module.model.sizes


@pytest.fixture
def folder(tmp_path):
    d = tmp_path / "in"
    d.mkdir()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (21, 34), dtype=np.uint8)).save(d / "gray.png")
    Image.fromarray(rng.integers(0, 256, (30, 17, 3), dtype=np.uint8)).save(d / "color.jpg", quality=95)
    return d


@pytest.mark.parametrize("channels, mode", [(3, "RGB"), (1, "L")])
def test_folder_restored_to_pngs(folder, tmp_path, channels, mode, capsys):
    out = tmp_path / f"out{channels}"
    assert predict(folder, out, channels, tile=None) == {(21, 34), (30, 17)}  # whole images
    assert sorted(p.name for p in out.iterdir()) == ["color.png", "gray.png"]
    for name, size in (("gray", (34, 21)), ("color", (17, 30))):
        with Image.open(out / f"{name}.png") as im:
            assert im.mode == mode and im.size == size
    assert f"wrote 2 image(s) to {out}" in capsys.readouterr().out
    # no temporary files left behind
    assert not [p for p in out.iterdir() if p.name.startswith(".")]


def test_large_image_tiled_equals_untiled(tmp_path):
    d = tmp_path / "big"
    d.mkdir()
    yy, xx = np.mgrid[0:500, 0:600]
    big = ((np.sin(xx / 17.0) * np.cos(yy / 11.0) + 1) * 127.5).astype(np.uint8)
    Image.fromarray(big).save(d / "big.png")
    assert predict(d, tmp_path / "untiled", 1, tile=None) == {(500, 600)}
    assert predict(d, tmp_path / "tiled", 1, tile=128, overlap=8) == {(128, 128)}  # radius 2 <= 8 // 2
    a = np.asarray(Image.open(tmp_path / "untiled" / "big.png"), dtype=np.int16)
    b = np.asarray(Image.open(tmp_path / "tiled" / "big.png"), dtype=np.int16)
    assert a.shape == (500, 600)
    assert np.abs(a - b).max() <= 1  # equal up to 8-bit rounding of float noise


def test_batches_follow_the_contract(folder):
    data = ImageFolderDataModule(str(folder), channels=3, tile_size=None, sigma=25)
    batches = list(data.predict_dataloader())
    assert [b["name"] for b in batches] == [["color"], ["gray"]]
    first = batches[0]
    assert first["input"].shape == (1, 3, 30, 17) and first["input"].dtype == torch.float32
    assert torch.equal(first["input"], first["target"])
    assert first["sigma"].shape == (1,) and first["sigma"].item() == pytest.approx(25 / 255)
    assert data.channels == 3 and data.dataset_name == "in"


def test_errors(tmp_path, folder):
    with pytest.raises(ConfigError, match="tile_size=32 must be larger than tile_overlap=32"):
        ImageFolderDataModule(str(folder), tile_size=32, tile_overlap=32)
    with pytest.raises(ConfigError, match="tile_size=32 must be larger than tile_overlap=32"):
        PNGWriter(tile_size=32, tile_overlap=32)
    with pytest.raises(ConfigError, match="channels=2"):
        ImageFolderDataModule(str(folder), channels=2)
    with pytest.raises(DataError, match="does not exist"):
        ImageFolderDataModule(str(tmp_path / "missing")).predict_dataloader()
    (folder / "gray.jpg").write_bytes((folder / "color.jpg").read_bytes())
    with pytest.raises(DataError, match="share the name 'gray'"):
        ImageFolderDataModule(str(folder)).predict_dataloader()
    (folder / "gray.jpg").unlink()
    # batches only hold images of one size, whatever batch_size says
    Image.fromarray(np.zeros((21, 34), dtype=np.uint8)).save(folder / "gray2.png")
    batches = list(ImageFolderDataModule(str(folder), batch_size=4).predict_dataloader())
    assert [b["name"] for b in batches] == [["color"], ["gray", "gray2"]]


def test_save_png_rejects_bad_shapes(tmp_path):
    with pytest.raises(DataError, match="x.png"):
        save_png(torch.rand(2, 4, 4), tmp_path / "x.png")
