"""The `spikedistill` entry point: help, print_config, energy, and checkpoints a fit leaves behind."""
import json

import pytest
import torch
import yaml

from distill.cli import EXTRA_COMMANDS, LIGHTNING_COMMANDS, main
from distill.distillation import DistillationModule

TINY = [
    "--model.init_args.student.init_args.features=6",
    "--model.init_args.student.init_args.depth=4",
    "--model.init_args.hints=[{teacher: body.4, student: blocks.0.neuron}]",
    "--data.init_args.patch_size=16",
    "--data.init_args.batch_size=4",
    "--data.init_args.eval_size=32",
    "--trainer.logger=false",
    "--trainer.enable_progress_bar=false",
    "--model.init_args.warm_start.twin_steps=2",
    "--model.init_args.warm_start.calibration_patches=2",
]


def test_help_lists_every_command(capsys):
    main(["--help"])
    out = capsys.readouterr().out
    for name in list(LIGHTNING_COMMANDS) + list(EXTRA_COMMANDS):
        assert f"  {name}" in out


def test_print_config_prints_full_recipe(capsys, repo_root, monkeypatch):
    monkeypatch.chdir(repo_root)
    with pytest.raises(SystemExit) as exit_:
        main(["fit", "--config", "recipes/quickstart.yaml", "--print_config"])
    assert exit_.value.code == 0
    config = yaml.safe_load(capsys.readouterr().out)
    init = config["model"]["init_args"]
    assert init["student"]["class_path"] == "students.spiking_dncnn.SpikingDnCNN"
    assert init["hints"][0]["teacher"] == "body.16"
    assert config["data"]["init_args"]["sigma"] == 25.0
    assert "max_steps" in config["trainer"]


def test_energy_command_prints_tables_and_ratio(capsys, repo_root, monkeypatch):
    monkeypatch.chdir(repo_root)
    main(["energy", "--config", "recipes/quickstart.yaml", "--data.init_args.eval_size=32", "--trainer.logger=false"])
    out = capsys.readouterr().out
    assert "ratio" in out.lower() and "45nm-fp32" in out
    assert "head.conv" in out and "body.0" in out  # per-layer rows of student and teacher


def test_fit_then_load_from_checkpoint_restores_student(tmp_path, repo_root, monkeypatch):
    monkeypatch.chdir(repo_root)
    run = tmp_path / "run"
    main(["fit", "--config", "recipes/quickstart.yaml", "--trainer.max_steps=4", "--trainer.val_check_interval=2",
          f"--trainer.default_root_dir={run}", *TINY])
    results = json.loads((run / "results.json").read_text())
    assert set(results["metrics"]) == {"input", "teacher", "student"}
    assert results["config"]["model"]["init_args"]["student"]["init_args"]["features"] == 6
    assert sorted(p.name for p in (run / "samples").iterdir())[:1]  # the visual-grid images are written
    ckpt = run / "checkpoints" / "last.ckpt"
    loaded = DistillationModule.load_from_checkpoint(ckpt)
    state = torch.load(ckpt, weights_only=False)["state_dict"]
    for key, value in loaded.student.state_dict().items():
        assert torch.equal(value, state[f"student.{key}"]), key
    assert loaded.hint_set.hints[0].student == "blocks.0.neuron"


DISTILL_RECIPES = ["recipes/quickstart.yaml"] + sorted(
    f"recipes/distill/{p.name}" for p in (__import__("pathlib").Path(__file__).parents[1] / "recipes" / "distill").glob("*.yaml")
    if not p.stem.endswith("_nohint")
)


@pytest.mark.parametrize("recipe", DISTILL_RECIPES[1:])
def test_energy_command_on_every_distillation_recipe(capsys, repo_root, monkeypatch, recipe):
    monkeypatch.chdir(repo_root)
    main(["energy", "--config", recipe, "--data.init_args.eval_size=32", "--trainer.logger=false"])
    out = capsys.readouterr().out.lower()
    assert "ratio" in out and "45nm-fp32" in out
