"""Self-describing network files: `spikedistill export` writes class, arguments, weights and provenance;
`load_network` rebuilds the network from the file alone; bad files are named."""
import json

import pytest
import torch

from distill.cli import main
from distill.errors import CheckpointError
from distill.export import FORMAT, load_network
from distill.modeling import run_model
from students.spiking_dncnn import SpikingDnCNN
from teachers.weights import read_state_dict, sha256_file

from test_cli import TINY


def test_export_rebuilds_the_student_from_the_file_alone(tiny_run, tmp_path, capsys):
    out = tmp_path / "student.pt"
    main(["export", str(tiny_run / "checkpoints" / "last.ckpt"), str(out)])
    assert f"sha256 {sha256_file(out)}" in capsys.readouterr().out
    net = load_network(out)
    assert isinstance(net, SpikingDnCNN) and not net.training
    assert (net.timesteps, len(net.blocks), net.head.neuron.init_membrane) == (4, 2, 0.5)
    ckpt = torch.load(tiny_run / "checkpoints" / "last.ckpt", weights_only=False)["state_dict"]
    for key, value in net.state_dict().items():
        assert torch.equal(value, ckpt[f"student.{key}"]), key
    record = torch.load(out, weights_only=True)
    assert record["format"] == FORMAT and record["class_path"] == "students.spiking_dncnn.SpikingDnCNN"
    results = json.loads((tiny_run / "results.json").read_text())
    prov = record["provenance"]
    assert prov["teacher"]["sha256"] == sha256_file("teachers/pretrained/dncnn_quickstart_gray_s25.pt")
    assert prov["metrics"] == results["metrics"] and prov["warm_start"] == results["warm_start"]
    assert prov["versions"]["torch"] == torch.__version__
    assert prov["recipe"]["model"]["init_args"]["student"]["init_args"]["features"] == 6
    # the rebuilt network restores as the run's own student did: same output as a student built by hand
    by_hand = SpikingDnCNN(1, 6, 4, timesteps=4, neuron="if", norm="none", init_membrane=0.5).eval()
    by_hand.load_state_dict(read_state_dict(out)[0])  # `checkpoint:`-style reading of the same file
    x = torch.rand(1, 1, 24, 24)
    with torch.no_grad():
        assert torch.equal(run_model(net, x, torch.zeros(1)), by_hand(x))


def test_state_dict_only_export_keeps_the_old_format(tiny_run, tmp_path):
    out = tmp_path / "weights.pt"
    main(["export", str(tiny_run / "checkpoints" / "last.ckpt"), str(out), "--state-dict-only"])
    weights = torch.load(out, weights_only=True)
    assert "format" not in weights and "head.conv.layer.weight" in weights
    with pytest.raises(CheckpointError, match=r"weights\.pt is not a spikedistill network file"):
        load_network(out)


def test_corrupt_and_missing_files_are_named(tmp_path):
    bad = tmp_path / "broken.pt"
    bad.write_bytes(b"not a torch file at all")
    with pytest.raises(CheckpointError, match="broken.pt"):
        load_network(bad)
    with pytest.raises(CheckpointError, match="nothere.pt"):
        load_network(tmp_path / "nothere.pt")


def test_export_needs_the_runs_config(tmp_path, capsys):
    lone = tmp_path / "checkpoints"
    lone.mkdir()
    torch.save({"state_dict": {"student.w": torch.zeros(1)}}, lone / "last.ckpt")
    with pytest.raises(SystemExit) as exit_:
        main(["export", str(lone / "last.ckpt"), str(tmp_path / "x.pt")])
    assert exit_.value.code == 2 and "no config.yaml in its run folder" in capsys.readouterr().err
    assert not (tmp_path / "x.pt").exists()


def test_model_block_wraps_a_plain_state_dict(tmp_path, capsys, single_thread):
    from distill.export import embedded_check
    from teachers.dncnn import DnCNN

    torch.manual_seed(0)
    teacher = DnCNN(in_channels=1, features=8, depth=3, bn=True)
    for bn in (m for m in teacher.modules() if isinstance(m, torch.nn.BatchNorm2d)):
        bn.running_mean.uniform_(-0.1, 0.1)  # buffers too must survive the wrap
    weights, block = tmp_path / "weights.pth", tmp_path / "block.yaml"
    torch.save({"params": teacher.state_dict()}, weights)  # a BasicSR-style release
    block.write_text("class_path: teachers.dncnn.DnCNN\n"
                     "init_args: {in_channels: 1, features: 8, depth: 3, bn: true, checkpoint: elsewhere.pt}\n")
    out = tmp_path / "wrapped.pt"
    main(["export", str(weights), str(out), "--model", str(block), "--recipe", "recipes/x.yaml", "--check-sigma", "25"])
    net = load_network(out)
    assert isinstance(net, DnCNN) and not net.training
    for key, value in teacher.state_dict().items():
        assert torch.equal(net.state_dict()[key], value), key
    prov = torch.load(out, weights_only=True)["provenance"]
    assert prov["source"] == {"file": "weights.pth", "sha256": sha256_file(weights)}
    assert prov["recipe"] == "recipes/x.yaml" and "checkpoint" not in torch.load(out, weights_only=True)["init_args"]
    assert prov["embedded_check"]["psnr"] == pytest.approx(embedded_check(teacher.eval(), 25.0)["psnr"], abs=1e-4)


def test_model_block_errors_are_named(tmp_path, capsys):
    weights, block = tmp_path / "weights.pth", tmp_path / "block.yaml"
    torch.save({"w": torch.zeros(1)}, weights)
    block.write_text("init_args: {features: 8}\n")
    with pytest.raises(SystemExit) as exit_:
        main(["export", str(weights), str(tmp_path / "a.pt"), "--model", str(block)])
    assert exit_.value.code == 2 and "block.yaml is not a model block: it needs a class_path" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_:
        main(["export", str(weights), str(tmp_path / "a.nir"), "--model", str(block), "--format", "nir"])
    assert exit_.value.code == 2 and "--format nir is not allowed" in capsys.readouterr().err
    assert not (tmp_path / "a.pt").exists() and not (tmp_path / "a.nir").exists()
