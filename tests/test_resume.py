"""Resume: a fit killed with SIGKILL mid-epoch and resumed with `--ckpt_path last` ends exactly like an
uninterrupted run (weights, optimizer, scheduler, hint schedule, data order, convergence bookkeeping)."""
from __future__ import annotations

import itertools
import json
import os
import signal
import warnings
from pathlib import Path
from types import SimpleNamespace

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

from cli_helpers import QUICKSTART, spikedistill, tiny_recipe, wait_for
from distill.checkpointing import AtomicCheckpointIO
from distill.cli import find_last_checkpoint, main
from distill.data import DenoisingDataModule
from distill.data.base import EpochSampler, align_loader_states, upgrade_loader_states
from torchdata.stateful_dataloader import StatefulDataLoader


def sampler_state(loader_state: dict) -> dict:
    """The `EpochSampler` state inside a `StatefulDataLoader` state (torchdata's layout, no worker processes)."""
    return loader_state["_sampler_iter_state"]["sampler_state"]


def _results(run: Path) -> dict:
    return json.loads((run / "results.json").read_text())


@pytest.fixture
def one_thread(single_thread):
    """In-process runs with one intra-op thread (conftest's `single_thread`), like the subprocess
    (OMP_NUM_THREADS=1), so that float reductions happen in the same order; global torch flags set by
    `deterministic=true` are restored after."""
    deterministic = torch.are_deterministic_algorithms_enabled()
    yield
    torch.use_deterministic_algorithms(deterministic)


@pytest.mark.slow  # a `spikedistill fit` subprocess killed mid-epoch, then two fits in process
def test_sigkill_mid_epoch_then_resume_matches_uninterrupted_run(tmp_path, one_thread):
    recipe = tiny_recipe(tmp_path)  # 8 batches per epoch, last.ckpt every 3 steps, 15 steps
    common = ["fit", "--config", QUICKSTART, "--config", str(recipe), "--trainer.deterministic=true"]
    whole, broken = tmp_path / "whole", tmp_path / "broken"
    held, started = tmp_path / "held", tmp_path / "started"
    victim = spikedistill(*common, f"--trainer.default_root_dir={broken}",
                          "--trainer.callbacks+=cli_helpers.HoldAtStep", "--trainer.callbacks.step=7",
                          f"--trainer.callbacks.marker={held}", log=tmp_path / "broken.log", OMP_NUM_THREADS="1")
    try:
        main([*common, f"--trainer.default_root_dir={whole}"])  # the uninterrupted reference, meanwhile
        wait_for(held, victim)  # step 7 is about to run: last.ckpt holds step 6, 6 of the 8 batches of epoch 0
        os.kill(victim.pid, signal.SIGKILL)
        assert victim.wait(timeout=60) == -signal.SIGKILL
    finally:
        if victim.poll() is None:
            victim.kill()
    assert held.read_text().split() == ["7", "0", "7"]
    checkpoint = torch.load(broken / "checkpoints" / "last.ckpt", weights_only=False)
    assert checkpoint["global_step"] == 6 and checkpoint["epoch"] == 0
    [loader_state] = checkpoint["loops"]["fit_loop"]["state_dict"]["combined_loader"]
    assert sampler_state(loader_state) == {"epoch": 0, "batches": 6}
    assert not (broken / "results.json").exists()

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        main([*common, f"--trainer.default_root_dir={broken}", "--ckpt_path", "last",
              "--trainer.callbacks+=cli_helpers.RecordStart", f"--trainer.callbacks.marker={started}"])
    assert started.read_text().split() == ["6"]  # resumed from the checkpoint, not from scratch
    assert not [w for w in caught if "not resumable" in str(w.message)]  # Lightning's restart-the-epoch warning

    a, b = _results(whole), _results(broken)
    assert b["run"]["global_step"] == a["run"]["global_step"] == 15
    assert b["run"]["epochs"] == a["run"]["epochs"]
    assert b["metrics"] == a["metrics"]  # PSNR/SSIM of input, teacher and student, to the last bit
    assert b["energy"] == a["energy"] and b["firing_rates"] == a["firing_rates"]
    strip = lambda history: [{k: v for k, v in h.items() if k != "seconds"} for h in history]  # noqa: E731
    assert strip(b["convergence"]["history"]) == strip(a["convergence"]["history"])
    assert [h["step"] for h in a["convergence"]["history"]] == [3, 6, 9, 12, 15]
    # final weights (last.ckpt holds step 15 = the end), optimizer and scheduler state, bit for bit
    ca = torch.load(whole / "checkpoints" / "last.ckpt", weights_only=False)
    cb = torch.load(broken / "checkpoints" / "last.ckpt", weights_only=False)
    assert ca["global_step"] == cb["global_step"] == 15
    assert ca["state_dict"].keys() == cb["state_dict"].keys()
    for key, value in ca["state_dict"].items():
        assert torch.equal(value, cb["state_dict"][key]), key
    for sa, sb in zip(ca["optimizer_states"][0]["state"].values(), cb["optimizer_states"][0]["state"].values()):
        assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert ca["lr_schedulers"] == cb["lr_schedulers"]


class _Recorder(L.LightningModule):
    """Records the inputs it trains on."""

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))
        self.seen: list[torch.Tensor] = []

    def training_step(self, batch, batch_idx):
        self.seen.append(batch["input"].clone())
        return (self.w * batch["input"].mean()).sum()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def _trainer(root, max_steps, **kwargs):
    return L.Trainer(default_root_dir=root, max_steps=max_steps, accelerator="cpu", logger=False,
                     enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
                     plugins=[AtomicCheckpointIO()], **kwargs)


@pytest.mark.parametrize("workers", [0, 1])
def test_mid_epoch_resume_continues_with_the_next_batch(tmp_path, workers):
    """In-process, with and without worker processes: a resume at step 3 of a 4-batch epoch, and one on an
    epoch boundary, see exactly the batches an uninterrupted run sees."""
    def data():
        return DenoisingDataModule(patch_size=8, patches_per_epoch=8, batch_size=2, num_workers=workers, seed=3)

    full = _Recorder()
    _trainer(tmp_path / "full", 10).fit(full, datamodule=data())
    for stop in (3, 4, 6):  # mid-epoch, exactly at the end of epoch 0, and mid-way through epoch 1
        first = _Recorder()
        checkpoint = ModelCheckpoint(dirpath=tmp_path / f"ckpt{stop}", save_last=True, every_n_train_steps=1)
        _trainer(tmp_path / f"a{stop}", stop, callbacks=[checkpoint]).fit(first, datamodule=data())
        second = _Recorder()
        _trainer(tmp_path / f"b{stop}", 10).fit(second, datamodule=data(),
                                               ckpt_path=str(tmp_path / f"ckpt{stop}" / "last.ckpt"))
        seen = first.seen + second.seen
        assert len(seen) == len(full.seen) == 10
        for step, (x, y) in enumerate(zip(seen, full.seen)):
            assert torch.equal(x, y), f"batch of step {step} differs after resuming at step {stop}"


def test_loader_state_only_applies_to_its_own_epoch():
    def loader():
        return DenoisingDataModule(patch_size=8, patches_per_epoch=6, batch_size=2, seed=1).train_dataloader()

    first = loader()
    assert isinstance(first, StatefulDataLoader) and len(first) == 3
    every = [b["input"] for b in first]
    iterator = iter(first)
    next(iterator)
    state = first.state_dict()
    assert sampler_state(state) == {"epoch": 0, "batches": 1}
    fresh = loader()
    fresh.load_state_dict(state)
    rest = [b["input"] for b in fresh]
    assert len(rest) == 2 and all(torch.equal(x, y) for x, y in zip(rest, every[1:]))
    assert len(fresh) == 3  # Lightning counts the skipped batches itself
    assert len(list(fresh)) == 3  # the skip applies once
    later = loader()
    later.load_state_dict(state)
    passing = iter(later)  # Lightning's order: load_state_dict, iter, then set_epoch at the epoch start
    later.sampler.set_epoch(1)  # a resume in another epoch than the saved one: nothing skipped
    assert len(list(passing)) == 3
    next(iterator), next(iterator)
    other = loader()
    other.load_state_dict(first.state_dict())  # all 3 batches of epoch 0 handed out: the next pass is epoch 1
    assert sampler_state(first.state_dict()) == {"epoch": 0, "batches": 3}
    passing = iter(other)
    assert other.sampler.epoch == 1 and len(list(passing)) == 3


def test_skipped_batches_are_not_loaded(monkeypatch):
    """The resumed pass starts at the saved batch: the skipped crops are never built."""
    dm = DenoisingDataModule(patch_size=8, patches_per_epoch=8, batch_size=2, seed=1)
    first = dm.train_dataloader()
    iterator = iter(first)
    next(iterator), next(iterator), next(iterator)
    fresh = DenoisingDataModule(patch_size=8, patches_per_epoch=8, batch_size=2, seed=1).train_dataloader()
    dataset, fetched = fresh.dataset, []
    getitem = type(dataset).__getitem__
    monkeypatch.setattr(type(dataset), "__getitem__", lambda self, key: (fetched.append(key), getitem(self, key))[1])
    fresh.load_state_dict(first.state_dict())
    assert len(list(fresh)) == 1 and fetched == [(0, 6), (0, 7)]


def test_ddp_ranks_share_the_epoch_keys_as_lightnings_sampler_wrapper_did():
    """Each rank's keys are those Lightning's `DistributedSamplerWrapper` gave it (padded, interleaved)."""
    from lightning.fabric.utilities.distributed import DistributedSamplerWrapper

    for length, replicas in ((8, 2), (7, 2), (5, 3)):
        for rank in range(replicas):
            wrapped = DistributedSamplerWrapper(EpochSampler(length, epoch=2), num_replicas=replicas, rank=rank,
                                                shuffle=False)
            own = EpochSampler(length, epoch=2, num_replicas=replicas, rank=rank)
            assert list(own) == list(wrapped) and len(own) == len(wrapped)


def test_last_resolves_to_newest_last_or_slurm_checkpoint(tmp_path):
    ckpts = tmp_path / "checkpoints"
    ckpts.mkdir()
    trainer = SimpleNamespace(default_root_dir=str(tmp_path), checkpoint_callbacks=[ModelCheckpoint(dirpath=ckpts)])
    assert find_last_checkpoint(trainer) is None  # nothing yet: Lightning starts from scratch
    for name, age in (("checkpoints/last.ckpt", 30), ("checkpoints/best-step=3.ckpt", 0),
                      ("checkpoints/.last.ckpt.abc.tmp", 0), ("hpc_ckpt_1.ckpt", 60)):
        (tmp_path / name).write_bytes(b"x")
        os.utime(tmp_path / name, (1e9 - age, 1e9 - age))
    assert find_last_checkpoint(trainer) == str(ckpts / "last.ckpt")
    (tmp_path / "hpc_ckpt_2.ckpt").write_bytes(b"x")  # SIGUSR1 on SLURM saved after the last validation
    assert find_last_checkpoint(trainer) == str(tmp_path / "hpc_ckpt_2.ckpt")


@pytest.mark.parametrize("progress, expected", [
    ((6, 6, 6, 6), 6),  # saved after a validation: 6 batches done
    ((6, 6, 6, 5), 6),  # saved at a batch end (ModelCheckpoint every n steps): Lightning counts batch 6 as done
    ((7, 7, 6, 6), 6),  # saved from a signal handler while batch 7 was training: Lightning re-runs it
])
@pytest.mark.parametrize("workers", [0, 1])
def test_saved_loader_position_follows_lightnings_resume_batch(progress, expected, workers):
    ready, started, processed, completed = progress
    dm = DenoisingDataModule(patch_size=8, patches_per_epoch=16, batch_size=2, seed=1, num_workers=workers)
    dm.set_epoch(2)
    loader = dm.train_dataloader()
    iterator = iter(loader)
    for _ in range(ready):
        next(iterator)
    checkpoint = {"loops": {"fit_loop": {
        "state_dict": {"combined_loader": [loader.state_dict()]},
        "epoch_loop.batch_progress": {"is_last_batch": False, "current": {
            "ready": ready, "started": started, "processed": processed, "completed": completed}}}}}
    align_loader_states(checkpoint)
    resumed = DenoisingDataModule(patch_size=8, patches_per_epoch=16, batch_size=2, seed=1,
                                  num_workers=workers).train_dataloader()
    resumed.load_state_dict(checkpoint["loops"]["fit_loop"]["state_dict"]["combined_loader"][0])
    passing = iter(resumed)
    assert resumed.sampler.epoch == 2  # restored with the state, before any key is drawn
    got, want = [b["input"] for b in passing], [b["input"] for b in itertools.islice(loader, expected, None)]
    assert len(got) == len(want) == 8 - expected and all(torch.equal(x, y) for x, y in zip(got, want))


@pytest.mark.parametrize("progress, epoch, batches", [
    ((4, 4, 4, 3), 3, 0),  # saved at the end of the last batch of epoch 2: Lightning resumes with epoch 3
    ((4, 4, 4, 4), 3, 0),  # saved after the epoch's validation
    ((4, 4, 3, 3), 2, 3),  # saved from a signal handler during the last batch: Lightning re-runs it
])
def test_saved_loader_position_at_the_end_of_an_epoch(progress, epoch, batches):
    ready, started, processed, completed = progress
    checkpoint = {"loops": {"fit_loop": {
        "state_dict": {"combined_loader": [{"_snapshot": {"_main_snapshot": {"_sampler_iter_state": {
            "samples_yielded": 8, "sampler_state": {"epoch": 2, "batches": 4}}}}}]},
        "epoch_loop.batch_progress": {"is_last_batch": True, "current": {
            "ready": ready, "started": started, "processed": processed, "completed": completed}}}}}
    align_loader_states(checkpoint)
    [state] = checkpoint["loops"]["fit_loop"]["state_dict"]["combined_loader"]
    assert state["_snapshot"]["_main_snapshot"]["_sampler_iter_state"]["sampler_state"] == {
        "epoch": epoch, "batches": batches}


def test_a_checkpoint_from_before_the_stateful_loader_restarts_its_epoch():
    checkpoint = {"loops": {"fit_loop": {"state_dict": {"combined_loader": [{"epoch": 1, "batches": 3}]}}}}
    with pytest.warns(UserWarning, match="epoch 1 restarts from its first batch"):
        upgrade_loader_states(checkpoint)
    [state] = checkpoint["loops"]["fit_loop"]["state_dict"]["combined_loader"]
    loader = DenoisingDataModule(patch_size=8, patches_per_epoch=6, batch_size=2, seed=1).train_dataloader()
    loader.load_state_dict(state)  # what Lightning then does: no state, the whole epoch
    assert state == {} and len(list(loader)) == 3
