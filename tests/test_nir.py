"""NIR export of spiking students (students.nir_graph): graph layout, metadata, clear refusals, the
`spikedistill export --format nir` command, and the graph run by an independent simulator (norse)."""
import re

import nir
import numpy as np
import pytest
import torch
from skimage import data

from distill.export import FORMAT, main
from spikedistill_core.errors import ConfigError
from students.esdnet import ESDNet
from students.neurons import SpikingNeuron
from students.nir_graph import DT, to_nir
from students.spiker_ir import SpikerIR
from students.spiking_dncnn import SpikingDnCNN
from students.spiking_unet import SpikingUNet

T, SIZE = 4, 32
IF_ZERO = dict(neuron="if", reset_mechanism="zero", threshold=0.3)
LIF_WARM = dict(neuron="lif", beta=0.8, threshold=0.3, reset_mechanism="zero", init_membrane=0.5, decoding="membrane")


def _student(norm: str = "bn", **spiking) -> SpikingDnCNN:
    """A tiny student with random weights and batch-norm statistics (so that the folding matters)."""
    torch.manual_seed(0)
    net = SpikingDnCNN(1, 6, 4, norm=norm, timesteps=T, zero_tail=False, **spiking)
    for block in net.blocks:
        if hasattr(block, "bn"):
            bn = block.bn.layer
            bn.running_mean.uniform_(-0.2, 0.2)
            bn.running_var.uniform_(0.5, 2.0)
            bn.weight.data.uniform_(0.5, 1.5)
            bn.bias.data.uniform_(-0.1, 0.3)
    return net.eval()


@pytest.fixture(scope="module")
def noisy_camera() -> torch.Tensor:
    """A 32x32 crop of skimage's camera with Gaussian noise sigma=25 (fixed seed), as [1, 1, H, W] in [0, 1]."""
    clean = torch.from_numpy(data.camera()[200:200 + SIZE, 220:220 + SIZE].astype(np.float32) / 255.0)
    noise = torch.randn(clean.shape, generator=torch.Generator().manual_seed(25)) * (25.0 / 255.0)
    return (clean + noise)[None, None]


def test_graph_covers_every_layer_and_the_residual_edge():
    graph = to_nir(_student(**IF_ZERO), (SIZE, SIZE))
    layers = ["head", "blocks.0", "blocks.1"]
    assert set(graph.nodes) == {"input", "tail", "output"} | {f"{p}.{k}" for p in layers for k in ("conv", "neuron")}
    assert ("input", "output") in graph.edges and ("tail", "output") in graph.edges
    assert isinstance(graph.nodes["blocks.1.neuron"], nir.IF) and isinstance(graph.nodes["tail"], nir.Conv2d)
    assert (graph.metadata["dt"], graph.metadata["timesteps"]) == (DT, T)
    np.testing.assert_allclose(graph.metadata["decode_weights"], np.full(T, 1 / T))


def test_lif_maps_beta_to_tau_and_init_membrane_to_the_resting_potential():
    net = _student(norm="none", **LIF_WARM)
    node = to_nir(net, (SIZE, SIZE)).nodes["head.neuron"]
    assert isinstance(node, nir.LIF) and node.tau.shape == (6, SIZE, SIZE)
    np.testing.assert_allclose(node.tau, DT / (1 - 0.8), rtol=1e-6)
    np.testing.assert_allclose(node.v_leak, 0.5 * 0.3, rtol=1e-6)
    np.testing.assert_allclose(node.r, 1.0)
    conv = to_nir(net, (SIZE, SIZE)).nodes["head.conv"]  # r = tau / dt is folded into the conv, v_leak taken off
    np.testing.assert_allclose(conv.weight, net.head.conv.layer.weight.detach().numpy() * 5, rtol=1e-5)
    np.testing.assert_allclose(conv.bias, net.head.conv.layer.bias.detach().numpy() * 5 - 0.15, rtol=1e-5, atol=1e-6)


def test_graph_survives_nirs_own_writer(tmp_path):
    graph = to_nir(_student(**LIF_WARM), (SIZE, SIZE))
    nir.write(tmp_path / "g.nir", graph)
    back = nir.read(tmp_path / "g.nir")
    assert set(back.nodes) == set(graph.nodes) and sorted(back.edges) == sorted(graph.edges)
    assert (float(back.metadata["dt"]), int(back.metadata["timesteps"])) == (DT, T)


@pytest.mark.parametrize("options, match", [
    (dict(neuron="if"), r"head\.neuron: reset_mechanism='subtract' cannot be exported"),
    (dict(neuron="multi_threshold"), r"head\.neuron \(MultiThresholdIF\): NIR export supports IF and LIF"),
    (dict(neuron="relu", timesteps=1), r"head\.neuron \(ReLU\)"),
    (dict(IF_ZERO, init_membrane=0.5), r"head\.neuron: init_membrane=0\.5 cannot be exported for an IF neuron"),
    (dict(IF_ZERO, encoding="rate"), r"head\.conv: encoding='rate' cannot be exported"),
])
def test_what_nir_cannot_express_is_refused_by_name(options, match):
    options = {"timesteps": T, **options}
    net = SpikingDnCNN(1, 4, 3, norm="none", **options).eval()
    with pytest.raises(ConfigError, match=match):
        to_nir(net, (8, 8))


def test_other_networks_are_refused():
    with pytest.raises(ConfigError, match="Conv2d: NIR export is for the spiking students only"):
        to_nir(torch.nn.Conv2d(1, 1, 3))
    with pytest.raises(ConfigError, match=r"input_size=\(0, 8\) is not allowed"):
        to_nir(_student(**IF_ZERO), (0, 8))


TRANSPOSED = r"\(ConvTranspose2d\): a transposed convolution doubles the map; NIR 1\.0 has no transposed-convolution"
GRADED = r"\(MultiThresholdIF\): NIR export supports IF and LIF neurons only; NIR has no graded"


@pytest.mark.parametrize("build, messages", [
    # SpikerIR: even with NIR-ready neurons the 2x2 transposed conv of the first up path stops it
    (lambda: SpikerIR(1, preset="tiny", reset_mechanism="zero"),
     [r"^SpikerIR cannot be exported to NIR: up\.0\.1\.layer " + TRANSPOSED]),
    # ... and with the default (subtracting) neurons both problems are named, the first module first
    (lambda: SpikerIR(1, preset="tiny"), [r"NIR: encoder\.0\.0\.neuron1: reset_mechanism='subtract'",
                                          r"; up\.0\.1\.layer " + TRANSPOSED]),
    # Spiking-UNet as converted: graded neurons, then the transposed conv of the first decoder
    (lambda: SpikingUNet(1, preset="tiny"),
     [r"NIR: encoders\.0\.act1 " + GRADED, r"; decoders\.0\.up\.layer " + TRANSPOSED]),
    (lambda: SpikingUNet(1, preset="tiny", neuron="if", reset_mechanism="zero"),
     [r"NIR: decoders\.0\.up\.layer " + TRANSPOSED]),
    (lambda: SpikingUNet(1, levels=1, base_channels=4), [r"NIR: encoders\.0\.act1 " + GRADED]),
    (lambda: SpikingUNet(1, levels=1, base_channels=4, neuron="relu", timesteps=1),
     [r"encoders\.0\.act1 \(ReLU\): NIR export supports IF and LIF neurons only; it is an ANN activation"]),
    # ESDNet: attention in every block, bilinear up-sampling, the gated refinement head
    (lambda: ESDNet(3, preset="tiny"), [
        r"NIR: encoder\.0\.0\.attention \(MultiDimensionalAttention\): attention multiplies the membrane input",
        r"; up\.0\.0\.layer \(Upsample\): up-sampling doubles the map",
        r"; refinement \(RefinementHead\): the refinement head multiplies features"]),
], ids=["spiker-ir", "spiker-ir-default", "unet-converted", "unet-if", "unet-1-level-graded", "unet-relu-twin",
        "esdnet"])
def test_students_nir_cannot_express_are_refused_by_module(build, messages):
    with pytest.raises(ConfigError) as refused:
        to_nir(build().eval(), (16, 16))
    for message in messages:
        assert re.search(message, str(refused.value)), str(refused.value)
    assert "neuron2" not in str(refused.value)  # one module per kind of problem, not every neuron


def test_export_command_writes_nir_from_a_network_file(tmp_path, capsys):
    net = _student(**IF_ZERO)
    record = {"format": FORMAT, "class_path": "students.spiking_dncnn.SpikingDnCNN",
              "init_args": dict(in_channels=1, features=6, depth=4, timesteps=T, zero_tail=False, **IF_ZERO),
              "state_dict": net.state_dict(), "provenance": {}}
    torch.save(record, tmp_path / "student.pt")
    out = tmp_path / "student.nir"
    main([str(tmp_path / "student.pt"), str(out), "--format", "nir", "--input-size", "16", "24"])
    assert "a NIR graph of 9 nodes" in capsys.readouterr().out
    graph = nir.read(out)
    assert tuple(graph.nodes["input"].input_type["input"]) == (1, 16, 24)
    np.testing.assert_allclose(graph.nodes["tail"].weight, net.tail.weight.detach().numpy())
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temporary file left


def _spikes_by_layer(net: torch.nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The project's own forward, and each neuron's spikes [T, B, ...] by module path."""
    spikes, hooks = {}, []
    for name, module in net.named_modules():
        if isinstance(module, SpikingNeuron):
            hooks.append(module.register_forward_hook(lambda m, i, o, name=name: spikes.__setitem__(name, o)))
    with torch.no_grad():
        y = net(x)
    for hook in hooks:
        hook.remove()
    return y, spikes


def _run_norse(graph: nir.NIRGraph, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """norse's run of the graph: the same image each step, outputs weighted by the metadata's decode weights."""
    from norse.torch import from_nir

    simulator = from_nir(graph, dt=float(graph.metadata["dt"]))
    weights = graph.metadata["decode_weights"]
    neurons = [name for name, node in graph.nodes.items() if isinstance(node, (nir.IF, nir.LIF))]
    state, out, spikes = None, 0.0, {}
    with torch.no_grad():
        for t in range(int(graph.metadata["timesteps"])):
            y, state = simulator(x, state)
            out = out + float(weights[t]) * y
            for name in neurons:
                spikes.setdefault(name, []).append(state.cache[name.replace(".", "_")])
    return out, {k: torch.stack(v) for k, v in spikes.items()}


LIF_FLAT = dict(LIF_WARM, beta=0.0, threshold=0.15)


def _one_level_unet(**spiking) -> SpikingUNet:
    """Spiking-UNet with levels=1 (no pooling, no up path: the only U-Net NIR can express), random weights."""
    torch.manual_seed(0)
    return SpikingUNet(1, base_channels=6, levels=1, timesteps=T, zero_tail=False, **spiking).eval()


@pytest.mark.parametrize("build", [
    lambda: _student("bn", **IF_ZERO),
    lambda: _student("bn", **LIF_WARM),
    lambda: _student("none", **LIF_FLAT),
    lambda: _one_level_unet(**IF_ZERO),
    lambda: _one_level_unet(**dict(LIF_WARM, threshold=0.1)),
], ids=["dncnn-if-bn", "dncnn-lif-warm-membrane-decoding", "dncnn-lif-beta0", "unet-1-level-if", "unet-1-level-lif"])
def test_norse_runs_the_exported_graph_as_our_forward(noisy_camera, tmp_path, build):
    pytest.importorskip("norse.torch", reason="norse (the independent NIR reader) is a test extra: "
                                              "pip install --no-deps norse==1.1.0 nirtorch==2.6")
    net = build()
    nir.write(tmp_path / "g.nir", to_nir(net, (SIZE, SIZE)))
    ours, our_spikes = _spikes_by_layer(net, noisy_camera)
    theirs, their_spikes = _run_norse(nir.read(tmp_path / "g.nir"), noisy_camera)
    assert set(our_spikes) == set(their_spikes)
    for name, spikes in our_spikes.items():
        rate = float(spikes.mean())
        assert 0.02 < rate < 0.98, f"{name} fires at {rate:.3f}: the comparison would be trivial"
        agreement = float((spikes == their_spikes[name]).float().mean())
        assert agreement >= 0.99, f"{name}: {agreement:.4f} of the spikes agree"
    psnr = -10 * torch.log10((ours - theirs).pow(2).mean().clamp_min(1e-20))
    assert psnr >= 40, f"output PSNR between norse and our forward is {psnr:.1f} dB"
