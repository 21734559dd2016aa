"""`spikedistill predict` on a folder of images: full-image batches in, restored PNGs out.

* `ImageFolderDataModule` reads every image directly inside `folder` (PNG, JPEG, TIFF, BMP; gray or
  RGB, converted to `channels`, by default the network's: an RGB network keeps colour, and a gray one warns once,
  naming the RGB files it converts) and yields whole images as contract batches. Its `tile_size` and
  `tile_overlap` are the command line's place for the tiling: the CLI hands them to the PNGWriter it adds.
* `PNGWriter` is a Lightning `BasePredictionWriter` that writes each restored image as
  ``<output_dir>/<name>.png`` (8-bit, mode L for 1 channel, RGB for 3), atomically. With a `tile_size`,
  `RestorationBase.predict_step` restores in overlapping tiles (`distill.tiling.restore_tiled`), so memory
  is bounded by the tile size.
"""
from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any, Sequence

import lightning as L
import torch
from lightning.pytorch.callbacks import BasePredictionWriter
from lightning.pytorch.utilities import rank_zero_warn
from PIL import Image, ImageMode
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from distill.errors import ConfigError, DataError
from distill.data.images import list_images, read_image
from distill.io import atomic_path
from distill.tiling import check_tiling
from spikedistill_core.checks import check_int, check_number

__all__ = ["ImageFolderDataset", "ImageFolderDataModule", "PNGWriter", "save_png"]

#: RGB files named in the gray-conversion warning before it says how many more there are
LISTED = 5


def network_channels(trainer: L.Trainer | None) -> int:
    """The `in_channels` of the network `trainer` runs (a RestorationBase keeps it in `network`), else 3 (RGB)."""
    module = trainer.lightning_module if trainer is not None else None
    channels = getattr(getattr(module, "network", module), "in_channels", None)
    return channels if channels in (1, 3) else 3


def is_colour(path: Path) -> bool:
    """Whether the image file holds colour (from its header: RGB-like modes, palettes with a non-gray entry)."""
    try:
        with Image.open(path) as im:
            if im.mode == "P":
                palette = im.getpalette() or []
                return any(len(set(palette[i : i + 3])) > 1 for i in range(0, len(palette), 3))
            return ImageMode.getmode(im.mode).basemode == "RGB"
    except Exception as exc:  # noqa: BLE001 - Pillow raises many types on bad bytes
        raise DataError(f"image {str(path)!r} cannot be read: {type(exc).__name__}: {exc}") from exc


def warn_colour_to_gray(files: Sequence[Path], folder: str) -> None:
    """One warning naming the colour files among `files` that a gray network gets as luma, if there are any."""
    colour = [path.name for path in files if is_colour(path)]
    if colour:
        names = ", ".join(colour[:LISTED]) + (f" and {len(colour) - LISTED} more" if len(colour) > LISTED else "")
        rank_zero_warn(f"predict reads gray images (channels 1, as a gray network takes them): {len(colour)} RGB "
                       f"image(s) in {folder!r} are converted to gray (luma: 0.299 R + 0.587 G + 0.114 B) and "
                       f"written as gray PNGs: {names}; to keep colour, predict with an RGB network (in_channels: 3)")


class ImageFolderDataset(Dataset):
    """Every image directly inside `folder`, whole, as ``{"input", "target", "sigma", "name"}`` items.

    `target` is the input itself (there is no clean image); `sigma` is on the [0, 1] scale.
    """

    def __init__(self, folder: str | os.PathLike, channels: int = 3, sigma: float = 0.0) -> None:
        self.folder = Path(folder)
        self.files = list_images(folder)
        self.channels = channels
        self.sigma = float(sigma) / 255.0
        names: dict[str, Path] = {}
        for path in self.files:
            if path.stem in names:
                raise DataError(
                    f"images {str(names[path.stem])!r} and {str(path)!r} in {str(self.folder)!r} share the name "
                    f"{path.stem!r}: both would be written as {path.stem}.png; rename one"
                )
            names[path.stem] = path

    def __len__(self) -> int:
        return len(self.files)

    def size_batches(self, batch_size: int) -> list[list[int]]:
        """Indices in batches of at most `batch_size` images of one size (read from the file headers)."""
        by_size: dict[tuple[int, int], list[int]] = {}
        for index, path in enumerate(self.files):
            try:
                with Image.open(path) as im:
                    size = im.size
            except Exception as exc:  # noqa: BLE001 - Pillow raises many types on bad bytes
                raise DataError(f"image {str(path)!r} cannot be read: {type(exc).__name__}: {exc}") from exc
            by_size.setdefault(size, []).append(index)
        batches = [group[i : i + batch_size] for group in by_size.values() for i in range(0, len(group), batch_size)]
        return sorted(batches, key=lambda b: b[0])

    def __getitem__(self, index: int) -> dict[str, Any]:
        path = self.files[index]
        image = read_image(path, self.channels, cache=False)  # read once: keep no decoded copy
        return {"input": image, "target": image, "sigma": torch.tensor(self.sigma, dtype=torch.float32),
                "name": path.stem}


class BatchedImages(Dataset):
    """Item `i` is the collated batch of the images `batches[i]` (of one size): used with batch_size=None."""

    def __init__(self, dataset: ImageFolderDataset, batches: list[list[int]]) -> None:
        self.dataset = dataset
        self.batches = batches

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return collate_whole_images([self.dataset[i] for i in self.batches[index]])


def collate_whole_images(items: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Stack items into a batch; images of different sizes raise DataError naming them."""
    sizes = {tuple(item["input"].shape) for item in items}
    if len(sizes) > 1:
        listed = ", ".join(f"{item['name']} {list(item['input'].shape[1:])}" for item in items)
        raise DataError(f"images of one batch must have the same size, got {listed}; use batch_size: 1")
    # one image (the default batch_size 1) becomes a batch without a copy
    image = items[0]["input"].unsqueeze(0) if len(items) == 1 else torch.stack([item["input"] for item in items])
    return {"input": image, "target": image, "sigma": torch.stack([item["sigma"] for item in items]),
            "name": [item["name"] for item in items]}


class ImageFolderDataModule(L.LightningDataModule):
    """Whole images from `folder` for `predict`.

    Args:
        folder: folder of images (not recursive).
        channels: 1 (gray) or 3 (RGB); files are converted (gray files replicated, RGB -> luma, with a warning
            naming the RGB files). null: the network's `in_channels` when a Trainer runs it, else 3.
        output_dir: where `PNGWriter` writes ``<name>.png`` (relative paths are relative to the
            working directory).
        tile_size: restore in tiles of this many pixels (bounded memory); null = whole image at once.
            Passed by the CLI to the PNGWriter it adds (see `PNGWriter`).
        tile_overlap: overlap of neighbouring tiles in pixels; tiled output equals untiled output
            when ``tile_overlap // 2`` is at least the model's receptive-field radius.
        sigma: noise level on the 0-255 scale, passed to models that take one (FFDNet).
        batch_size: images per batch; images are batched with others of the same size only.
    """

    task = "predict"

    def __init__(
        self,
        folder: str,
        channels: int | None = None,
        output_dir: str = "predictions",
        tile_size: int | None = 512,
        tile_overlap: int = 32,
        sigma: float = 0.0,
        batch_size: int = 1,
        num_workers: int = 0,
    ) -> None:
        super().__init__()
        if channels not in (None, 1, 3) or isinstance(channels, bool):
            raise ConfigError(f"channels={channels!r} is not allowed: use 1 (gray), 3 (RGB) or null (the network's)")
        check_tiling(tile_size, tile_overlap)
        check_int("batch_size", batch_size)
        check_number("sigma", sigma, 0, 255, hint=" (the noise level on the 0-255 scale)")
        self.folder = folder
        self.channels = channels
        self.output_dir = output_dir
        self.tile_size = tile_size
        self.tile_overlap = tile_overlap
        self.sigma = float(sigma)
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.dataset: ImageFolderDataset | None = None

    @property
    def dataset_name(self) -> str:
        return Path(self.folder).name

    def setup(self, stage: str | None = None) -> None:
        if self.dataset is None:
            if self.channels is None:
                self.channels = network_channels(self.trainer)
            self.dataset = ImageFolderDataset(self.folder, self.channels, self.sigma)
            if self.channels == 1:
                warn_colour_to_gray(self.dataset.files, self.folder)

    def predict_dataloader(self) -> DataLoader:
        self.setup("predict")
        assert self.dataset is not None
        if self.batch_size > 1:
            batches = self.dataset.size_batches(self.batch_size)
        else:
            batches = [[i] for i in range(len(self.dataset))]
        # each item is already a batch of same-size images, so the loader does no batching of its own
        return DataLoader(BatchedImages(self.dataset, batches), batch_size=None, shuffle=False,
                          num_workers=self.num_workers)


def save_png(image: Tensor, path: str | os.PathLike) -> Path:
    """Write a ``[C, H, W]`` image in [0, 1] (C = 1 or 3) as an 8-bit PNG, atomically."""
    if image.dim() != 3 or image.shape[0] not in (1, 3):
        raise DataError(f"cannot write {path}: expected an image [1 or 3, H, W], got shape {list(image.shape)}")
    channels, height, width = image.shape
    # converted to 8 bits a band of rows at a time, so a large image needs no float copy of itself
    array = torch.empty((height, width, channels), dtype=torch.uint8)
    rows = max(1, (1 << 22) // (width * channels))
    for top in range(0, height, rows):
        band = image[:, top : top + rows].detach().to("cpu", torch.float32, copy=True)
        array[top : top + rows] = band.clamp_(0, 1).mul_(255.0).round_().permute(1, 2, 0).to(torch.uint8)
    pil = Image.fromarray(array[:, :, 0].numpy() if channels == 1 else array.numpy())
    target = Path(path)
    with atomic_path(target) as tmp:
        pil.save(tmp, format="PNG")
    return target


class PNGWriter(BasePredictionWriter):
    """Write every restored image of a predict batch as ``<output_dir>/<name>.png`` (atomic writes).

    `output_dir`: explicit folder; else the datamodule's `output_dir`; else
    ``<trainer.default_root_dir>/predictions``. Batches must carry `name` (list of str).
    `tile_size`, `tile_overlap`: the module restores in overlapping tiles of this size (bounded memory; see
    `distill.tiling`); None restores whole images.
    """

    def __init__(self, output_dir: str | None = None, tile_size: int | None = None, tile_overlap: int = 0) -> None:
        super().__init__(write_interval="batch")
        check_tiling(tile_size, tile_overlap)
        self.output_dir = output_dir
        self.tile_size = tile_size
        self.tile_overlap = tile_overlap
        self.written: list[Path] = []

    def resolve_dir(self, trainer: L.Trainer) -> Path:
        if self.output_dir:
            return Path(self.output_dir)
        datamodule_dir = getattr(getattr(trainer, "datamodule", None), "output_dir", None)
        if datamodule_dir:
            return Path(datamodule_dir)
        return Path(trainer.default_root_dir) / "predictions"

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        # the loader yields ready-made batches (batch_size=None), so Lightning cannot track batch indices;
        # this writer names files from batch["name"] and does not need them
        warnings.filterwarnings("ignore", message="Couldn't infer the batch indices")

    def on_predict_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.written = []
        pl_module.predict_tiles = None if self.tile_size is None else (self.tile_size, self.tile_overlap)

    def write_on_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, prediction: Any,
                           batch_indices: Sequence[int] | None, batch: Any, batch_idx: int,
                           dataloader_idx: int = 0) -> None:
        names = batch.get("name") if isinstance(batch, dict) else None
        if not isinstance(prediction, Tensor) or prediction.dim() != 4:
            raise DataError(f"PNGWriter expects predict_step to return an image batch [B, C, H, W], got "
                            f"{type(prediction).__name__} {list(getattr(prediction, 'shape', []))}")
        if names is None:
            names = [f"batch{batch_idx:05d}_{i}" for i in range(prediction.shape[0])]
        folder = self.resolve_dir(trainer)
        for name, image in zip(names, prediction):
            self.written.append(save_png(image, folder / f"{name}.png"))

    def on_predict_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.is_global_zero:
            print(f"predict: wrote {len(self.written)} image(s) to {self.resolve_dir(trainer)}")
