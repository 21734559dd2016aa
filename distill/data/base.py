"""Machinery shared by the denoising and deraining DataModules.

* `ImageRecord`: one decoded image (and, for paired deraining data, its degraded partner).
* `Degradation`: what turns a clean crop into the model input (noise, synthetic rain, or a paired file).
* `PatchDataset`: random training crops; item ``(epoch, index)`` draws everything (image, crop,
  dihedral transform, noise/rain) from a generator seeded by ``(seed, epoch, index)`` only.
* `EvalDataset`: whole (or centre-cropped) images; degradation seeded by ``(seed, image name)``.
* `EpochSampler`: yields ``(epoch, index)`` keys (each DDP rank its share). Lightning calls
  ``sampler.set_epoch(epoch)`` at the start of every training epoch (also after a resume), so crops depend
  only on seed and epoch, whatever the number of workers. Its position inside the epoch is part of the
  training loader's state: the loader is torchdata's `StatefulDataLoader`, whose `state_dict()` Lightning
  saves in checkpoints and restores, so a run resumed mid-epoch continues with the next batch (exact resume,
  see `spikedistill fit --ckpt_path last`); `align_loader_states` corrects checkpoints written from a signal.
* `RestorationDataModule`: the LightningDataModule both tasks subclass.
"""
from __future__ import annotations

import hashlib
import itertools
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler
from torchdata.stateful_dataloader import StatefulDataLoader

from distill.data.images import check_channels, list_images, load_image, to_tensor
from distill.data.samples import SAMPLES_NAME, sample_paths
from distill.errors import ConfigError, DataError
from spikedistill_core.checks import check_int

SMALL_IMAGE_POLICIES = ("error", "skip")


def derive_seed(*parts: object) -> int:
    """A stable 63-bit seed from `parts` (ints/strings): same parts, same seed, on every machine and run."""
    text = "\x1f".join(repr(p) for p in parts).encode("utf-8")
    return int.from_bytes(hashlib.blake2b(text, digest_size=8).digest(), "little") & (2**63 - 1)


def make_generator(seed: int) -> torch.Generator:
    g = torch.Generator()
    g.manual_seed(seed)
    return g


@dataclass(frozen=True)
class ImageRecord:
    """One image of a split. `name` is what batches report; `key` (the file name) seeds eval degradation."""

    name: str
    key: str
    target: np.ndarray
    path: str
    input: np.ndarray | None = None

    @property
    def height(self) -> int:
        return int(self.target.shape[0])

    @property
    def width(self) -> int:
        return int(self.target.shape[1])


class Degradation:
    """Turns a clean float32 ``[C, H, W]`` crop into the model input. Subclasses must be picklable."""

    def train(self, target: torch.Tensor, paired: torch.Tensor | None,
              generator: torch.Generator) -> tuple[torch.Tensor, float]:
        """Return ``(input, sigma on the [0, 1] scale)`` for a training crop."""
        raise NotImplementedError

    def eval(self, target: torch.Tensor, paired: torch.Tensor | None,
             generator: torch.Generator) -> tuple[torch.Tensor, float]:
        """Return ``(input, sigma)`` for an evaluation image; `generator` is seeded per image."""
        return self.train(target, paired, generator)


def dihedral(t: torch.Tensor, k: int) -> torch.Tensor:
    """One of the 8 dihedral transforms of a ``[C, H, W]`` tensor: rotate by ``k % 4`` x 90°, flip if k >= 4."""
    out = torch.rot90(t, k % 4, dims=(1, 2))
    if k >= 4:
        out = torch.flip(out, dims=(2,))
    return out.contiguous()


def _item(inp: torch.Tensor, target: torch.Tensor, sigma: float, name: str) -> dict[str, Any]:
    return {
        "input": inp.to(torch.float32),
        "target": target.to(torch.float32),
        "sigma": torch.tensor(sigma, dtype=torch.float32),
        "name": name,
    }


class PatchDataset(Dataset):
    """`length` random training crops per epoch.

    ``dataset[(epoch, index)]`` is a pure function of ``(seed, epoch, index)``; ``dataset[index]``
    uses ``self.epoch`` (set it with `set_epoch`). All randomness (image choice, crop position,
    dihedral transform, degradation) comes from one generator seeded by `derive_seed`.
    """

    def __init__(self, records: Sequence[ImageRecord], patch_size: int, length: int, seed: int,
                 degradation: Degradation, augment: bool = True) -> None:
        if not records:
            raise DataError("no training images left to crop from")
        self.records = list(records)
        self.patch_size = patch_size
        self.length = length
        self.seed = seed
        self.degradation = degradation
        self.augment = augment
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, Any]:
        if isinstance(key, tuple):
            epoch, index = int(key[0]), int(key[1])
        else:
            epoch, index = self.epoch, int(key)
        if not 0 <= index < self.length:
            raise IndexError(f"index {index} out of range [0, {self.length})")
        g = make_generator(derive_seed("train", self.seed, epoch, index))
        rec = self.records[int(torch.randint(len(self.records), (1,), generator=g))]
        p = self.patch_size
        top = int(torch.randint(rec.height - p + 1, (1,), generator=g))
        left = int(torch.randint(rec.width - p + 1, (1,), generator=g))
        k = int(torch.randint(8, (1,), generator=g)) if self.augment else 0
        target = dihedral(to_tensor(rec.target[top:top + p, left:left + p]), k)
        paired = None
        if rec.input is not None:
            paired = dihedral(to_tensor(rec.input[top:top + p, left:left + p]), k)
        inp, sigma = self.degradation.train(target, paired, g)
        return _item(inp, target, sigma, rec.name)


class EvalDataset(Dataset):
    """Whole images (or a centre crop of side `eval_size`), degraded from a seed fixed per image.

    The seed is ``derive_seed("eval", seed, record.key)`` (key = file name), so every run, worker
    count and order scores exactly the same degraded inputs.
    """

    def __init__(self, records: Sequence[ImageRecord], seed: int, degradation: Degradation,
                 eval_size: int | None = None) -> None:
        self.records = list(records)
        self.seed = seed
        self.degradation = degradation
        self.eval_size = eval_size

    def __len__(self) -> int:
        return len(self.records)

    def crop_box(self, rec: ImageRecord) -> tuple[int, int, int, int]:
        """``(top, left, height, width)`` of the evaluated region of `rec`."""
        h, w = rec.height, rec.width
        if self.eval_size is None:
            return 0, 0, h, w
        ch, cw = min(h, self.eval_size), min(w, self.eval_size)
        return (h - ch) // 2, (w - cw) // 2, ch, cw

    def __getitem__(self, index: int) -> dict[str, Any]:
        rec = self.records[index]
        top, left, h, w = self.crop_box(rec)
        target = to_tensor(rec.target[top:top + h, left:left + w])
        paired = None
        if rec.input is not None:
            paired = to_tensor(rec.input[top:top + h, left:left + w])
        g = make_generator(derive_seed("eval", self.seed, rec.key))
        inp, sigma = self.degradation.eval(target, paired, g)
        return _item(inp, target, sigma, rec.name)


class EpochSampler(DistributedSampler):
    """Yields this process's ``(epoch, index)`` keys of an epoch of `length` crops, and remembers how far it got.

    Epoch: Lightning calls `set_epoch` before each epoch; a pass reads the epoch at its first key.

    Processes: with ``num_replicas > 1`` (DDP) each rank takes every ``num_replicas``-th key of the epoch,
    padded to a multiple as `DistributedSampler` pads (the keys Lightning's sampler injection gave each rank).
    Being a `DistributedSampler`, Lightning injects no wrapper, so the loader saves this sampler's state.

    State (`state_dict`/`load_state_dict`, the protocol torchdata's `StatefulDataLoader` saves for its
    sampler): ``{"epoch": pass epoch, "batches": batches of batch_size keys handed out in it}``, in the
    units of Lightning's batch counters (see `align_loader_states`). After `load_state_dict` the next pass
    starts at the batch after the saved ones, without drawing the skipped keys, and only if it is a pass of
    the saved epoch (a completed pass resumes into the next epoch).
    """

    def __init__(self, length: int, epoch: int = 0, batch_size: int = 1, num_replicas: int = 1,
                 rank: int = 0) -> None:
        super().__init__(range(length), num_replicas=num_replicas, rank=rank, shuffle=False)
        self.length = length
        self.epoch = epoch
        self.batch_size = batch_size
        self._resume: tuple[int, int] | None = None
        self._pass_epoch, self._drawn = epoch, 0

    def __iter__(self) -> Iterator[tuple[int, int]]:
        resume, self._resume = self._resume, None
        self._pass_epoch, self._drawn = self._start(resume)
        return self._keys(resume)

    def _start(self, resume: tuple[int, int] | None) -> tuple[int, int]:
        """``(epoch, keys to skip)`` of a pass starting now."""
        if resume is not None and resume[0] == self.epoch:
            return self.epoch, min(resume[1] * self.batch_size, self.num_samples)
        return self.epoch, 0

    def _keys(self, resume: tuple[int, int] | None) -> Iterator[tuple[int, int]]:
        epoch, start = self._start(resume)  # again at the first key: Lightning may have set the epoch since
        self._pass_epoch, self._drawn = epoch, start
        for index in itertools.islice(super().__iter__(), start, None):
            self._drawn += 1
            yield epoch, index

    def __len__(self) -> int:
        return self.num_samples

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self._pass_epoch, "batches": -(-self._drawn // self.batch_size)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        epoch, batches = int(state["epoch"]), int(state["batches"])
        if batches * self.batch_size >= self.num_samples:  # the saved pass was complete: the next epoch follows
            epoch, batches = epoch + 1, 0
        # set now: worker processes and DDP fetch the first keys when iteration starts, before Lightning's set_epoch
        self.epoch = epoch
        self._resume = (epoch, batches)


def align_loader_states(checkpoint: dict[str, Any]) -> None:
    """Make the saved `EpochSampler` position agree with the batch Lightning resumes at.

    Lightning saves the train loader's `state_dict()` (torchdata's `StatefulDataLoader`, which holds the
    sampler's ``{"epoch", "batches"}``) under the fit loop's ``combined_loader`` and restores it on resume.
    Checkpoints written at a batch end or a validation hold the batches handed out, which is where Lightning
    resumes. A checkpoint written from a signal handler (SLURM's SIGUSR1) can land while a fetched batch is
    still being trained on; Lightning then resumes *at* that batch, so it must not be skipped. The resume
    index follows Lightning's rule (`_TrainingEpochLoop.update_restart_stage`): ``processed`` when only the
    batch-end bookkeeping was missing, else ``completed``. When that is past the epoch's last batch, the
    position becomes the start of the next epoch.
    """
    loops = checkpoint.get("loops", {}).get("fit_loop", {})
    states = loops.get("state_dict", {}).get("combined_loader")
    batch_progress = loops.get("epoch_loop.batch_progress", {})
    progress = batch_progress.get("current")
    if not states or not progress:
        return
    ready, started = progress.get("ready"), progress.get("started")
    processed, completed = progress.get("processed"), progress.get("completed")
    if None in (ready, started, processed, completed):
        return
    resume_at = processed if started == ready and processed == started and completed == processed - 1 else completed
    epoch_done = bool(batch_progress.get("is_last_batch")) and resume_at >= ready
    for state in _sampler_states(states):
        if epoch_done:
            state["epoch"], state["batches"] = int(state["epoch"]) + 1, 0
        else:
            state["batches"] = min(int(state["batches"]), int(resume_at))


def upgrade_loader_states(checkpoint: dict[str, Any]) -> None:
    """Let a checkpoint written before the training loader was a `StatefulDataLoader` load (call before restoring).

    Its loader state (``{"epoch", "batches"}`` alone) is not one torchdata can restore, so it is dropped and a
    mid-epoch resume restarts that epoch from its first batch (what Lightning does for a loader without state).
    """
    states = checkpoint.get("loops", {}).get("fit_loop", {}).get("state_dict", {}).get("combined_loader")
    for i, state in enumerate(states or []):
        if isinstance(state, dict) and set(state) == {"epoch", "batches"}:
            if state["batches"]:
                warnings.warn(f"this checkpoint's training loader state {state} is in the layout written before "
                              f"torchdata's StatefulDataLoader; epoch {state['epoch']} restarts from its first "
                              "batch", UserWarning, stacklevel=2)
            states[i] = {}


def _sampler_states(tree: Any) -> Iterator[dict[str, Any]]:
    """The `EpochSampler` states (dicts with exactly the keys ``epoch`` and ``batches``) inside loader states.

    Where torchdata keeps the sampler's state inside its own (``_sampler_iter_state``, or the main snapshot with
    worker processes) is its own layout, so it is found by shape rather than by path.
    """
    if isinstance(tree, dict):
        if set(tree) == {"epoch", "batches"}:
            yield tree
            return
        tree = list(tree.values())
    if isinstance(tree, (list, tuple)):
        for item in tree:
            yield from _sampler_states(item)


def eval_sampler(dataset: Dataset) -> Sampler | None:
    """Under multi-process (DDP) evaluation, every image exactly once across the ranks; else None (in order).

    Lightning's default DistributedSampler pads the split with repeated images so that every rank gets
    the same number, which would count those images twice in the synced per-image PSNR/SSIM means.
    Ranks may then run one batch more or less than each other, which is safe in evaluation.
    """
    replicas, _ = process_group()
    if replicas < 2:
        return None
    from lightning.pytorch.overrides.distributed import UnrepeatedDistributedSampler

    if len(dataset) < replicas:
        raise DataError(
            f"{len(dataset)} evaluation image(s) cannot be shared by {replicas} processes "
            "(each needs one); add images or use fewer devices"
        )
    return UnrepeatedDistributedSampler(dataset, shuffle=False)


def process_group() -> tuple[int, int]:
    """``(world size, rank)`` of the initialized default process group (DDP), else ``(1, 0)``."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return 1, 0
    return dist.get_world_size(), dist.get_rank()


# ----------------------------------------------------------------------------------------------
# argument checks


def check_folders(name: str, value: object) -> list[str] | None:
    """None, one folder, or a non-empty list of folders -> list of str; folders must exist, except the entry
    ``skimage-samples``, which stands for the embedded split (so photos of one's own can be trained beside it)."""
    if value is None:
        return None
    if isinstance(value, (str, os.PathLike)):
        value = [value]
    if not isinstance(value, (list, tuple)) or not value:
        raise ConfigError(f"{name}={value!r} is not allowed: use null (embedded samples) or a list of folders "
                          f"(the entry {SAMPLES_NAME!r} adds the embedded samples)")
    out = []
    for v in value:
        if not isinstance(v, (str, os.PathLike)) or not str(v):
            raise ConfigError(f"{name}: folder {v!r} is not a path")
        if v == SAMPLES_NAME:
            out.append(v)
            continue
        p = Path(v)
        if not p.exists():
            raise DataError(f"{name}: image folder {str(p)!r} does not exist")
        if not p.is_dir():
            raise DataError(f"{name}: image folder {str(p)!r} is not a folder")
        out.append(str(v))
    return out


def folders_name(folders: Sequence[str]) -> str:
    """``"BSD68"`` or ``"BSD68+Set12"``: the folder names joined."""
    return "+".join(Path(f).resolve().name or str(f) for f in folders)


def check_unique_names(records: Sequence[ImageRecord], split: str) -> None:
    seen: dict[str, str] = {}
    for r in records:
        if r.name in seen:
            raise DataError(
                f"{split}: two images share the name {r.name!r} ({seen[r.name]!r} and {r.path!r}); "
                f"rename one of the folders or files"
            )
        seen[r.name] = r.path


def load_flat_records(folders: Sequence[str] | None, split: str, channels: int) -> list[ImageRecord]:
    """Clean images of `folders` (of the embedded split when None, or for the entry ``skimage-samples``) as
    records, named ``folder/file`` (the embedded split alone keeps bare file names, which seed its eval noise)."""
    records = []
    for folder in [SAMPLES_NAME] if folders is None else folders:
        embedded = folder == SAMPLES_NAME
        prefix = "" if folders is None else f"{SAMPLES_NAME if embedded else Path(folder).resolve().name}/"
        for p in sample_paths(split) if embedded else list_images(folder):
            records.append(ImageRecord(name=f"{prefix}{p.name}", key=p.name, target=load_image(p, channels),
                                       path=str(p)))
    check_unique_names(records, split)
    return records


# ----------------------------------------------------------------------------------------------


class RestorationDataModule(L.LightningDataModule):
    """Shared DataModule: folders or embedded samples, random crops for training, fixed eval inputs.

    Subclasses set `task` and implement `_load_records(split, folders)`, `_degradation()` and
    `_describe(split)`.

    Deterministic sampling: the training DataLoader's sampler is an `EpochSampler` whose
    ``set_epoch`` Lightning calls at the start of every epoch (``_set_sampler_epoch`` in the fit
    loop, also on resume), so item ``(epoch, i)`` is the same crop in every run with the same seed.
    Outside Lightning call `set_epoch(epoch)` on this DataModule before iterating.

    Args:
        train, val, test: image folders (files directly inside, sorted). ``train=None`` -> embedded
            training split; ``val=None`` -> embedded held-out split; ``test=None`` -> same as val.
        channels: 1 (gray, BT.601 luma) or 3 (RGB).
        patch_size: side of the square training crops.
        patches_per_epoch: random crops per training epoch.
        batch_size: training batch size (evaluation batches whole images when they share a size,
            otherwise one image per batch).
        eval_size: optional centre crop side for val/test images (bounds CPU time); None = whole image.
        num_workers: DataLoader workers.
        seed: seeds training crops ``(seed, epoch, index)`` and evaluation noise ``(seed, file name)``.
        small_images: ``"error"`` (DataError naming the file and sizes) or ``"skip"`` (warn, skip) for
            training images smaller than `patch_size`.
    """

    task: str = ""

    def __init__(
        self,
        train: list[str] | None = None,
        val: list[str] | None = None,
        test: list[str] | None = None,
        channels: int = 1,
        patch_size: int = 40,
        patches_per_epoch: int = 512,
        batch_size: int = 16,
        eval_size: int | None = None,
        num_workers: int = 0,
        seed: int = 0,
        small_images: str = "error",
    ) -> None:
        super().__init__()
        self.channels = check_channels(channels)
        self.patch_size = check_int("patch_size", patch_size, 1)
        self.patches_per_epoch = check_int("patches_per_epoch", patches_per_epoch, 1)
        self.batch_size = check_int("batch_size", batch_size, 1)
        self.eval_size = None if eval_size is None else check_int("eval_size", eval_size, 1)
        self.num_workers = check_int("num_workers", num_workers, 0)
        self.seed = check_int("seed", seed, 0)
        if small_images not in SMALL_IMAGE_POLICIES:
            raise ConfigError(
                f"small_images={small_images!r} is not allowed: use one of {', '.join(SMALL_IMAGE_POLICIES)}"
            )
        self.small_images = small_images
        self.folders: dict[str, list[str] | None] = {
            "train": check_folders("train", train),
            "val": check_folders("val", val),
            "test": check_folders("test", test),
        }
        self._records: dict[str, list[ImageRecord]] = {}
        self._epoch = 0
        self._train_sampler: EpochSampler | None = None
        self._train_dataset: PatchDataset | None = None

    # -- to implement ------------------------------------------------------------------------
    def _load_records(self, split: str, folders: list[str] | None) -> list[ImageRecord]:
        raise NotImplementedError

    def _degradation(self) -> Degradation:
        raise NotImplementedError

    def _describe(self, split: str) -> str:
        folders = self._split_folders(split)
        return SAMPLES_NAME if folders is None else folders_name(folders)

    # -- splits --------------------------------------------------------------------------------
    def _split_folders(self, split: str) -> list[str] | None:
        if split == "test" and self.folders["test"] is None:
            return self.folders["val"]
        return self.folders[split]

    def records(self, split: str) -> list[ImageRecord]:
        """Decoded records of `split` (``"train"``, ``"val"``, ``"test"``), loaded once and kept."""
        if split not in ("train", "val", "test"):
            raise ConfigError(f"split={split!r} is not allowed: use 'train', 'val' or 'test'")
        if split not in self._records:
            if split == "test" and self.folders["test"] is None:
                self._records["test"] = self.records("val")
            else:
                recs = self._load_records(split, self._split_folders(split))
                if split == "train":
                    recs = self._filter_small(recs)
                self._records[split] = recs
        return self._records[split]

    def _filter_small(self, records: list[ImageRecord]) -> list[ImageRecord]:
        p = self.patch_size
        kept = []
        for r in records:
            if r.height >= p and r.width >= p:
                kept.append(r)
                continue
            msg = (f"training image {r.path!r} is {r.width}x{r.height} (WxH), smaller than the "
                   f"{p}x{p} patch_size")
            if self.small_images == "error":
                raise DataError(msg + "; lower patch_size or set small_images='skip'")
            warnings.warn(msg + "; skipped (small_images='skip')", UserWarning, stacklevel=3)
        if not kept:
            raise DataError(f"every training image is smaller than the {p}x{p} patch_size")
        return kept

    @property
    def dataset_name(self) -> str:
        """Name of the evaluated (test) data, e.g. ``"skimage-samples"`` or ``"BSD68+Set12"``."""
        return self._describe("test")

    @property
    def split_names(self) -> dict[str, str]:
        return {s: self._describe(s) for s in ("train", "val", "test")}

    # -- Lightning hooks -------------------------------------------------------------------------
    def setup(self, stage: str | None = None) -> None:
        if stage in (None, "fit"):
            self.records("train")
        if stage in (None, "fit", "validate"):
            self.records("val")
        if stage in (None, "test", "predict"):
            self.records("test")

    def set_epoch(self, epoch: int) -> None:
        """Select the training epoch whose crops the train loader yields (Lightning does this itself)."""
        self._epoch = int(epoch)
        if self._train_sampler is not None:
            self._train_sampler.set_epoch(epoch)
        if self._train_dataset is not None:
            self._train_dataset.set_epoch(epoch)

    def train_dataset(self) -> PatchDataset:
        if self._train_dataset is None:
            self._train_dataset = PatchDataset(self.records("train"), self.patch_size,
                                               self.patches_per_epoch, self.seed, self._degradation())
            self._train_dataset.set_epoch(self._epoch)
        return self._train_dataset

    def eval_dataset(self, split: str) -> EvalDataset:
        return EvalDataset(self.records(split), self.seed, self._degradation(), self.eval_size)

    def train_dataloader(self) -> DataLoader:
        dataset = self.train_dataset()
        replicas, rank = process_group()
        self._train_sampler = EpochSampler(len(dataset), self._epoch, self.batch_size, replicas, rank)
        with warnings.catch_warnings():  # torchdata 0.11 calls torch.set_vital, deprecated in torch 2.13
            warnings.filterwarnings("ignore", message="'set_vital' is deprecated", category=UserWarning)
            return StatefulDataLoader(dataset, batch_size=self.batch_size, sampler=self._train_sampler,
                                      num_workers=self.num_workers, persistent_workers=self.num_workers > 0,
                                      drop_last=False)

    def _eval_loader(self, split: str) -> DataLoader:
        dataset = self.eval_dataset(split)
        shapes = {dataset.crop_box(r)[2:] for r in dataset.records}
        batch_size = self.batch_size if len(shapes) == 1 else 1
        return DataLoader(dataset, batch_size=batch_size, sampler=eval_sampler(dataset),
                          num_workers=self.num_workers)

    def val_dataloader(self) -> DataLoader:
        return self._eval_loader("val")

    def test_dataloader(self) -> DataLoader:
        return self._eval_loader("test")

    def predict_dataloader(self) -> DataLoader:
        return self._eval_loader("test")
