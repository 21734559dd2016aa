"""`spikedistill energy` on trained weights: a fit checkpoint or an exported network gives the energy block of that
run's results.json; without either the output says the student is untrained."""
import json

import pytest

from distill.cli import main

from test_cli import TINY


@pytest.mark.parametrize("source", ["ckpt", "network"])
def test_energy_of_a_trained_run_matches_its_results(tiny_run, source, tmp_path, repo_root, monkeypatch, capsys):
    monkeypatch.chdir(repo_root)
    ckpt = tiny_run / "checkpoints" / "last.ckpt"
    if source == "ckpt":
        given = ["--ckpt_path", str(ckpt)]
    else:
        main(["export", str(ckpt), str(tmp_path / "student.pt")])
        given = ["--network", str(tmp_path / "student.pt")]
    report = tmp_path / "energy.json"
    main(["energy", "--config", "recipes/quickstart_hint.yaml", *TINY, *given, "--json", str(report)])
    out = capsys.readouterr().out
    assert "UNTRAINED" not in out and f"trained in {given[1]}" in out
    measured, recorded = json.loads(report.read_text()), json.loads((tiny_run / "results.json").read_text())["energy"]
    for role in ("student", "teacher"):
        assert measured[role]["per_image"] == recorded[role]["per_image"], role
    assert measured["ratio"] == pytest.approx(recorded["ratio"])
    assert measured["mean_firing_rate"] == pytest.approx(recorded["mean_firing_rate"])
    side = measured["image"]
    assert f"energy per {side['height']}x{side['width']} image" in out


def test_energy_without_weights_says_untrained(repo_root, monkeypatch, capsys):
    monkeypatch.chdir(repo_root)
    main(["energy", "--config", "recipes/quickstart_hint.yaml", *TINY])
    assert "UNTRAINED (fresh initialisation" in capsys.readouterr().out


def test_a_checkpoint_of_another_network_is_refused(tiny_run, repo_root, monkeypatch, capsys):
    monkeypatch.chdir(repo_root)
    with pytest.raises(SystemExit):
        main(["energy", "--config", "recipes/quickstart_hint.yaml", *TINY, "--model.init_args.student.init_args.features=8",
              "--ckpt_path", str(tiny_run / "checkpoints" / "last.ckpt")])
    assert "does not fit the recipe's SpikingDnCNN" in capsys.readouterr().err
