"""Spiking students and their ANN twins: training, hints paths, encoding, pickling, determinism."""
from __future__ import annotations

import inspect
import pickle
import re
import sys
import types

import pytest
import torch
from jsonargparse import ArgumentParser
from torch import nn

from distill.errors import ConfigError
from students.base import SpikingRestorer
from students.encoding import decode, decode_weights, rate_encode
from students.esdnet import ESDNet
from students.neurons import LIF, MultiThresholdIF, SpikingNeuron
from students.probes import firing_rates, probing
from students.spiker_ir import SpikerIR
from students.spiking_dncnn import SpikingDnCNN
from students.spiking_unet import SpikingUNet
from teachers.twins import DnCNNTwin, ESDNetTwin, SpikerIRTwin, UNetTwin
from teachers.unet import UNet

TINY = {
    "dncnn": (SpikingDnCNN, {"features": 8, "depth": 5}),
    "unet": (SpikingUNet, {"preset": "tiny"}),
    "esdnet": (ESDNet, {"in_channels": 1, "preset": "tiny"}),
    "spiker_ir": (SpikerIR, {"in_channels": 1, "preset": "tiny"}),
}


pytestmark = pytest.mark.usefixtures("single_thread")


def make(name: str, **overrides):
    cls, kwargs = TINY[name]
    return cls(**{**kwargs, **overrides})

TWINS = {
    "dncnn": lambda: DnCNNTwin(features=8, depth=5),
    "unet": lambda: UNetTwin(preset="tiny"),
    "esdnet": lambda: ESDNetTwin(in_channels=1, preset="tiny"),
    "spiker_ir": lambda: SpikerIRTwin(in_channels=1, preset="tiny"),
}


def _batch(channels: int = 1, size: int = 16):
    g = torch.Generator().manual_seed(0)
    target = torch.rand(2, channels, size, size, generator=g)
    return target + 0.1 * torch.randn(2, channels, size, size, generator=g), target


@pytest.mark.parametrize("name", list(TINY))
def test_student_trains_and_loss_falls(name):
    torch.manual_seed(0)
    model = make(name, learn_threshold=True)
    noisy, target = _batch()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(6):
        opt.zero_grad()
        loss = nn.functional.mse_loss(model(noisy), target)
        loss.backward()
        assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
        opt.step()
        losses.append(loss.item())
    with torch.no_grad():
        final = float(nn.functional.mse_loss(model(noisy), target))
    assert final < losses[0], losses + [final]
    assert model.timesteps == 4 and model.in_channels == 1
    with probing(model):
        model(noisy)
    rates = firing_rates(model)
    assert rates and all(0.0 <= r <= 1.0 for r in rates.values())


@pytest.mark.parametrize("name", list(TINY))
def test_zero_tail_starts_as_identity_and_the_body_learns_after_one_step(name):
    noisy, target = _batch()
    torch.manual_seed(0)
    model = make(name)
    assert torch.equal(model(noisy), noisy)  # the default: a zero output conv
    assert not torch.equal(make(name, zero_tail=False)(noisy), noisy)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(2):  # step 1 moves the output conv; step 2 reaches the body through it
        opt.zero_grad()
        (model(noisy) - target).abs().mean().backward()
        opt.step()
    first = next(p for n, p in model.named_parameters() if "weight" in n)
    assert first.grad.abs().sum() > 0 and not torch.equal(model(noisy), noisy)


@pytest.mark.parametrize("name", list(TINY))
def test_student_rgb_shapes_odd_size_and_pickle(name):
    torch.manual_seed(0)
    model = make(name, in_channels=3, zero_tail=False).eval()  # zero_tail would make y == x for any weights
    x = torch.rand(1, 3, 13, 11)
    with torch.no_grad():
        y = model(x)
        assert y.shape == x.shape
        assert float((y - x).abs().max()) > 1e-3  # the network really contributes
        back = pickle.loads(pickle.dumps(model))
        torch.testing.assert_close(back(x), y)  # whole student pickles and is deterministic
        torch.testing.assert_close(model(x), y)


@pytest.mark.parametrize("name", list(TINY))
def test_twin_matches_student_parameters_and_has_no_neurons(name):
    torch.manual_seed(0)
    student = make(name, learn_threshold=True)
    twin = TWINS[name]()
    neuron_params = {
        f"{path}.{leaf}" for path, m in student.named_modules() if isinstance(m, SpikingNeuron)
        for leaf, _ in m.named_parameters(recurse=False)
    }
    assert neuron_params  # the comparison below really removes something
    s_shapes = {k: v.shape for k, v in student.named_parameters() if k not in neuron_params}
    t_shapes = {k: v.shape for k, v in twin.named_parameters()}
    assert s_shapes == t_shapes
    assert not any(isinstance(m, SpikingNeuron) for m in twin.modules())
    assert twin.timesteps == 1 and twin.checkpoint_path is None
    missing, unexpected = student.load_state_dict(twin.state_dict(), strict=False)
    assert not unexpected and all(k.rsplit(".", 1)[-1] in ("threshold", "beta") for k in missing)


def test_dncnn_twin_is_a_plain_dncnn():
    torch.manual_seed(0)
    twin = DnCNNTwin(features=8, depth=4, norm="none").eval()
    layers = [twin.head.conv.layer, nn.ReLU()]
    for b in twin.blocks:
        layers += [b.conv.layer, nn.ReLU()]
    plain = nn.Sequential(*layers, twin.tail)
    x = torch.rand(2, 1, 9, 9)
    torch.testing.assert_close(twin(x), x + plain(x))


def test_hint_paths_give_time_major_features():
    torch.manual_seed(0)
    cases = [
        (SpikingDnCNN(features=8, depth=6), ["blocks.3.neuron", "blocks.3.conv", "blocks.3.bn", "head"]),
        (SpikingUNet(preset="tiny"), ["encoders.0", "encoders.2.act2", "decoders.0", "decoders.1.conv1"]),
        (ESDNet(in_channels=1, preset="tiny"), ["encoder.0", "decoder.0", "decoder.2", "up.1", "reduce"]),
        (SpikerIR(in_channels=1, preset="tiny"), ["decoder.0", "decoder.1", "decoder.2", "encoder.3", "fuse.2"]),
    ]
    for model, paths in cases:
        modules = dict(model.named_modules())
        seen = {}
        for p in paths:
            modules[p].register_forward_hook(lambda m, i, o, p=p: seen.__setitem__(p, o.shape))
        model(torch.rand(2, 1, 16, 16))
        assert set(seen) == set(paths), type(model).__name__
        assert all(s[0] == model.timesteps and s[1] == 2 and len(s) == 5 for s in seen.values()), seen


def test_direct_encoding_runs_first_conv_once_on_the_batch():
    model = SpikingDnCNN(features=4, depth=3, timesteps=4)
    calls = []
    model.head.conv.layer.register_forward_hook(lambda m, i, o: calls.append(i[0].shape[0]))
    model(torch.rand(3, 1, 8, 8))
    assert calls == [3]


def test_rate_encoding_is_seeded_and_deterministic():
    x = torch.rand(2, 1, 8, 8)
    s1, s2 = rate_encode(x, 50, seed=3), rate_encode(x, 50, seed=3)
    assert torch.equal(s1, s2) and set(s1.unique().tolist()) <= {0.0, 1.0}
    assert (s1.mean(0) - x).abs().mean() < 0.1
    torch.manual_seed(0)
    model = SpikingDnCNN(features=4, depth=3, encoding="rate", rate_seed=1).eval()
    with torch.no_grad():
        torch.testing.assert_close(model(x), model(x))


def test_decoding_mean_and_membrane():
    seq = torch.arange(4.0).reshape(4, 1)
    # expected weights written out by hand: mean = 1/T each; membrane = beta**(T-1-t), normalised
    # (T = 4, beta = 0.5: 1/8, 1/4, 1/2, 1 over their sum 15/8 = 1/15, 2/15, 4/15, 8/15)
    torch.testing.assert_close(decode_weights(4, "mean"), torch.tensor([0.25, 0.25, 0.25, 0.25]))
    torch.testing.assert_close(decode_weights(4, "membrane", 0.5), torch.tensor([1.0, 2.0, 4.0, 8.0]) / 15)
    assert float(decode(seq, "mean")) == pytest.approx(1.5)  # (0 + 1 + 2 + 3) / 4
    assert float(decode(seq, "membrane", 0.5)) == pytest.approx((0 * 1 + 1 * 2 + 2 * 4 + 3 * 8) / 15)
    torch.testing.assert_close(decode(torch.arange(8.0).reshape(4, 2), "membrane", 0.5),
                               torch.tensor([(0 * 1 + 2 * 2 + 4 * 4 + 6 * 8) / 15, (1 * 1 + 3 * 2 + 5 * 4 + 7 * 8) / 15]))
    assert float(decode(torch.full((4, 1), 2.0), "membrane", 0.5)) == pytest.approx(2.0)
    torch.manual_seed(0)
    model = SpikingDnCNN(features=4, depth=3, decoding="membrane")
    assert model(torch.rand(1, 1, 8, 8)).shape == (1, 1, 8, 8)


def test_fresh_models_with_same_seed_agree():
    x = torch.rand(1, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    outs = []
    for seed in (0, 0, 1):
        torch.manual_seed(seed)
        with torch.no_grad():  # zero_tail=False: with the default zero output conv every seed gives y == x
            outs.append(SpikingUNet(preset="tiny", zero_tail=False).eval()(x))
    assert float((outs[0] - x).abs().max()) > 1e-3
    torch.testing.assert_close(outs[0], outs[1])
    assert not torch.allclose(outs[0], outs[2])  # the seed really sets the weights


@pytest.mark.parametrize("cls", [SpikingDnCNN, SpikingUNet, ESDNet, SpikerIR])
@pytest.mark.parametrize("T", [0, -2, 1.5])
def test_timesteps_validated(cls, T):
    with pytest.raises(ConfigError, match=rf"timesteps={T!r}.*integer >= 1"):
        cls(timesteps=T)


# what a recipe gets when it leaves these out: jsonargparse reads each student's signature and follows
# **spiking into SpikingRestorer's, so an option whose default is the student's own must stay explicit
RECIPE_DEFAULTS = {
    SpikingDnCNN: {"in_channels": 1, "neuron": "lif", "beta": 0.9, "threshold": 1.0, "reset_mechanism": "subtract"},
    SpikerIR: {"in_channels": 3, "neuron": "lif", "beta": 0.5, "threshold": 1.0, "reset_mechanism": "subtract"},
    ESDNet: {"in_channels": 3, "neuron": "lif", "beta": 0.5, "threshold": 0.15, "reset_mechanism": "zero"},
    SpikingUNet: {"in_channels": 1, "neuron": "multi_threshold", "beta": 0.9, "threshold": 1.0,
                  "reset_mechanism": "subtract"},
}


@pytest.mark.parametrize("cls", list(RECIPE_DEFAULTS), ids=lambda c: c.__name__)
def test_recipes_see_every_shared_option_with_the_students_own_defaults(cls):
    parser = ArgumentParser()
    parser.add_class_arguments(cls, "student")
    defaults = parser.get_defaults().student.as_dict()
    assert set(inspect.signature(SpikingRestorer).parameters) <= set(defaults)
    assert {k: defaults[k] for k in RECIPE_DEFAULTS[cls]} == RECIPE_DEFAULTS[cls]


@pytest.mark.parametrize("cls", list(RECIPE_DEFAULTS), ids=lambda c: c.__name__)
def test_students_built_without_options_have_their_own_default_neurons(cls):
    expected = RECIPE_DEFAULTS[cls]
    model = cls(features=4, depth=3) if cls is SpikingDnCNN else cls(preset="tiny")
    assert model.in_channels == expected["in_channels"] and model.neuron_kind == expected["neuron"]
    neurons = [m for m in model.modules() if isinstance(m, SpikingNeuron)]
    kind = {"lif": LIF, "multi_threshold": MultiThresholdIF}[expected["neuron"]]
    assert neurons and all(type(n) is kind for n in neurons)
    assert all(float(n.threshold) == pytest.approx(expected["threshold"]) for n in neurons)
    if kind is LIF:
        assert all(float(n.beta) == pytest.approx(expected["beta"]) for n in neurons)
        assert all(n.reset_mechanism == expected["reset_mechanism"] for n in neurons)


@pytest.mark.parametrize("name", list(TINY))
@pytest.mark.parametrize(
    "option,value",
    [("timesteps", 0), ("in_channels", 0), ("neuron", "bogus"), ("threshold", -1.0), ("encoding", "bogus"),
     ("decoding", "bogus"), ("decode_beta", 0.0)],
)
def test_bad_shared_option_is_a_config_error_naming_it(name, option, value):
    with pytest.raises(ConfigError, match=re.escape(f"{option}={value!r}")):
        make(name, **{option: value})


@pytest.mark.parametrize(
    "make,pattern",
    [
        (lambda: ESDNet(preset="tiny", checkpoint_segments=2), r"checkpoint_segments=2.*None"),
        (lambda: SpikingUNet(preset="huge"), r"preset='huge'.*full.*tiny"),
        (lambda: SpikerIR(preset="big"), r"preset='big'"),
        (lambda: SpikingDnCNN(norm="ln"), r"norm='ln'.*bn.*tdbn.*none"),
        (lambda: SpikingDnCNN(encoding="poisson"), r"encoding='poisson'.*direct.*rate"),
        (lambda: SpikingDnCNN(decoding="max"), r"decoding='max'.*mean.*membrane"),
        (lambda: SpikingDnCNN(neuron="alif"), r"neuron='alif'"),
        (lambda: SpikingDnCNN(depth=1), r"depth=1"),
        (lambda: SpikerIR(channels=(8, 16)), r"channels=\(8, 16\)"),
    ],
)
def test_model_config_errors(make, pattern):
    with pytest.raises(ConfigError, match=pattern):
        make()


def test_wrong_input_channels_is_a_clear_error():
    with pytest.raises(ValueError, match=r"expects \[B, 1, H, W\].*\(2, 3, 8, 8\)"):
        SpikingDnCNN(features=4, depth=3)(torch.rand(2, 3, 8, 8))


def test_tdbn_option_and_neuron_kinds():
    torch.manual_seed(0)
    model = SpikingDnCNN(features=4, depth=3, norm="tdbn", threshold=0.5, neuron="if")
    assert model.blocks[0].bn.layer.weight[0].item() == pytest.approx(0.5)
    assert model(torch.rand(1, 1, 8, 8)).shape == (1, 1, 8, 8)
    mt = SpikingDnCNN(features=4, depth=3, neuron="multi_threshold")
    assert mt(torch.rand(1, 1, 8, 8)).shape == (1, 1, 8, 8)


def test_unet_teacher_names_mirror_spiking_unet_and_load_lazily(monkeypatch):
    ann = UNet(preset="tiny", width=0.75)
    snn = SpikingUNet(preset="tiny", width=0.75)
    assert {k: v.shape for k, v in ann.named_parameters()} == {
        k.replace(".layer.", "."): v.shape for k, v in snn.named_parameters()
    }
    assert UNet(preset="full").channels == [64, 128, 256, 512, 1024]
    assert ann(torch.rand(1, 1, 13, 10)).shape == (1, 1, 13, 10)
    calls = []
    fake = types.ModuleType("teachers.weights")
    fake.load_weights = lambda model, path: calls.append(path) or f"/resolved/{path}"
    monkeypatch.setitem(sys.modules, "teachers.weights", fake)
    loaded = UNet(preset="tiny", checkpoint="unet.pt")
    assert calls == ["unet.pt"] and loaded.checkpoint_path == "/resolved/unet.pt"
    assert UNetTwin(preset="tiny", checkpoint="twin.pt").checkpoint_path == "/resolved/twin.pt"
