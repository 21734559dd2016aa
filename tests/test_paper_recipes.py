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


# ---- spikedistill data check -------------------------------------------------------------------------------


def data_check(capsys, *argv: str) -> tuple[int, str, str]:
    try:
        entry_main(["data", "check", *argv])
        code = 0
    except SystemExit as exc:
        code = exc.code
    out, err = capsys.readouterr()
    return code, out, err


def test_data_check_summarises_good_folders(tmp_path, capsys):
    flat = flat_folder(tmp_path / "BSD400", n=3, channels=1)
    _png(flat / "wide.png", (64, 50), 1)
    code, out, err = data_check(capsys, str(flat), "--layout", "flat", "--channels", "1", "--min-size", "40")
    assert code == 0, err
    assert f"{flat}: 4 images, sizes 48x48 to 64x50 (WxH), 1 channel" in out
    rain = paired_folder(tmp_path / "Rain100L", n=2)
    code, out, err = data_check(capsys, str(rain), "--layout", "paired")
    assert code == 0, err
    assert f"{rain}: 2 pairs, sizes 48x48 to 48x48 (WxH), 3 channels" in out


def test_data_check_names_each_problem(tmp_path, capsys):
    missing = tmp_path / "nope"
    code, _, err = data_check(capsys, str(missing), "--layout", "flat")
    assert code == 2 and f"image folder '{missing}' does not exist" in err
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("x")
    code, _, err = data_check(capsys, str(empty), "--layout", "flat")
    assert code == 2 and "holds no images" in err and str(empty) in err
    broken = flat_folder(tmp_path / "broken", n=2)
    (broken / "bad.png").write_bytes(b"not a png")
    code, _, err = data_check(capsys, str(broken), "--layout", "flat")
    assert code == 2 and f"'{broken / 'bad.png'}' cannot be read" in err
    small = flat_folder(tmp_path / "small", n=1)
    _png(small / "tiny.png", (30, 20), 1)
    code, _, err = data_check(capsys, str(small), "--layout", "flat", "--min-size", "40")
    assert code == 2 and f"'{small / 'tiny.png'}' is 30x20 (WxH), smaller than --min-size 40" in err
    assert "img0.png" not in err
    unpaired = paired_folder(tmp_path / "unpaired", n=2)
    _png(unpaired / "rain" / "rain-7.png")
    code, _, err = data_check(capsys, str(unpaired), "--layout", "paired")
    assert code == 2 and "without a clean partner: rain-7.png" in err
    sizes = paired_folder(tmp_path / "sizes", n=1)
    _png(sizes / "norain" / "norain-0.png", (40, 40))
    code, _, err = data_check(capsys, str(sizes), "--layout", "paired")
    assert code == 2 and "pair sizes differ" in err and "rain-0.png' is 48x48" in err and "is 40x40" in err
    flat = flat_folder(tmp_path / "flat", n=1)
    code, _, err = data_check(capsys, str(flat), "--layout", "paired")
    assert code == 2 and "has no paired layout" in err


def test_data_check_reads_the_embedded_photos_as_recipes_accept_them(tmp_path, capsys, monkeypatch):
    from PIL import Image

    from distill.data.samples import sample_paths

    paths = sample_paths("train") + sample_paths("val")
    sizes = [Image.open(p).size for p in paths]
    monkeypatch.chdir(tmp_path)  # no folder of that name here: the entry means the embedded photos
    code, out, err = data_check(capsys, "skimage-samples", "--layout", "flat", "--channels", "1")
    assert code == 0, err
    assert out.strip() == (f"skimage-samples: {len(paths)} images, sizes {min(w for w, _ in sizes)}x"
                           f"{min(h for _, h in sizes)} to {max(w for w, _ in sizes)}x{max(h for _, h in sizes)} "
                           "(WxH), 1 channel")
    code, _, err = data_check(capsys, "skimage-samples", "--layout", "paired")
    assert code == 2 and "'skimage-samples' holds clean photos only" in err and "--layout flat" in err


def test_data_check_starts_without_lightning(tmp_path):
    import subprocess
    import sys

    folder = flat_folder(tmp_path / "f", n=1)
    code = ("import sys\nfrom distill.entry import main\nmain(['data', 'check', sys.argv[1], '--layout', 'flat'])\n"
            "print('lightning loaded' if 'lightning' in sys.modules else 'no lightning')")
    proc = subprocess.run([sys.executable, "-c", code, str(folder)], cwd=REPO, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.splitlines()[-1] == "no lightning"
