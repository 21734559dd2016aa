"""Test helpers (not a test module): a tiny recipe layered on the quickstart, CLI runs in a subprocess, and a
callback that parks a run at a known step so that a test can SIGKILL it there.

Subprocesses get this folder on PYTHONPATH, so `--trainer.callbacks+=cli_helpers.HoldAtStep` resolves.
"""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
import yaml
from lightning.pytorch.callbacks import Callback
from PIL import Image

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent
QUICKSTART = str(REPO / "recipes" / "quickstart_hint.yaml")

#: 64 training crops of 16 px per epoch in batches of 8 (8 steps per epoch), 32 px centre crops scored.
TINY_DATA = {"channels": 1, "sigma": 25.0, "patch_size": 16, "patches_per_epoch": 64, "batch_size": 8,
             "eval_size": 32}


def tiny_teacher(path: Path, seed: int = 0, features: int = 8, depth: int = 4) -> Path:
    """A small DnCNN weight file (random weights: these tests are about mechanics, not quality)."""
    from teachers.dncnn import DnCNN

    torch.manual_seed(seed)
    torch.save(DnCNN(in_channels=1, features=features, depth=depth, bn=True).state_dict(), path)
    return path


def tiny_recipe(folder: Path, **trainer) -> Path:
    """`tiny.yaml` to layer on recipes/quickstart_hint.yaml: same module, data and optimisation, tiny sizes.

    8 batches per epoch; validation (and last.ckpt) every 3 steps.
    """
    teacher = tiny_teacher(folder / "teacher.pt")
    recipe = {
        "model": {"init_args": {
            "teacher": {"init_args": {"in_channels": 1, "features": 8, "depth": 4, "bn": True,
                                      "checkpoint": str(teacher)}},
            "student": {"init_args": {"in_channels": 1, "features": 6, "depth": 4, "timesteps": 2}},
            "hints": [{"teacher": "body.4", "student": "blocks.0.neuron", "adapter": "conv1x1", "loss": "mse",
                       "weight": 0.12, "schedule": {"kind": "cosine", "decay_steps": 12, "warmup_steps": 2}}],
            "example_size": 16,
            "warm_start": {"twin_steps": 2, "calibration_patches": 2, "eval_images": 1},
        }},
        "data": {"init_args": dict(TINY_DATA)},
        "trainer": {"max_steps": 15, "val_check_interval": 3, "log_every_n_steps": 1, "logger": False,
                    "enable_progress_bar": False, **trainer},
    }
    path = folder / "tiny.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


def write_images(folder: Path, count: int = 3, size: int = 48, channels: int = 1, seed: int = 0) -> Path:
    """`count` smooth random PNGs in `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(count):
        shape = (size, size) if channels == 1 else (size, size, 3)
        img = (rng.random(shape) * 255).astype(np.uint8)
        Image.fromarray(img).save(folder / f"img{i}.png")
    return folder


def cli_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(WANDB_MODE="disabled", WANDB_SILENT="true", PYTHONPATH=os.pathsep.join(
        p for p in (str(TESTS), env.get("PYTHONPATH", "")) if p))
    env.pop("SPIKEDISTILL_DEBUG", None)
    env.update(extra)
    return env


def spikedistill(*args: str, log: Path | None = None, **env: str) -> subprocess.Popen:
    """Start `python -m distill.cli ARGS` in the repository root (stdout+stderr to `log`, extra `env`)."""
    if log is None:
        return subprocess.Popen([sys.executable, "-m", "distill.cli", *args], cwd=REPO, env=cli_env(**env),
                                stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    with open(log, "w") as out:  # the child keeps its own copy of the descriptor
        return subprocess.Popen([sys.executable, "-m", "distill.cli", *args], cwd=REPO, env=cli_env(**env),
                                stdout=out, stderr=subprocess.STDOUT)


def wait(proc: subprocess.Popen, log: Path | None, timeout: float = 300) -> None:
    """Wait for `proc`; fail with the end of its log when it fails."""
    try:
        code = proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise
    if code != 0:
        tail = log.read_text()[-3000:] if log is not None and log.exists() else ""
        raise AssertionError(f"spikedistill exited with {code}:\n{tail}")


def wait_for(path: Path, proc: subprocess.Popen, timeout: float = 300) -> None:
    """Wait until `path` exists (fail if `proc` ends first)."""
    end = time.monotonic() + timeout
    while not path.exists():
        if proc.poll() is not None:
            raise AssertionError(f"process ended with {proc.returncode} before {path} appeared")
        if time.monotonic() > end:
            proc.kill()
            raise AssertionError(f"{path} did not appear within {timeout} s")
        time.sleep(0.2)


class HoldAtStep(Callback):
    """When optimizer step `step` is about to start, write `marker` (step, epoch, batch) and sleep until killed."""

    def __init__(self, step: int, marker: str) -> None:
        self.step = step
        self.marker = marker

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_step == self.step:
            Path(self.marker).write_text(f"{trainer.global_step} {trainer.current_epoch} {batch_idx}\n")
            while True:  # the test kills this process with SIGKILL
                time.sleep(0.2)


class RecordStart(Callback):
    """Write the global step at which training (re)starts to `marker`."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def on_train_start(self, trainer, pl_module) -> None:
        Path(self.marker).write_text(f"{trainer.global_step}\n")


class HoldInNthRun(Callback):
    """Across runs sharing `ledger`: each training start appends "<run dir> <global step>"; in the `nth`
    start, when optimizer step `step` is about to start, write `marker` and sleep until killed."""

    def __init__(self, ledger: str, marker: str, nth: int, step: int) -> None:
        self.ledger, self.marker, self.nth, self.step = Path(ledger), Path(marker), nth, step
        self.held = False

    def on_train_start(self, trainer, pl_module) -> None:
        with open(self.ledger, "a") as fh:
            fh.write(f"{trainer.default_root_dir} {trainer.global_step}\n")
        self.held = len(self.ledger.read_text().splitlines()) == self.nth

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if self.held and trainer.global_step == self.step:
            self.marker.write_text(f"{trainer.default_root_dir}\n")
            while True:  # the test kills the whole sweep, this process included
                time.sleep(0.2)


class SpoilAfterFirstValidation(Callback):
    """After the first real validation, shift the network's output by a whole data range, so PSNR falls from there."""

    def on_validation_end(self, trainer, pl_module) -> None:
        if not trainer.sanity_checking and trainer.global_step == trainer.val_check_interval:
            with torch.no_grad():
                pl_module.network.tail.bias.fill_(1.0)
