"""The fused multi-step engine against a plain snntorch per-timestep loop, and time chunking."""
from __future__ import annotations

import pytest
import snntorch as snn
import torch
from torch import nn

from students.engine import TimeDistributed, is_recomputing, run_over_time
from students.neurons import IF, LIF
from students.probes import probing, spike_counts
from students.spiking_dncnn import SpikingDnCNN
from students.spiking_unet import SpikingUNet
from students.surrogates import ATan, FastSigmoid, StraightThrough, Triangle

T, B, C, H, W = 5, 2, 3, 6, 6


pytestmark = pytest.mark.usefixtures("single_thread")


class _Net(nn.Module):
    """conv -> neuron -> conv, run either with the fused neuron or a snntorch loop."""

    def __init__(self, neuron: nn.Module):
        super().__init__()
        torch.manual_seed(0)
        self.conv1 = TimeDistributed(nn.Conv2d(C, 4, 3, padding=1))
        self.neuron = neuron
        self.conv2 = TimeDistributed(nn.Conv2d(4, 2, 3, padding=1))

    def forward(self, x):
        return self.conv2(self.neuron(self.conv1(x)))


class _SnnTorchLoop(nn.Module):
    def __init__(self, leaky: snn.Leaky):
        super().__init__()
        self.leaky = leaky

    def forward(self, x):
        mem = self.leaky.reset_mem()
        out = []
        for t in range(x.shape[0]):
            spk, mem = self.leaky(x[t], mem)
            out.append(spk)
        return torch.stack(out)


def _run(net, x, coef):
    x = x.clone().requires_grad_(True)
    y = net(x)
    (y * coef).sum().backward()
    grads = {n: p.grad.clone() for n, p in net.named_parameters()}
    return y.detach(), x.grad.clone(), grads


_CASES = [
    (surrogate, reset, True)
    for surrogate in (ATan(), ATan(alpha=3.0), FastSigmoid(10.0), Triangle(0.8), StraightThrough())
    for reset in ("subtract", "zero")
] + [(ATan(), "subtract", False), (ATan(), "zero", False)]


@pytest.mark.parametrize("surrogate,reset,learn", _CASES, ids=lambda v: repr(v))
def test_lif_matches_snntorch_loop(surrogate, reset, learn):
    beta, thr = 0.8, 0.6
    ours = _Net(LIF(beta, threshold=thr, spike_grad=surrogate, reset_mechanism=reset, learn_beta=learn,
                    learn_threshold=learn))
    ref = _Net(
        _SnnTorchLoop(
            snn.Leaky(
                beta=torch.tensor(beta), threshold=torch.tensor(thr), spike_grad=surrogate,
                reset_mechanism=reset, learn_beta=learn, learn_threshold=learn,
            )
        )
    )
    ref.load_state_dict({k.replace("neuron.", "neuron.leaky."): v for k, v in ours.state_dict().items()}, strict=False)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(T, B, C, H, W, generator=g) * 2
    coef = torch.randn(T, B, 2, H, W, generator=g)
    y1, gx1, gp1 = _run(ours, x, coef)
    y2, gx2, gp2 = _run(ref, x, coef)
    assert 0.05 < float((ours.neuron(ours.conv1(x)) != 0).float().mean()) < 0.95  # neurons really spike
    torch.testing.assert_close(y1, y2, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(gx1, gx2, rtol=1e-4, atol=1e-5)
    for name, grad in gp1.items():
        torch.testing.assert_close(grad, gp2[name.replace("neuron.", "neuron.leaky.")], rtol=1e-4, atol=1e-5)
    if learn:
        assert {"neuron.beta", "neuron.threshold"} <= set(gp1)
        assert float(gp1["neuron.beta"].abs()) > 0 and float(gp1["neuron.threshold"].abs()) > 0


def test_if_matches_snntorch_leaky_with_beta_one():
    ours = _Net(IF(threshold=0.7, spike_grad=FastSigmoid(), learn_threshold=True))
    ref = _Net(_SnnTorchLoop(snn.Leaky(beta=1.0, threshold=torch.tensor(0.7), spike_grad=FastSigmoid(), learn_threshold=True)))
    ref.load_state_dict({k.replace("neuron.", "neuron.leaky."): v for k, v in ours.state_dict().items()}, strict=False)
    x = torch.randn(T, B, C, H, W, generator=torch.Generator().manual_seed(2))
    coef = torch.randn(T, B, 2, H, W, generator=torch.Generator().manual_seed(3))
    y1, gx1, gp1 = _run(ours, x, coef)
    y2, gx2, gp2 = _run(ref, x, coef)
    torch.testing.assert_close(y1, y2)
    torch.testing.assert_close(gx1, gx2, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(gp1["neuron.threshold"], gp2["neuron.leaky.threshold"], rtol=1e-4, atol=1e-5)


def test_membrane_is_snntorch_mem_before_reset():
    n = LIF(0.9, threshold=0.5, record_membrane=True)
    leaky = snn.Leaky(beta=0.9, threshold=0.5)
    x = torch.randn(T, 4, 3, generator=torch.Generator().manual_seed(4))
    n(x)
    mem, mems = leaky.reset_mem(), []
    for t in range(T):
        _, mem = leaky(x[t], mem)
        mems.append(mem)
    torch.testing.assert_close(n.membrane, torch.stack(mems))


def test_membrane_gradient_flows_for_hints():
    n = LIF(0.9, threshold=0.5, record_membrane=True)
    x = torch.randn(T, 4, 3, requires_grad=True)
    n(x)
    n.membrane.pow(2).sum().backward()
    assert x.grad is not None and float(x.grad.abs().sum()) > 0


def test_two_successive_calls_are_independent():
    torch.manual_seed(0)
    model = SpikingDnCNN(features=6, depth=4, timesteps=3)
    x = torch.rand(2, 1, 8, 8)
    results = []
    for _ in range(2):
        model.zero_grad()
        y = model(x)
        y.square().mean().backward()  # a second backward through a stale graph would raise
        results.append((y.detach(), [p.grad.clone() for p in model.parameters()]))
    torch.testing.assert_close(results[0][0], results[1][0])
    for a, b in zip(results[0][1], results[1][1]):
        torch.testing.assert_close(a, b)


def test_time_distributed_folds_and_broadcast_path():
    conv = nn.Conv2d(2, 3, 3, padding=1)
    td = TimeDistributed(conv)
    x = torch.randn(4, 2, 2, 5, 5)
    torch.testing.assert_close(td(x), torch.stack([conv(x[t]) for t in range(4)]))
    xb = x[0].unsqueeze(0).expand(4, *x.shape[1:])
    yb = td(xb)
    assert yb.stride(0) == 0  # computed once, still broadcast
    torch.testing.assert_close(yb, torch.stack([conv(x[0])] * 4))


def _grads(model, x):
    model.zero_grad()
    y = model(x)
    y.square().mean().backward()
    return y.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}


def _assert_every_gradient_nonzero(grads):
    """The whole body learns. With ``zero_tail`` (the students' default) the output conv is zero, so every
    gradient but the output bias's is exactly zero and "chunked == unchunked" would compare zero with zero."""
    dead = [name for name, g in grads.items() if not float(g.norm()) > 0]
    assert not dead, f"parameters without a gradient: {dead}"


def _assert_same_gradients(g0, g1):
    """Equal per parameter, relative to that parameter's own scale (deep U-Net gradients are ~1e-8)."""
    assert g0.keys() == g1.keys()
    for name in g0:
        scale = float(g0[name].abs().max())
        torch.testing.assert_close(g1[name], g0[name], rtol=1e-4, atol=1e-5 * scale, msg=lambda m: f"{name}: {m}")


@pytest.mark.parametrize("neuron", ["multi_threshold", "if"])
@pytest.mark.parametrize("segments", [2, 5])
def test_checkpoint_segments_same_gradients_unet(segments, neuron):
    torch.manual_seed(0)
    # zero_tail=False and a low threshold: every layer spikes and gets a gradient
    model = SpikingUNet(preset="tiny", base_channels=4, timesteps=5, neuron=neuron, threshold=0.25,
                        learn_threshold=True, zero_tail=False)
    x = torch.rand(2, 1, 8, 8)
    y0, g0 = _grads(model, x)
    _assert_every_gradient_nonzero(g0)
    assert float((y0 - x).abs().max()) > 1e-3  # not the identity
    model.checkpoint_segments = segments
    y1, g1 = _grads(model, x)
    torch.testing.assert_close(y0, y1)
    _assert_same_gradients(g0, g1)


def test_checkpoint_segments_dncnn_eval_bn_and_side_effects():
    torch.manual_seed(0)
    model = SpikingDnCNN(features=6, depth=4, timesteps=4, neuron="lif", threshold=0.5, learn_beta=True,
                         zero_tail=False)
    with torch.no_grad():  # give BN some running statistics
        model.train()
        model(torch.rand(2, 1, 8, 8))
    model.eval()
    for n in (model.head.neuron, model.blocks[1].neuron):
        n.record_membrane = True
    x = torch.rand(2, 1, 8, 8)
    with probing(model):
        y0, g0 = _grads(model, x)
    _assert_every_gradient_nonzero(g0)
    counts0, mem0 = spike_counts(model), model.blocks[1].neuron.membrane.detach()
    model.checkpoint_segments = 3
    with probing(model):
        y1, g1 = _grads(model, x)
    torch.testing.assert_close(y0, y1)
    _assert_same_gradients(g0, g1)
    counts1 = spike_counts(model)
    assert counts0.keys() == counts1.keys()
    for k in counts0:  # no double counting during recompute
        assert torch.equal(counts0[k], counts1[k])
    torch.testing.assert_close(model.blocks[1].neuron.membrane.detach(), mem0)


def test_checkpoint_recompute_keeps_bn_running_stats_and_flags_hooks():
    torch.manual_seed(0)
    model = SpikingDnCNN(features=6, depth=4, timesteps=4, checkpoint_segments=2)
    bn = model.blocks[0].bn.layer
    seen = []
    model.blocks[0].conv.register_forward_hook(lambda m, i, o: seen.append(is_recomputing()))
    x = torch.rand(2, 1, 8, 8)
    y = model(x)
    after_forward = bn.running_mean.clone(), int(bn.num_batches_tracked)
    y.mean().backward()
    assert torch.equal(bn.running_mean, after_forward[0])
    assert int(bn.num_batches_tracked) == after_forward[1] == 2  # one update per chunk, none on recompute
    assert seen == [False, False, True, True]


def test_run_over_time_rejects_bad_segments():
    from distill.errors import ConfigError

    with pytest.raises(ConfigError, match="checkpoint_segments"):
        run_over_time(nn.Identity(), lambda z: z, torch.zeros(2, 1, 1), checkpoint_segments=0)


@pytest.mark.parametrize("reset", ["subtract", "zero"])
def test_chunks_carry_membrane_exactly(reset):
    """The membrane handed across chunks is differentiable: chunked == unchunked for both resets."""
    torch.manual_seed(0)
    net = _Net(LIF(0.7, threshold=0.4, spike_grad="atan", reset_mechanism=reset, learn_beta=True, learn_threshold=True,
                    init_membrane=0.3))
    x = torch.randn(7, B, C, H, W, generator=torch.Generator().manual_seed(5))
    coef = torch.randn(7, B, 2, H, W, generator=torch.Generator().manual_seed(6))
    results = []
    for segments in (None, 3):
        net.zero_grad()
        xi = x.clone().requires_grad_(True)
        y = run_over_time(net, net, xi, segments)
        (y * coef).sum().backward()
        results.append((y.detach(), xi.grad, {n: p.grad.clone() for n, p in net.named_parameters()}))
    (y0, gx0, gp0), (y1, gx1, gp1) = results
    torch.testing.assert_close(y0, y1)
    torch.testing.assert_close(gx0, gx1, rtol=1e-4, atol=1e-6)
    for k in gp0:
        torch.testing.assert_close(gp0[k], gp1[k], rtol=1e-4, atol=1e-6)
