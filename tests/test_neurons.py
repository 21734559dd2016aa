"""Neurons, surrogates, the multi-threshold neuron, probes, pickling and argument errors."""
from __future__ import annotations

import pickle

import pytest
import snntorch.surrogate as sg
import torch

from distill.errors import ConfigError
from students import engine
from students.engine import multithreshold_quantize
from students.neurons import IF, LIF, MultiThresholdIF, build_neuron
from students.probes import (
    firing_rates,
    overall_firing_rate,
    probing,
    reset_probes,
    spike_counts,
    timestep_firing_rates,
)
from students.surrogates import ATan, FastSigmoid, StraightThrough, Triangle, get_surrogate


pytestmark = pytest.mark.usefixtures("single_thread")


# ---------------------------------------------------------------- surrogates

@pytest.mark.parametrize(
    "ours,theirs",
    [
        (ATan(), sg.atan()),
        (ATan(alpha=3.5), sg.atan(alpha=3.5)),
        (FastSigmoid(), sg.fast_sigmoid()),
        (FastSigmoid(slope=7.0), sg.fast_sigmoid(slope=7.0)),
        (StraightThrough(), sg.straight_through_estimator()),
    ],
    ids=lambda v: repr(v) if not callable(v) or hasattr(v, "grad") else "snntorch",
)
def test_surrogate_derivative_equals_snntorch(ours, theirs):
    x = torch.linspace(-2, 2, 101)
    x1 = x.clone().requires_grad_(True)
    theirs(x1).sum().backward()
    torch.testing.assert_close(ours.grad(x), x1.grad)
    g = torch.randn(101)
    torch.testing.assert_close(ours.scaled_grad(x.clone(), g), g * x1.grad)
    x2 = x.clone().requires_grad_(True)
    y = ours(x2)
    assert torch.equal(y, (x > 0).float())
    y.sum().backward()
    torch.testing.assert_close(x2.grad, x1.grad)


def test_triangle_surrogate():
    tri = Triangle(width=0.5)
    x = torch.tensor([-1.0, -0.5, -0.25, 0.0, 0.25, 0.5, 1.0])
    torch.testing.assert_close(tri.grad(x), torch.tensor([0.0, 0.0, 1.0, 2.0, 1.0, 0.0, 0.0]))


def test_surrogates_pickle_and_compare_by_value():
    for s in (ATan(), ATan(3.0), FastSigmoid(), Triangle(), StraightThrough()):
        back = pickle.loads(pickle.dumps(s))
        assert back == s and type(back) is type(s)
    assert ATan(2.0) != ATan(3.0)
    assert get_surrogate("fast_sigmoid") == FastSigmoid()


def test_unknown_surrogate_names_value_and_allowed():
    with pytest.raises(ConfigError, match=r"spike_grad='sigmoid'.*atan.*fast_sigmoid.*straight_through.*triangle"):
        get_surrogate("sigmoid")
    with pytest.raises(ConfigError, match="alpha"):
        ATan(alpha=0)


# ---------------------------------------------------------------- argument errors

@pytest.mark.parametrize(
    "make,pattern",
    [
        (lambda: LIF(threshold=0.0), r"threshold=0\.0.*> 0"),
        (lambda: IF(threshold=-1), r"threshold=-1.*> 0"),
        (lambda: MultiThresholdIF(threshold=0), r"threshold=0.*> 0"),
        (lambda: LIF(beta=1.5), r"beta=1\.5.*\[0, 1\]"),
        (lambda: LIF(beta=-0.1), r"beta=-0\.1.*\[0, 1\]"),
        (lambda: LIF(reset_mechanism="none"), r"reset_mechanism='none'.*subtract.*zero"),
        (lambda: MultiThresholdIF(reset_mechanism="zero"), r"reset_mechanism='zero'.*subtract"),
        (lambda: LIF(spike_grad="heaviside"), r"spike_grad='heaviside'"),
        (lambda: MultiThresholdIF(levels=(1.0, 2.0)), r"levels=\(1\.0, 2\.0\)"),
        (lambda: LIF(init_membrane=1.0), r"init_membrane=1\.0"),
        (lambda: build_neuron("izhikevich"), r"neuron='izhikevich'.*lif.*multi_threshold.*relu"),
        (lambda: build_neuron("multi_threshold", reset_mechanism="zero"), r"reset_mechanism='zero'.*subtract"),
        (lambda: build_neuron("if", learn_beta=True), r"learn_beta=True needs neuron='lif'.*neuron='if'"),
    ],
)
def test_config_errors_name_value_and_allowed(make, pattern):
    with pytest.raises(ConfigError, match=pattern):
        make()


def test_learnable_parameters_are_registered():
    n = LIF(learn_beta=True, learn_threshold=True)
    assert {k for k, _ in n.named_parameters()} == {"beta", "threshold"}
    assert list(LIF().parameters()) == [] and list(IF().parameters()) == []


# ---------------------------------------------------------------- pickling

@pytest.mark.parametrize(
    "make",
    [
        lambda: LIF(0.7, threshold=0.5, spike_grad="triangle", reset_mechanism="zero", learn_beta=True, record_membrane=True),
        lambda: IF(threshold=0.5, spike_grad=FastSigmoid(3.0)),
        lambda: MultiThresholdIF(threshold=0.5, learn_threshold=True, record_membrane=True),
    ],
)
def test_neurons_pickle_after_use(make):
    n = make()
    x = torch.randn(4, 3, 5, requires_grad=True)
    n.probe = True
    y = n(x)
    y.sum().backward()  # membrane, counters and graph exist; pickling must still work
    back = pickle.loads(pickle.dumps(n))
    assert back.membrane is None
    torch.testing.assert_close(back(x.detach()), n(x.detach()))
    assert torch.equal(back.spike_count, n.spike_count)  # counters travel with the neuron


# ---------------------------------------------------------------- multi-threshold neuron

def _greedy(z: torch.Tensor, levels=(2.0, 1.0, 0.5, 0.25)) -> torch.Tensor:
    """Spiking-UNet's check: each level in order, fire if above, subtract what fired."""
    r, q = z.clone(), torch.zeros_like(z)
    for c in levels:
        f = r > c
        r = torch.where(f, r - c, r)
        q = q + c * f
    return q


def test_multithreshold_quantizer_is_the_greedy_ladder():
    z = torch.cat([torch.linspace(-1, 5, 2401), torch.arange(-4, 25) * 0.25])  # includes exact levels
    torch.testing.assert_close(multithreshold_quantize(z), _greedy(z))
    odd = (1.5, 0.7, 0.2)  # not a binary ladder: generic greedy path
    torch.testing.assert_close(multithreshold_quantize(z, odd), _greedy(z, odd))


def test_multithreshold_neuron_forward_matches_reference_loop():
    theta = 0.8
    n = MultiThresholdIF(threshold=theta, record_membrane=True)
    x = torch.randn(6, 3, 7, generator=torch.Generator().manual_seed(0)) * 1.5
    out = n(x)
    v, ref_out, ref_mem = torch.zeros(3, 7), [], []
    for t in range(6):
        v = v + x[t]
        ref_mem.append(v.clone())
        o = theta * _greedy(v / theta)
        ref_out.append(o)
        v = v - o
    torch.testing.assert_close(out, torch.stack(ref_out))
    torch.testing.assert_close(n.membrane, torch.stack(ref_mem))
    q4 = out / theta * 4  # outputs are theta * k/4 with k in 0..15
    torch.testing.assert_close(q4, q4.round())
    assert float(q4.min()) >= 0 and float(q4.max()) <= 15 + 1e-4


class _MTStep(torch.autograd.Function):
    """One step of the documented multi-threshold surrogate, for a per-step autograd reference."""

    @staticmethod
    def forward(ctx, u, theta, surrogate):
        z = u / theta
        ctx.save_for_backward(z)
        ctx.surrogate = surrogate
        return theta * multithreshold_quantize(z)

    @staticmethod
    def backward(ctx, g):
        (z,) = ctx.saved_tensors
        r, slope = z.clone(), torch.zeros_like(z)
        for c in (2.0, 1.0, 0.5, 0.25):
            slope += ctx.surrogate.grad((r - c) / c)
            r = torch.where(r > c, r - c, r)
        slope /= 4
        q = multithreshold_quantize(z)
        return g * slope, (g * (q - z * slope)).sum(), None


def test_multithreshold_gradients_match_per_step_reference():
    assert_multithreshold_matches_reference()


@pytest.mark.slow
def test_compiled_multithreshold_backward_matches_per_step_reference(monkeypatch):
    """The torch.compile'd backward kernel (large tensors) gives the reference's gradients."""
    monkeypatch.setattr(engine, "COMPILE_MIN_NUMEL", 0)
    monkeypatch.setattr(engine, "_compiled", {})
    monkeypatch.setattr(engine, "_compile_enabled", True)
    assert_multithreshold_matches_reference()
    assert list(engine._compiled) == [(ATan(), engine.DEFAULT_LEVELS)] and engine._compile_enabled


def test_failed_compile_falls_back_to_eager_with_a_warning(monkeypatch):
    def broken_compile(fn, **kwargs):
        def run(x):
            raise RuntimeError("no C++ compiler")
        return run

    monkeypatch.setattr(engine, "COMPILE_MIN_NUMEL", 0)
    monkeypatch.setattr(engine, "_compiled", {})
    monkeypatch.setattr(engine, "_compile_enabled", True)
    monkeypatch.setattr(engine.torch, "compile", broken_compile)
    with pytest.warns(RuntimeWarning, match="no C\\+\\+ compiler"):
        assert_multithreshold_matches_reference()
    assert not engine._compile_enabled


def assert_multithreshold_matches_reference():
    """The fused multi-threshold IF's input and threshold gradients equal a per-step autograd loop's."""
    torch.manual_seed(0)
    n = MultiThresholdIF(threshold=0.7, spike_grad="atan", learn_threshold=True)
    x = torch.randn(5, 4, 6) * 1.2
    coef = torch.randn(5, 4, 6)
    x1 = x.clone().requires_grad_(True)
    (n(x1) * coef).sum().backward()
    theta = torch.tensor(0.7, requires_grad=True)
    x2 = x.clone().requires_grad_(True)
    u, outs, prev = torch.zeros(4, 6), [], None
    for t in range(5):
        u = u + x2[t] - (0 if prev is None else theta * multithreshold_quantize(prev.detach() / 0.7))
        o = _MTStep.apply(u, theta, ATan())
        outs.append(o)
        prev = u
    (torch.stack(outs) * coef).sum().backward()
    torch.testing.assert_close(x1.grad, x2.grad, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(n.threshold.grad, theta.grad, rtol=1e-4, atol=1e-5)


# ---------------------------------------------------------------- probes

class _Two(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.a = IF(threshold=1.0)
        self.b = MultiThresholdIF(threshold=1.0)

    def forward(self, x):
        return self.b(self.a(x) * 3.0)


def test_probe_counts_match_hand_count():
    model = _Two()
    x = torch.tensor([[[0.6, 1.5, 0.2]], [[0.6, 0.0, 0.2]], [[0.0, 1.5, 0.9]]])  # [T=3, B=1, 3]
    assert model.a.spike_count is None
    model(x)
    assert model.a.spike_count is None  # probes off: nothing recorded
    with probing(model):
        model(x)
        model(x)
    # IF, threshold 1: U = [.6,1.5,.2] -> spikes [0,1,0]; U = [1.2, .5, .4] -> [1,0,0];
    # U = [1.2-1, .5+1.5, .4+.9] = [.2, 2, 1.3] -> [0,1,1]   => per step 1, 1, 2 (x2 calls)
    counts = spike_counts(model)
    assert counts["a"].tolist() == [2, 2, 4]
    assert model.a.elements.tolist() == [6, 6, 6]
    rates = firing_rates(model)
    assert rates["a"] == pytest.approx(8 / 18)
    hand_b = sum(int((model.b(model.a(x) * 3.0) != 0).sum()) for _ in range(1))
    assert int(counts["b"].sum()) == 2 * hand_b
    torch.testing.assert_close(timestep_firing_rates(model)["a"], torch.tensor([2 / 6, 2 / 6, 4 / 6], dtype=torch.float64))
    assert overall_firing_rate(model) == pytest.approx((8 + 2 * hand_b) / 36)
    assert model.a.probe is False and model.b.probe is False  # flags restored
    reset_probes(model)
    assert firing_rates(model) == {}
