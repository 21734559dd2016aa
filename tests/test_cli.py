"""The `spikedistill` entry point: help, print_config, start without Lightning, `wandb agent` arguments, energy,
and checkpoints a fit leaves behind."""
import csv
import importlib.util
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from distill.cli import EXTRA_COMMANDS, LIGHTNING_COMMANDS, main
from distill.distillation import DistillationModule
from distill.entry import agent_run_dir, python_nulls

REPO = Path(__file__).resolve().parents[1]

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


NO_TRAINING = [["--help"], ["leaderboard", "{runs}"], ["leaderboard", "--help"], ["sweep", "--help"],
               ["plot", "--help"], ["export", "--help"], ["data", "--help"]]
if importlib.util.find_spec("sweeps") is not None:  # wandb's sweep engine expands the plan
    NO_TRAINING.append(["sweep", "recipes/sweeps/quickstart_grid.yaml", "--dry-run"])


@pytest.mark.parametrize("args", NO_TRAINING, ids=" ".join)
def test_commands_that_do_not_train_start_without_lightning(args, tmp_path):
    """The `spikedistill` script pyproject.toml declares, in a fresh interpreter: Lightning is never imported."""
    (tmp_path / "runs" / "a").mkdir(parents=True)
    (tmp_path / "runs" / "a" / "results.json").write_text(json.dumps({"metrics": {"model": {"psnr": 30.0}}}))
    module, function = re.search(r'^spikedistill = "([\w.]+):(\w+)"$', (REPO / "pyproject.toml").read_text(),
                                 re.M).groups()
    code = (f"import importlib, sys\ntry:\n    importlib.import_module({module!r}).{function}(sys.argv[1:])\n"
            "except SystemExit as exc:\n    assert not exc.code, exc.code\n"
            "print('lightning loaded' if 'lightning' in sys.modules else 'no lightning')")
    argv = [a.format(runs=tmp_path / "runs") for a in args]
    proc = subprocess.run([sys.executable, "-c", code, *argv], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.splitlines()[-1] == "no lightning"


def test_wandb_agent_values_python_none_is_null():
    words = ["fit", "--a=None", "--b=[{'x': None, 'y': 'z'}]", "--c={'k': None}", "--d=[{teacher: body.4}]",
             "--e=None-ish", "f=None", "--g=[None", "--h=[1, 2]", "--i=null"]
    assert python_nulls(words) == ["fit", "--a=null", '--b=[{"x": null, "y": "z"}]', '--c={"k": null}',
                                   "--d=[{teacher: body.4}]", "--e=None-ish", "f=None", "--g=[None", "--h=[1, 2]",
                                   "--i=null"]


def test_wandb_agent_runs_get_their_own_directory():
    agent = {"WANDB_SWEEP_ID": "abc", "WANDB_RUN_ID": "r1"}
    assert agent_run_dir(["fit"], agent) == ["fit", "--trainer.default_root_dir=runs/sweeps/abc/r1"]
    assert agent_run_dir(["fit", "--trainer.default_root_dir=x"], agent) == ["fit", "--trainer.default_root_dir=x"]
    assert agent_run_dir(["fit"], {"WANDB_RUN_ID": "r1"}) == ["fit"]  # a wandb run id alone is no agent


def test_print_config_prints_full_recipe(capsys, repo_root, monkeypatch):
    monkeypatch.chdir(repo_root)
    with pytest.raises(SystemExit) as exit_:
        main(["fit", "--config", "recipes/quickstart_hint.yaml", "--print_config"])
    assert exit_.value.code == 0
    config = yaml.safe_load(capsys.readouterr().out)
    init = config["model"]["init_args"]
    assert init["student"]["class_path"] == "students.spiking_dncnn.SpikingDnCNN"
    assert init["hints"][0]["teacher"] == "body.16"
    assert config["data"]["init_args"]["sigma"] == 25.0
    assert "max_steps" in config["trainer"]


# ---- the energy command: numbers read back from what it prints ------------------------------------------

E_MAC_PJ, E_AC_PJ = 4.6, 0.9  # the recipes' preset, 45nm-fp32 (Horowitz 2014)
_SI = {"": 1.0, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12}
_PJ = {"pJ": 1.0, "nJ": 1e3, "uJ": 1e6, "mJ": 1e9}


def _si(text: str) -> float:
    number, suffix = re.fullmatch(r"([-\d.e+]+)([kMGT]?)", text).groups()
    return float(number) * _SI[suffix]


def _pj(text: str) -> float:
    number, unit = text.split()
    return float(number) * _PJ[unit]


def _printed_energy(out: str) -> dict:
    """The energy command's output: per role its table rows ({column: cell}) and total energy (pJ); the ratio."""
    parsed: dict = {"roles": {}}
    for role, section in re.findall(r"^== (Teacher|Student) ==\n(.*?)(?=^== |\Z)", out, flags=re.M | re.S):
        lines = section.strip().splitlines()
        header = re.split(r"\s{2,}", lines[0].strip())
        rows = [dict(zip(header, re.split(r"\s{2,}", line.strip()))) for line in lines[2:]
                if not line.startswith(("total per image", "constants:"))]
        total = re.search(r"^total per image .*, energy [\d.]+ \w+ \(([\d.e+]+) uJ\)$", section, flags=re.M)
        constants = re.search(r"^constants: 45nm-fp32: E_MAC ([\d.]+) pJ, E_AC ([\d.]+) pJ", section, flags=re.M)
        assert total and constants, section
        assert (float(constants[1]), float(constants[2])) == (E_MAC_PJ, E_AC_PJ)
        parsed["roles"][role.lower()] = {"rows": rows, "energy_pj": float(total[1]) * 1e6}
    parsed["ratio"] = float(re.search(r"^energy ratio \(teacher / student\): ([\d.e+]+)x$", out, flags=re.M)[1])
    return parsed


def _check_energy_output(out: str, csv_dir: Path) -> dict:
    """The printed tables agree with the CSVs written alongside, and every energy is the preset's arithmetic:
    an analog layer costs MACs x E_MAC, a spike-driven one ACs x E_AC with ACs = input rate x MACs."""
    printed = _printed_energy(out)
    assert set(printed["roles"]) == {"teacher", "student"}
    for role, table in printed["roles"].items():
        with open(csv_dir / f"energy_{role}.csv", newline="") as f:
            exact = list(csv.DictReader(f))
        assert [r["layer"] for r in table["rows"]] == [r["layer"] for r in exact] and exact
        for shown, row in zip(table["rows"], exact):
            macs, acs, energy = float(row["macs"]), float(row["acs"]), float(row["energy_pj"])
            assert macs > 0 and _si(shown["MACs"]) == pytest.approx(macs, rel=5e-3), shown
            assert _pj(shown["energy"]) == pytest.approx(energy, rel=1e-3, abs=1e-3), shown
            if row["kind"] == "analog":
                assert role == "teacher" or shown["input rate"] == "analog"
                assert energy == pytest.approx(macs * E_MAC_PJ) and acs == 0
            else:
                rate = float(row["input_rate"])
                assert 0.0 <= rate <= 1.0 and role == "student"
                assert float(shown["input rate"].rstrip("%")) == pytest.approx(100 * rate, abs=5e-3)
                assert acs == pytest.approx(rate * macs, rel=1e-6) and _si(shown["ACs"]) == pytest.approx(acs, rel=5e-3)
                assert energy == pytest.approx(acs * E_AC_PJ)
        table["csv"] = exact
        assert table["energy_pj"] == pytest.approx(sum(float(r["energy_pj"]) for r in exact), rel=1e-5)
    teacher, student = printed["roles"]["teacher"], printed["roles"]["student"]
    assert printed["ratio"] == pytest.approx(teacher["energy_pj"] / student["energy_pj"], rel=5e-3)
    return printed


def test_energy_command_prints_tables_and_ratio(capsys, repo_root, monkeypatch, tmp_path):
    monkeypatch.chdir(repo_root)
    main(["energy", "--config", "recipes/quickstart_hint.yaml", "--data.init_args.eval_size=32", "--trainer.logger=false",
          "--csv-dir", str(tmp_path)])
    printed = _check_energy_output(capsys.readouterr().out, tmp_path)
    # MACs by hand from the recipe's geometry on the 32 x 32 validation crop: k x k x C_in x C_out per pixel
    recipe = yaml.safe_load(Path("recipes/quickstart_hint.yaml").read_text())["model"]["init_args"]
    assert recipe["teacher"]["class_path"] == "teachers.dncnn.DnCNN"
    assert recipe["student"]["class_path"] == "students.spiking_dncnn.SpikingDnCNN"
    t, s = recipe["teacher"]["init_args"], recipe["student"]["init_args"]
    pixels, c = 32 * 32 * 9, t["in_channels"]
    teacher_macs = [pixels * c * t["features"]] + [pixels * t["features"] ** 2] * (t["depth"] - 2) + [pixels * t["features"] * c]
    # the student's head runs once on the image (direct encoding), its blocks on all T steps, its tail on the decode
    student_macs = ([pixels * c * s["features"]] + [s["timesteps"] * pixels * s["features"] ** 2] * (s["depth"] - 2)
                    + [pixels * s["features"] * c])
    assert [float(r["macs"]) for r in printed["roles"]["teacher"]["csv"]] == teacher_macs
    assert [float(r["macs"]) for r in printed["roles"]["student"]["csv"]] == student_macs
    assert printed["roles"]["teacher"]["energy_pj"] == pytest.approx(sum(teacher_macs) * E_MAC_PJ, rel=1e-5)
    assert [r["layer"] for r in printed["roles"]["teacher"]["rows"]][0] == "body.0"
    assert [r["kind"] for r in printed["roles"]["student"]["csv"]][:2] == ["analog", "spike"]  # head.conv, blocks.0
    assert 1 < printed["ratio"] < sum(teacher_macs) * E_MAC_PJ / (student_macs[0] * E_MAC_PJ)


def test_fit_then_load_from_checkpoint_restores_student(tmp_path, repo_root, monkeypatch):
    monkeypatch.chdir(repo_root)
    run = tmp_path / "run"
    main(["fit", "--config", "recipes/quickstart_hint.yaml", "--trainer.max_steps=4", "--trainer.val_check_interval=2",
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


DISTILL_RECIPES = ["recipes/quickstart_hint.yaml"] + sorted(
    f"recipes/distill/{p.name}" for p in (__import__("pathlib").Path(__file__).parents[1] / "recipes" / "distill").glob("*.yaml")
    if not p.stem.endswith(("_nohint", "_alone", "_scratch"))
)


@pytest.mark.parametrize("recipe", DISTILL_RECIPES[1:])
def test_energy_command_on_every_distillation_recipe(capsys, repo_root, monkeypatch, recipe, tmp_path):
    monkeypatch.chdir(repo_root)
    main(["energy", "--config", recipe, "--data.init_args.eval_size=32", "--trainer.logger=false",
          "--csv-dir", str(tmp_path)])
    printed = _check_energy_output(capsys.readouterr().out, tmp_path)
    student = printed["roles"]["student"]["csv"]
    assert any(r["kind"] == "spike" for r in student)  # a spiking student: some layers are driven by spikes
    assert all(r["kind"] == "analog" for r in printed["roles"]["teacher"]["csv"])
