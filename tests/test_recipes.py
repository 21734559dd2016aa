"""Every recipe runs: a `fast_dev_run` of each recipe file under recipes/, found by glob, in-process.

* Fragments (`recipes/data/`, `recipes/models/`, `recipes/train/`) are blocks other recipes include by path;
  they are checked on their own (they build, and every one is used by some recipe), not run.
* A `<name>_nohint.yaml`, `<name>_alone.yaml` (strict control) or `<name>_scratch.yaml` (plain control) is an
  overlay: it runs layered on `<name>.yaml`.
* Warm starts are shrunk to two twin steps.
* `recipes/sweeps/` holds sweep files (`spikedistill sweep`), not recipes.

Runs are shrunk only where it costs time: 2-image training batches and 32x32 held-out crops.
"""
from __future__ import annotations

import importlib
import json
import math
import re
from pathlib import Path

import pytest
import torch
import yaml

from distill.cli import SpikeDistillCLI
from distill.data.base import RestorationDataModule
from distill.distillation import DistillationModule
from distill.errors import ConfigError
from distill.module import RestorationModule
from students.conversion import ConvertedSpikingUNet, calibration_inputs, convert_unet
from students.spiking_unet import SpikingUNet
from teachers.unet import UNet
from teachers.weights import read_state_dict, sha256_file

REPO = Path(__file__).resolve().parent.parent
RECIPES = REPO / "recipes"
FRAGMENT_DIRS = ("data", "models", "train")
NOT_RECIPES = ("sweeps", "paper")  # paper/ needs user data folders: tests/test_paper_recipes.py
#: overlay suffix -> the model options it may change
OVERLAYS = {
    "_nohint": {"hints", "output_distillation"},
    "_alone": {"hints", "output_distillation", "warm_start"},
    "_scratch": {"hints", "output_distillation", "warm_start", "student", "optimizer", "scheduler"},
}
SHRINK = ["--data.init_args.batch_size=2", "--data.init_args.eval_size=32"]
SHRINK_WARM_START = ["--model.init_args.warm_start.twin_steps=2", "--model.init_args.warm_start.calibration_patches=2",
                     "--model.init_args.warm_start.eval_images=1"]


def overlay_suffix(path: Path) -> str | None:
    return next((s for s in OVERLAYS if path.stem.endswith(s)), None)


def _rel(path: Path) -> str:
    return path.relative_to(RECIPES).as_posix()


def fragments() -> list[Path]:
    return sorted(p for d in FRAGMENT_DIRS for p in (RECIPES / d).rglob("*.yaml"))


def recipe_runs() -> list[tuple[Path, ...]]:
    """One entry per runnable recipe: `(recipe,)`, or `(base, overlay)` for a twin overlay."""
    runs = []
    for path in sorted(RECIPES.rglob("*.yaml")):
        if path.relative_to(RECIPES).parts[0] in FRAGMENT_DIRS + NOT_RECIPES:
            continue
        suffix = overlay_suffix(path)
        if suffix:
            runs.append((path.with_name(path.stem[: -len(suffix)] + ".yaml"), path))
        else:
            runs.append((path,))
    return runs


RUNS = recipe_runs()

# the frozen teacher is in eval mode on purpose (the `spikedistill` entry point filters this too)
pytestmark = pytest.mark.filterwarnings(r"ignore:Found \d+ module\(s\) in eval mode", "ignore:.*LeafSpec")


def _yaml(path: Path) -> dict:
    return yaml.safe_load(path.read_text()) or {}


def _included(path: Path) -> list[Path]:
    """Files a recipe or block names by relative path (values ending in .yaml), resolved from it."""
    found = re.findall(r"[\w./-]+\.yaml", "\n".join(l.split("#")[0] for l in path.read_text().splitlines()))
    return [(path.parent / f).resolve() for f in found if not f.startswith("recipes/")]


def _build(block: Path):
    """Instantiate a `class_path`/`init_args` block with plain Python (no nested blocks in models/data)."""
    spec = _yaml(block)
    module, _, name = spec["class_path"].rpartition(".")
    return getattr(importlib.import_module(module), name)(**(spec.get("init_args") or {}))


def _finite(value) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


# ---- the recipe files themselves ---------------------------------------------------------------


def test_the_glob_finds_every_kind_of_recipe():
    names = {"+".join(_rel(p) for p in run) for run in RUNS}
    for expected in ("quickstart.yaml", "quickstart.yaml+quickstart_alone.yaml", "quickstart_hint.yaml+quickstart_hint_nohint.yaml", "teachers/dncnn_s50.yaml",
                     "teachers/restormer_rgb_s25.yaml", "students/spiden_s25.yaml",
                     "distill/bridge.yaml+distill/bridge_nohint.yaml"):
        assert expected in names
    teachers = {_rel(r[0]) for r in RUNS if _rel(r[0]).startswith("teachers/")}
    for model in ("dncnn", "ffdnet", "unet", "restormer", "dncnn_twin", "unet_twin", "esdnet_twin", "spiker_ir_twin"):
        for task in ("s15", "s25", "s50", "blind", "rain"):
            assert f"teachers/{model}_{task}.yaml" in teachers
    for run in RUNS:
        assert run[0].is_file(), f"{_rel(run[-1])}: no base recipe {run[0].name} for this overlay"
        top = _yaml(run[0])
        assert {"model", "data", "trainer"} <= set(top), f"{_rel(run[0])} is not a full recipe"
        if len(run) == 2:  # a control changes nothing but how the teacher is used (and, plain, the start)
            overlay = _yaml(run[1])
            assert set(overlay) == {"model"} and set(overlay["model"]) == {"init_args"}, _rel(run[1])
            changed = overlay["model"]["init_args"]
            assert changed["hints"] == [] and changed.get("output_distillation") is None, _rel(run[1])
            assert set(changed) <= OVERLAYS[overlay_suffix(run[1])], _rel(run[1])
            warm = changed.get("warm_start") or {}
            assert not (warm.get("teacher_output_weight") or warm.get("twin_hints") or warm.get("select_from_teacher"))


def test_every_included_file_exists_and_every_fragment_is_used():
    used = set()
    for path in RECIPES.rglob("*.yaml"):
        for target in _included(path):
            assert target.is_file(), f"{_rel(path)} includes missing {target}"
            used.add(target)
    unused = [_rel(p) for p in fragments() if p.resolve() not in used]
    assert not unused, f"blocks no recipe uses: {unused}"


@pytest.mark.parametrize("block", [p for p in fragments() if p.parent.name == "data"], ids=_rel)
def test_data_block_yields_contract_batches(block):
    data = _build(block)
    assert isinstance(data, RestorationDataModule)
    item = data.train_dataset()[(0, 0)]
    p = data.patch_size
    assert item["input"].shape == item["target"].shape == (data.channels, p, p)
    assert data.patches_per_epoch // data.batch_size >= 50  # an epoch is a real amount of training
    assert data.eval_size == 256 and len(data.records("val")) == 3
    if data.task == "denoise":
        sigma = float(item["sigma"])
        if data.sigma is not None:
            assert sigma == pytest.approx(data.sigma / 255)
        else:  # blind: a level per crop from the range
            assert data.sigma_range == (0.0, 55.0) and 0 <= sigma <= 55 / 255
            assert len({float(data.train_dataset()[(0, i)]["sigma"]) for i in range(4)}) == 4
        assert float((item["input"] - item["target"]).std()) == pytest.approx(sigma, rel=0.1, abs=1e-3)
    else:
        assert data.synthetic == block.stem.split("_")[-1]
        assert float(item["sigma"]) == 0 and (item["input"] >= item["target"] - 1e-6).all()  # rain only adds light
        assert (item["input"] > item["target"] + 0.05).any()  # and there are streaks


@pytest.mark.parametrize("block", [p for p in fragments() if p.parent.name in ("models", "pretrained")], ids=_rel)
def test_model_block_builds_and_restores_its_channels(block):
    model = _build(block).eval()
    x = torch.rand(1, model.in_channels, 16, 16)
    with torch.no_grad():
        y = model(x, torch.zeros(1)) if getattr(model, "needs_sigma", False) else model(x)
    assert y.shape == x.shape and torch.isfinite(y).all()
    stem = block.stem
    assert model.in_channels == (3 if "rgb" in stem or "rain" in stem else 1), stem
    if block.parent.name == "pretrained":
        assert model.checkpoint_path is not None and Path(model.checkpoint_path).parent == REPO / "teachers" / "pretrained"


# ---- fast_dev_run of every recipe --------------------------------------------------------------


@pytest.fixture(scope="module", autouse=True)
def _threads():
    """Batches of two: one intra-op thread is faster and steadier on a shared machine."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def has_warm_start(configs: tuple[Path, ...]) -> bool:
    """Whether the layered recipe ends with a warm start (the last file that sets one decides)."""
    found = None
    for config in configs:
        init = (_yaml(config).get("model") or {}).get("init_args") or {}
        if "warm_start" in init:
            found = init["warm_start"]
    return bool(found)


def run_recipe(configs: tuple[Path, ...], root: Path, *extra: str) -> SpikeDistillCLI:
    args = ["fit"]
    for config in configs:
        args += ["--config", str(config)]
    args += ["--trainer.fast_dev_run=1", "--trainer.default_root_dir", str(root), "--trainer.logger=false",
             "--trainer.enable_progress_bar=false", *SHRINK, *extra]
    return SpikeDistillCLI(args=args)


@pytest.mark.parametrize("configs", RUNS, ids=lambda run: "+".join(_rel(p) for p in run))
def test_recipe_fast_dev_run(configs, tmp_path, monkeypatch):
    monkeypatch.chdir(REPO)  # checkpoint paths in recipes are repository-relative
    monkeypatch.setattr("sys.argv", ["spikedistill"])  # LightningCLI warns when pytest's own arguments are there
    warm = has_warm_start(configs)
    cli = run_recipe(configs, tmp_path, *(SHRINK_WARM_START if warm else []))
    module, data = cli.model, cli.datamodule
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["run"]["global_step"] == 1
    assert results["task"] == data.task and results["channels"] == data.channels
    metrics = results["metrics"]
    distilled = isinstance(module, DistillationModule)
    assert set(metrics) == ({"input", "teacher", "student"} if distilled else {"input", "model"})
    for role, scores in metrics.items():
        assert _finite(scores["psnr"]) and _finite(scores["ssim"]), (role, scores)
        assert 0 < scores["ssim"] <= 1, (role, scores)
    if warm:  # the twin trained, was copied and calibrated, and every stage was scored
        report = results["warm_start"]
        assert report["twin_steps"] == 2 and report["seconds"] > 0
        assert all(_finite(report[k]) for k in ("twin_psnr", "copied_psnr", "calibrated_psnr")), report
    else:
        assert results["warm_start"] is None
    network = module.network
    assert results["params"][module.network_role] == sum(p.numel() for p in network.parameters())
    assert results["energy"][module.network_role]["per_image"]["dense_macs"] > 0
    if not distilled:
        assert isinstance(module, RestorationModule)
        return
    # the teacher is the shipped file, untouched: eval mode, no gradients, weights and BN statistics as on disk
    teacher = module.teacher
    assert not teacher.training and not any(p.requires_grad for p in teacher.parameters())
    on_disk, path = read_state_dict(teacher.checkpoint_path)
    assert path.parent == REPO / "teachers" / "pretrained"
    for key, value in teacher.state_dict().items():
        if key in on_disk:
            assert torch.equal(value, on_disk[key]), key
    assert results["teacher_source"]["sha256"] == sha256_file(path)
    # the teacher does the task: better than the degraded input (fast_dev_run scores it on 32x32 crops)
    assert metrics["teacher"]["psnr"] > metrics["input"]["psnr"] + 2.0, metrics
    overlay = len(configs) == 2
    hints = _yaml(configs[0])["model"]["init_args"].get("hints") or []
    assert len(results["hints"]) == (0 if overlay else len(hints))
    if overlay:
        assert module.output_distillation is None and not list(module.hint_set.parameters())
    if isinstance(module.student, ConvertedSpikingUNet):
        # converted from the trained teacher, so it restores before any real fine-tuning
        assert module.student.converted_from == str(path)
        assert metrics["student"]["psnr"] > metrics["input"]["psnr"] + 2.0, metrics


# ---- ConvertedSpikingUNet: conversion as a class_path ------------------------------------------


class _Patches(RestorationDataModule):
    """A stand-in DataModule whose training 'patches' are fixed random tensors (no image decoding)."""

    task = "denoise"

    def __init__(self, channels: int = 1) -> None:
        super().__init__(channels=channels, patch_size=16, patches_per_epoch=8)
        g = torch.Generator().manual_seed(0)
        self.items = torch.rand(8, channels, 16, 16, generator=g)

    def train_dataset(self):
        items = self.items
        return type("D", (), {"__len__": lambda s: len(items), "__getitem__": lambda s, k: {"input": items[k[1]]}})()


def test_converted_spiking_unet_is_convert_unet_as_a_plain_spiking_unet():
    torch.manual_seed(0)
    ann = UNet(preset="tiny").eval()
    data = _Patches()
    with pytest.warns(UserWarning, match="no checkpoint"):
        student = ConvertedSpikingUNet(ann, calibration=data, calibration_patches=6, timesteps=2, neuron="if")
    reference = convert_unet(ann, calibration_inputs(data, 6), timesteps=2, neuron="if")
    assert calibration_inputs(data, 6).shape == (6, 1, 16, 16)
    state, expected = student.state_dict(), reference.state_dict()
    assert state.keys() == expected.keys() == SpikingUNet(preset="tiny", timesteps=2, neuron="if").state_dict().keys()
    for key in expected:  # the ANN is not kept inside (no teacher parameters in the student's checkpoint)
        assert torch.equal(state[key], expected[key]), key
    assert student.activation_scales == reference.activation_scales
    assert student.encoders[0].act1.init_membrane == 0.5 and student.timesteps == 2
    x = data.items[:2]
    with torch.no_grad():
        assert torch.equal(student.eval()(x), reference.eval()(x))


@pytest.mark.filterwarnings("ignore:ConvertedSpikingUNet. the U-Net has no checkpoint")
def test_converted_spiking_unet_refuses_mismatched_inputs():
    ann = UNet(preset="tiny")
    with pytest.raises(ConfigError, match="3-channel images but the U-Net expects 1"):
        ConvertedSpikingUNet(ann, calibration=_Patches(channels=3))
    with pytest.raises(ConfigError, match="lacks 'base_channels'.*teachers.unet.UNet"):
        ConvertedSpikingUNet(torch.nn.Conv2d(1, 1, 3), calibration=_Patches())
    with pytest.raises(ConfigError, match="calibration_patches=0"):
        ConvertedSpikingUNet(ann, calibration=_Patches(), calibration_patches=0)
