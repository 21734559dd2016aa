"""`spikedistill export --format torchscript|export`: every kind of network the project loads, written as a
standalone module, read back by plain torch (torch.jit.load / torch.export.load) and compared with our forward
(distill.modeling.run_model) on a real image crop; the recording path of the spiking engine; clear refusals."""
import subprocess
import sys

import numpy as np
import pytest
import torch
from skimage import data

from distill.export import FORMAT, export_torch, load_network, main
from distill.modeling import run_model
from spikedistill_core.errors import ConfigError
from students import engine
from students.neurons import SpikingNeuron
from students.surrogates import get_surrogate

SIZE, SIGMA = 32, 25.0
#: (class path, init args): the four students (random weights, so that every layer matters) and two teachers
NETWORKS = {
    "spiking-dncnn": ("students.spiking_dncnn.SpikingDnCNN",
                      dict(in_channels=1, features=6, depth=4, timesteps=4, neuron="lif", beta=0.8, threshold=0.3,
                           init_membrane=0.5, decoding="membrane", zero_tail=False)),
    "spiker-ir": ("students.spiker_ir.SpikerIR", dict(in_channels=1, preset="tiny", threshold=0.3, zero_tail=False)),
    "spiking-unet": ("students.spiking_unet.SpikingUNet",
                     dict(in_channels=1, preset="tiny", threshold=0.3, init_membrane=0.125, zero_tail=False)),
    "esdnet": ("students.esdnet.ESDNet", dict(in_channels=3, preset="tiny", zero_tail=False)),
    "dncnn": ("teachers.dncnn.DnCNN", dict(in_channels=1, features=8, depth=4, bn=True)),
    "ffdnet": ("teachers.ffdnet.FFDNet", dict(in_channels=1, features=8, depth=3)),
}


def _network_file(tmp_path, key: str):
    """A network file (the `spikedistill export` format) of NETWORKS[key] with seeded random weights and BN stats."""
    from distill.export import build_network

    class_path, args = NETWORKS[key]
    torch.manual_seed(0)
    net = build_network(class_path, args, key)
    for bn in (m for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d)):
        bn.running_mean.uniform_(-0.2, 0.2)
        bn.running_var.uniform_(0.5, 2.0)
        bn.weight.data.uniform_(0.5, 1.5)  # tdBN starts at alpha * threshold: most of ESDNet would not fire
        bn.bias.data.uniform_(-0.1, 0.3)
    path = tmp_path / f"{key}.pt"
    torch.save({"format": FORMAT, "class_path": class_path, "init_args": args, "state_dict": net.state_dict(),
                "provenance": {}}, path)
    return path


def _noisy_crop(channels: int) -> torch.Tensor:
    """A 32x32 crop of skimage's camera (gray) or astronaut (RGB) with sigma=25 noise (seeded), [1, C, H, W]."""
    if channels == 1:
        image = data.camera()[200:200 + SIZE, 220:220 + SIZE, None]
    else:
        image = data.astronaut()[100:100 + SIZE, 180:180 + SIZE]
    clean = torch.from_numpy(image.astype(np.float32) / 255.0).permute(2, 0, 1)[None]
    return clean + torch.randn(clean.shape, generator=torch.Generator().manual_seed(25)) * (SIGMA / 255.0)


def _read(path, fmt: str):
    return torch.jit.load(str(path)) if fmt == "torchscript" else torch.export.load(path).module()


@pytest.mark.parametrize("fmt", ["torchscript", "export"])
@pytest.mark.parametrize("key", list(NETWORKS))
def test_plain_torch_reads_the_module_and_matches_our_forward(tmp_path, capsys, key, fmt, single_thread):
    source, out = _network_file(tmp_path, key), tmp_path / f"{key}.{fmt}"
    sigma = ["--sigma", str(SIGMA)] if key == "ffdnet" else []
    main([str(source), str(out), "--format", fmt, "--input-size", str(SIZE), str(SIZE), *sigma])
    reader = "torch.jit.load" if fmt == "torchscript" else "torch.export.load"
    assert f"load it with {reader}" in capsys.readouterr().out
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temporary file left
    net = load_network(source)
    x = _noisy_crop(net.in_channels)
    rates = []
    for neuron in (m for m in net.modules() if isinstance(m, SpikingNeuron)):
        neuron.register_forward_hook(lambda m, i, o: rates.append(float((o != 0).float().mean())))
    with torch.no_grad():
        ours = run_model(net, x, torch.full((1,), SIGMA / 255.0))
        theirs = _read(out, fmt)(x)
    assert (ours - x).abs().mean() > 1e-3, "the network is near the identity: the comparison would be trivial"
    assert all(0.01 < rate < 0.99 for rate in rates), f"a spiking layer is silent or saturated: {rates}"
    torch.testing.assert_close(theirs, ours, rtol=1e-5, atol=1e-6)


def test_the_modules_load_without_this_project(tmp_path):
    """A fresh interpreter in which `students`, `teachers` and `distill` cannot be imported reads both files."""
    source, x = _network_file(tmp_path, "spiking-unet"), _noisy_crop(1)
    for fmt in ("torchscript", "export"):
        export_torch(source, tmp_path / f"m.{fmt}", fmt, (SIZE, SIZE))
    torch.save(x, tmp_path / "x.pt")
    script = (
        "import sys; sys.modules.update(students=None, teachers=None, distill=None, spikedistill_core=None)\n"
        "import torch; x = torch.load('x.pt')\n"
        "torch.save([torch.jit.load('m.torchscript')(x), torch.export.load('m.export').module()(x)], 'y.pt')\n"
    )
    subprocess.run([sys.executable, "-c", script], cwd=tmp_path, check=True, timeout=300)
    with torch.no_grad():
        ours = load_network(source)(x)
    for theirs in torch.load(tmp_path / "y.pt"):
        torch.testing.assert_close(theirs, ours, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("reset", ["zero", "subtract"])
@pytest.mark.parametrize("beta", [0.0, 0.8, 0.9, 1.0])
def test_recording_path_gives_the_fused_recurrences_numbers(monkeypatch, reset, beta):
    """While tracing or exporting, the neurons run as plain ops (engine.is_recording): bit for bit the same."""
    torch.manual_seed(0)
    x, surrogate = torch.randn(5, 2, 4, 16, 16) * 0.5, get_surrogate("atan")
    threshold, start = torch.tensor(0.37), torch.full((2, 4, 16, 16), 0.1)
    fused = [engine.lif_recurrence(x, torch.tensor(beta), threshold, surrogate, reset, u0) for u0 in (None, start)]
    graded = [engine.multithreshold_recurrence(x, threshold, surrogate, levels, start)
              for levels in (engine.DEFAULT_LEVELS, (1.5, 0.7, 0.2))]
    monkeypatch.setattr(engine, "is_recording", lambda: True)
    plain = [engine.lif_recurrence(x, torch.tensor(beta), threshold, surrogate, reset, u0) for u0 in (None, start)]
    plain_graded = [engine.multithreshold_recurrence(x, threshold, surrogate, levels, start)
                    for levels in (engine.DEFAULT_LEVELS, (1.5, 0.7, 0.2))]
    for (s1, u1), (s2, u2) in zip(fused + graded, plain + plain_graded):
        assert torch.equal(s1, s2) and torch.equal(u1, u2)
    assert 0.05 < float(fused[0][0].mean()) < 0.95


class _PythonFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        return x * 2

    @staticmethod
    def backward(ctx, grad):
        return grad * 2


class UnsavableNet(torch.nn.Module):
    """A Python autograd node (as the spiking neurons were before engine.is_recording): TorchScript cannot save it."""
    in_channels = 1

    def forward(self, x):
        return _PythonFunction.apply(x)


class BranchingNet(torch.nn.Module):
    """Python control flow on a value of the data: torch.export cannot record it."""
    in_channels = 1

    def forward(self, x):
        return x * 2 if float(x.mean()) > 0.5 else x


class NoisyNet(torch.nn.Module):
    """A fresh random draw per call: the recorded module's output differs from the forward's."""
    in_channels = 1

    def forward(self, x):
        return x + torch.rand_like(x)


@pytest.mark.parametrize("net, fmt, match", [
    (UnsavableNet(), "torchscript", r"UnsavableNet cannot be written as --format torchscript: saving or loading it "
                                    r"failed: RuntimeError: Could not export Python function call '_PythonFunction'"),
    (BranchingNet(), "export", r"BranchingNet cannot be written as --format export: torch\.export\.export failed: "),
    (NoisyNet(), "torchscript", r"NoisyNet cannot be written as --format torchscript: the recorded module's output "
                                r"differs from our forward \(max \|difference\| [0-9.e-]+\); nothing was written"),
])
def test_networks_that_cannot_be_recorded_are_named_and_nothing_is_written(tmp_path, net, fmt, match):
    out = tmp_path / "net.out"
    with pytest.raises(ConfigError, match=match):
        export_torch(net, out, fmt, (8, 8))
    assert list(tmp_path.iterdir()) == []


def test_noise_level_is_required_exactly_where_the_network_takes_one(tmp_path, capsys):
    ffdnet, dncnn = _network_file(tmp_path, "ffdnet"), _network_file(tmp_path, "dncnn")
    with pytest.raises(ConfigError, match=r"FFDNet takes a noise level: give --sigma S \(0-255\)"):
        main([str(ffdnet), str(tmp_path / "a.pt"), "--format", "torchscript"])
    with pytest.raises(ConfigError, match=r"--sigma 25 is not allowed: DnCNN takes no noise level"):
        main([str(dncnn), str(tmp_path / "a.pt"), "--format", "export", "--sigma", "25"])
    with pytest.raises(SystemExit) as exit_:
        main([str(dncnn), str(tmp_path / "a.nir"), "--format", "nir", "--sigma", "25"])
    assert exit_.value.code == 2 and "--sigma is for --format torchscript or export" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dncnn.pt", "ffdnet.pt"]
