"""Every shipped network file rebuilds with `load_network` alone and reproduces the check recorded in it."""
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from distill.export import embedded_check, load_network
from distill.modeling import run_model
from teachers.weights import sha256_file

REPO = Path(__file__).resolve().parents[1]
SHIPPED = sorted((REPO / "students" / "pretrained").glob("*.pt"))
TEACHERS = sorted((REPO / "teachers" / "pretrained").glob("*.pt"))


def test_the_three_quickstart_students_are_shipped():
    names = {p.name for p in SHIPPED}
    assert {"quickstart_gray_s25.pt", "quickstart_gray_s25_alone.pt", "quickstart_gray_s25_scratch.pt"} <= names


def test_the_distilled_quickstart_student_comes_from_the_quickstart_recipes_teacher():
    """README pairs the shipped distilled student with `recipes/quickstart.yaml`: its teacher must be that file."""
    recipe = OmegaConf.load(REPO / "recipes" / "quickstart.yaml")
    teacher = REPO / recipe.model.init_args.teacher.init_args.checkpoint
    prov = torch.load(REPO / "students" / "pretrained" / "quickstart_gray_s25.pt", weights_only=True)["provenance"]
    assert prov["teacher"]["sha256"] == sha256_file(teacher)


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_shipped_student_rebuilds_and_scores_as_recorded(path, single_thread):
    net = load_network(path)
    record = torch.load(path, weights_only=True)
    prov = record["provenance"]
    assert prov["teacher"]["sha256"] and prov["recipe"]["model"]["class_path"].startswith("distill.")
    assert path.stat().st_size < 3 * 2**20
    recorded = prov["embedded_check"]
    measured = embedded_check(net, recorded["sigma"], recorded["eval_size"])
    assert measured["images"] == recorded["images"]
    assert measured["psnr"] == pytest.approx(recorded["psnr"], abs=1e-3)
    x = torch.rand(1, net.in_channels, 20, 20)
    with torch.no_grad():
        assert run_model(net, x, torch.full((1,), 25 / 255)).shape == x.shape


@pytest.mark.parametrize("path", TEACHERS, ids=lambda p: p.name)
def test_shipped_teacher_rebuilds_and_scores_as_recorded(path, single_thread):
    net = load_network(path)
    record = torch.load(path, weights_only=True)
    prov = record["provenance"]
    if isinstance(prov["recipe"], str):  # a plain state dict wrapped with --model/--recipe: the recipe file and source
        assert (REPO / prov["recipe"]).is_file() and len(prov["source"]["sha256"]) == 64
    else:  # exported from its fit checkpoint: the run's whole config, whose network is the file's
        network = prov["recipe"]["model"]["init_args"]["model"]
        assert network["class_path"] == record["class_path"]
        assert {k: network["init_args"][k] for k in record["init_args"]} == record["init_args"]
    assert path.stat().st_size < 3 * 2**20
    recorded = prov["embedded_check"]
    measured = embedded_check(net, recorded["sigma"], recorded["eval_size"], rain=recorded["rain"])
    assert measured["psnr"] == pytest.approx(recorded["psnr"], abs=1e-3)
    assert {**measured, "psnr": None} == {**recorded, "psnr": None}
    noisy = torch.rand(1, net.in_channels, 24, 24)
    with torch.no_grad():
        assert run_model(net, noisy, torch.full((1,), 25 / 255)).shape == noisy.shape
