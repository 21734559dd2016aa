"""recipes/paper/: each paper-scale recipe runs a `fast_dev_run` on tiny generated folders of its layout (flat
gray or RGB folders, Rain100-style paired rain/ + norain/), on CPU; `spikedistill data check` accepts good folders
with a summary and refuses each kind of bad one, naming the file or value."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from distill.entry import main as entry_main

REPO = Path(__file__).resolve().parents[1]
PAPER = REPO / "recipes" / "paper"
CPU = ["--trainer.fast_dev_run=true", "--trainer.accelerator=cpu", "--trainer.precision=32-true",
       "--trainer.devices=1", "--trainer.logger=false", "--trainer.enable_progress_bar=false",
       "--data.init_args.num_workers=0", "--data.init_args.batch_size=2", "--data.init_args.eval_size=32"]
#: per recipe: the layout of its folders, channels, and the shrink that keeps a CPU step short
SHRINK = {
    "spiden_s25": ("flat", 1, ["--model.init_args.student.init_args.features=6",
                               "--model.init_args.student.init_args.depth=4",
                               "--model.init_args.hints=[{teacher: body.4, student: blocks.0.neuron}]",
                               "--data.init_args.patch_size=16"]),
    "spiking_unet_s25": ("flat", 1, ["--model.init_args.student.init_args.calibration_patches=2",
                                     "--data.init_args.patch_size=16"]),
    "bridge_spiker_ir_s25": ("flat", 3, ["--model.init_args.student.init_args.preset=tiny",
                                         "--data.init_args.patch_size=16"]),
    "esdnet_rain100l": ("paired", 3, ["--model.init_args.student.init_args.preset=tiny",
                                      "--data.init_args.patch_size=32"]),
    "esdnet_rain100h": ("paired", 3, ["--model.init_args.student.init_args.preset=tiny",
                                      "--data.init_args.patch_size=32"]),
}

pytestmark = pytest.mark.filterwarnings(r"ignore:Found \d+ module\(s\) in eval mode", "ignore:.*LeafSpec")


def _png(path: Path, size=(48, 48), channels: int = 3, seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    shape = (size[1], size[0]) + ((3,) if channels == 3 else ())
    Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8)).save(path)
    return path


def flat_folder(root: Path, n: int = 3, channels: int = 1, size=(48, 48)) -> Path:
    for i in range(n):
        _png(root / f"img{i}.png", size, channels, seed=i)
    return root


def paired_folder(root: Path, n: int = 3, size=(48, 48)) -> Path:
    for i in range(n):
        _png(root / "rain" / f"rain-{i}.png", size, 3, seed=i)
        _png(root / "norain" / f"norain-{i}.png", size, 3, seed=100 + i)
    return root


def test_every_paper_recipe_is_covered_and_gpu_ready():
    assert sorted(p.stem for p in PAPER.glob("*.yaml")) == sorted(SHRINK)
    for path in PAPER.glob("*.yaml"):
        spec = yaml.safe_load(path.read_text())
        trainer, data = spec["trainer"], spec["data"]["init_args"]
        assert trainer["precision"] == "bf16-mixed" and trainer["accelerator"] == "gpu" and trainer["devices"] == 1
        assert trainer["max_steps"] >= 100_000 and data["num_workers"] >= 4, path.name
        assert all(f.startswith("data/") for key in ("train", "val", "test") for f in data[key]), path.name
        header = path.read_text().split("seed_everything")[0]
        assert "spikedistill data check" in header and "--executor slurm" in header and "ddp" in header


@pytest.mark.parametrize("name", sorted(SHRINK))
def test_paper_recipe_fast_dev_run_on_tiny_folders(name, tmp_path, monkeypatch):
    monkeypatch.chdir(REPO)  # shipped checkpoint paths are repository-relative
    layout, channels, shrink = SHRINK[name]
    make = paired_folder if layout == "paired" else (lambda root: flat_folder(root, channels=channels))
    train, val, test = (make(tmp_path / "data" / split) for split in ("train", "val", "test"))
    root = tmp_path / "run"
    entry_main(["fit", "--config", str(PAPER / f"{name}.yaml"), f"--data.init_args.train=[{train}]",
                f"--data.init_args.val=[{val}]", f"--data.init_args.test=[{test}]",
                f"--trainer.default_root_dir={root}", *CPU, *shrink])
    results = json.loads((root / "results.json").read_text())
    assert results["run"]["global_step"] == 1
    assert results["channels"] == channels and results["task"] == ("derain" if layout == "paired" else "denoise")
    assert set(results["metrics"]) == {"input", "teacher", "student"}
    for role, scores in results["metrics"].items():
        assert math.isfinite(scores["psnr"]) and 0 < scores["ssim"] <= 1, (role, scores)
