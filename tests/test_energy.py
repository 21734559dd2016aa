"""distill.energy: hand-computed MAC / AC counts, spike detection, constants, report output."""
from __future__ import annotations

import csv
import json
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from distill.energy import (
    PRESETS,
    EnergyConstants,
    EnergyReport,
    energy_ratio,
    format_comparison,
    measure_energy,
    resolve_constants,
)
from distill.errors import ConfigError
from students import engine, neurons

FP32 = PRESETS["45nm-fp32"]


# ---------------------------------------------------------------------------- test-only model parts


class StepIF(nn.Module):
    """A deterministic integrate-and-fire neuron shaped like students.neurons.SpikingNeuron
    (duck-typed: threshold, spike_grad, probe): [T, B, ...] -> spikes of height `threshold`
    when the membrane reaches the threshold, reset by subtraction."""

    def __init__(self, threshold: float = 1.0):
        super().__init__()
        self.threshold = threshold
        self.spike_grad = "straight_through"
        self.probe = False

    def forward(self, current):
        mem = torch.zeros_like(current[0])
        out = []
        for c in current:
            mem = mem + c
            spk = (mem >= self.threshold).to(current.dtype)
            mem = mem - spk * self.threshold
            out.append(spk * self.threshold)
        return torch.stack(out)


class TD(nn.Module):
    """[T, B, ...] -> layer on the folded T*B batch -> [T, B, ...] (like students.engine.TimeDistributed)."""

    def __init__(self, layer):
        super().__init__()
        self.layer = layer

    def forward(self, x):
        t, b = x.shape[:2]
        y = self.layer(x.flatten(0, 1))
        return y.reshape(t, b, *y.shape[1:])


def _bias_conv(cin, cout, biases):
    """3x3 conv whose output is exactly its bias: sets the neuron currents by construction."""
    conv = nn.Conv2d(cin, cout, 3, padding=1)
    with torch.no_grad():
        conv.weight.zero_()
        conv.bias.copy_(torch.tensor(biases))
    return conv


class TwoLayerSNN(nn.Module):
    """Direct encoding -> conv1 (analog input) -> IF -> conv2 (spike input) -> IF -> mean over T.

    conv1 outputs currents 1.0 (fires every step) and 0.5 (fires every other step), so the
    spikes into conv2 have rate exactly 0.75 for every even T.
    """

    in_channels = 1

    def __init__(self, timesteps: int = 4):
        super().__init__()
        self.timesteps = timesteps
        self.conv1 = TD(_bias_conv(1, 2, [1.0, 0.5]))
        self.sn1 = StepIF()
        self.conv2 = TD(nn.Conv2d(2, 3, 3, padding=1))
        self.sn2 = StepIF()
        self.head = nn.Conv2d(3, 1, 1)

    def forward(self, x):
        s = x.unsqueeze(0).repeat(self.timesteps, 1, 1, 1, 1)
        s = self.sn2(self.conv2(self.sn1(self.conv1(s))))
        return self.head(s.mean(0))  # rate-decoded (analog) head


H, W = 6, 5


def _img(b=1, c=1):
    torch.manual_seed(0)
    return torch.rand(b, c, H, W)


def _row(report: EnergyReport, name: str):
    rows = {r.layer: r for r in report.rows}
    assert name in rows, f"{name} not in {list(rows)}"
    return rows[name]


# ---------------------------------------------------------------------------- student counts


@pytest.mark.parametrize("k", [0, 5, 37])
def test_single_conv_known_spike_pattern(k):
    conv = nn.Conv2d(2, 4, 3, padding=1)
    x = torch.zeros(1, 2, 8, 8)
    x.view(-1)[torch.randperm(128, generator=torch.Generator().manual_seed(k))[:k]] = 1.0
    rep = measure_energy(conv, x, "45nm-fp32", spiking=True)
    (row,) = rep.rows
    macs = 8 * 8 * 4 * 2 * 9
    assert row.macs == macs and row.kind == "spike"
    assert row.output_shape == [4, 8, 8]
    assert row.input_rate == pytest.approx(k / 128)
    assert row.acs == pytest.approx(macs * k / 128)
    assert rep.macs == 0 and rep.acs == pytest.approx(macs * k / 128)
    assert rep.energy_pj == pytest.approx(macs * k / 128 * 0.9)
    # the same input to a model with no neurons is analog unless told otherwise
    auto = measure_energy(conv, x, "45nm-fp32")
    assert not auto.spiking and auto.rows[0].input_rate is None and auto.macs == macs


def test_batch_counts_are_per_image():
    conv = nn.Conv2d(2, 4, 3, padding=1)
    x = torch.zeros(2, 2, 8, 8)
    x[0].view(-1)[:10] = 1.0
    x[1].view(-1)[:30] = 1.0
    rep = measure_energy(conv, x, FP32, spiking=True)
    macs = 8 * 8 * 4 * 2 * 9
    assert rep.rows[0].macs == macs
    assert rep.rows[0].input_rate == pytest.approx(40 / 256)
    assert rep.acs == pytest.approx(macs * 20 / 128)
    assert rep.images == 2


def test_two_layer_rates_by_construction_and_analog_first_layer():
    T = 4
    model = TwoLayerSNN(T)
    rep = measure_energy(model, _img(), FP32)
    assert rep.spiking and rep.timesteps == T
    macs1 = T * H * W * 2 * 1 * 9
    macs2 = T * H * W * 3 * 2 * 9
    macs_head = H * W * 1 * 3
    c1, c2, head = _row(rep, "conv1.layer"), _row(rep, "conv2.layer"), _row(rep, "head")
    # directly encoded first layer: analog, charged as MACs
    assert c1.kind == "analog" and c1.input_rate is None and c1.macs == macs1 and c1.acs == 0
    assert c1.output_shape == [T, 2, H, W]
    # spike input at rate 0.75 exactly
    assert c2.kind == "spike" and c2.macs == macs2
    assert c2.input_rate == pytest.approx(0.75)
    assert c2.acs == pytest.approx(0.75 * macs2)
    # the rate-decoded head sees analog values
    assert head.kind == "analog" and head.macs == macs_head
    assert rep.macs == macs1 + macs_head
    assert rep.dense_macs == macs1 + macs2 + macs_head
    assert rep.energy_pj == pytest.approx((macs1 + macs_head) * 4.6 + 0.75 * macs2 * 0.9)
    assert rep.energy_pj == pytest.approx(sum(r.energy_pj for r in rep.rows))


def test_forcing_ann_counting_charges_everything_as_macs():
    rep = measure_energy(TwoLayerSNN(2), _img(), FP32, spiking=False)
    assert all(r.kind == "analog" for r in rep.rows)
    assert rep.acs == 0 and rep.macs == rep.dense_macs


def test_time_scaling_is_linear_for_fixed_rate():
    reps = {T: measure_energy(TwoLayerSNN(T), _img(), FP32) for T in (2, 4, 8)}
    base = _row(reps[2], "conv2.layer")
    for T in (4, 8):
        row = _row(reps[T], "conv2.layer")
        assert row.input_rate == pytest.approx(0.75)
        assert row.macs == base.macs * T // 2
        assert row.acs == pytest.approx(base.acs * T / 2)
        assert _row(reps[T], "conv1.layer").macs == _row(reps[2], "conv1.layer").macs * T // 2


def test_neuron_updates_optional():
    T = 4
    consts = EnergyConstants(e_mac_pj=1.0, e_ac_pj=0.5, e_neuron_pj=0.25)
    off = measure_energy(TwoLayerSNN(T), _img(), consts)
    assert off.neuron_updates == 0 and all(r.kind != "neuron" for r in off.rows)
    on = measure_energy(TwoLayerSNN(T), _img(), consts, count_neuron_updates=True)
    n1, n2 = _row(on, "sn1"), _row(on, "sn2")
    assert n1.kind == "neuron" and n1.neuron_updates == T * 2 * H * W and n1.output_shape == [T, 2, H, W]
    assert n2.neuron_updates == T * 3 * H * W
    assert on.neuron_updates == T * 5 * H * W
    assert on.energy_pj == pytest.approx(off.energy_pj + 0.25 * T * 5 * H * W)
    assert "updates" in on.format_table()


class SkipSNN(nn.Module):
    """Concatenated spike skip connection (new storage: value rule), threshold 0.3 spikes."""

    def __init__(self):
        super().__init__()
        self.timesteps = 2
        self.enc = TD(_bias_conv(1, 2, [0.3, 0.0]))  # channel 0 fires every step, channel 1 never
        self.sn = StepIF(threshold=0.3)
        self.fuse = TD(nn.Conv2d(4, 1, 3, padding=1))
        self.pre = TD(nn.Conv2d(1, 1, 1))

    def forward(self, x):
        s = x.unsqueeze(0).repeat(2, 1, 1, 1, 1)
        levels = (s > 0.5).to(s.dtype) * 0.3  # {0, 0.3} before any neuron has fired: analog
        self.pre(levels)
        a = self.sn(self.enc(s))
        return self.fuse(torch.cat([a, a.flip(-1)], dim=2)).mean(0)


def test_spike_rule_values_and_levels():
    rep = measure_energy(SkipSNN(), _img(), FP32)
    fuse = _row(rep, "fuse.layer")
    assert fuse.kind == "spike" and fuse.input_rate == pytest.approx(0.5)
    assert fuse.acs == pytest.approx(0.5 * 2 * H * W * 4 * 9)
    assert _row(rep, "pre.layer").kind == "analog"  # 0.3 is not yet a known spike level


class SpikeAttention(nn.Module):
    """Spiking Q, K (binary) -> Q @ K^T counted as exact non-zero products; attention over
    membrane-like analog values stays MACs."""

    def __init__(self):
        super().__init__()
        self.sn = StepIF()

    def forward(self, x):
        q = self.sn(x[None])[0]  # [B, N, D] spikes
        k = q.flip(1)
        s = torch.matmul(q, k.transpose(-1, -2))  # spikes x spikes
        return torch.matmul(s.softmax(-1), x)  # analog x analog


def test_spike_matmul_counts_non_zero_products():
    x = torch.tensor([[[1.0, 0.0, 1.0], [0.2, 1.0, 1.0], [0.0, 0.0, 0.0], [1.0, 1.0, 1.0]]])  # [1, 4, 3]
    rep = measure_energy(SpikeAttention(), x, FP32)
    spk, ana = _row(rep, "(model) [bmm:spikes]"), _row(rep, "(model) [bmm:analog]")
    q = (x >= 1).float()[0]
    k = q.flip(0)
    expected = float(((q != 0).sum(0) * (k != 0).sum(0)).sum())
    assert spk.macs == 4 * 4 * 3 and spk.acs == pytest.approx(expected)
    assert ana.macs == 4 * 4 * 3 and ana.input_rate is None


def test_real_student_neurons_and_time_distributed():
    T = 4

    class RealSNN(nn.Module):
        def __init__(self):
            super().__init__()
            self.timesteps = T
            self.enc = engine.TimeDistributed(nn.Conv2d(1, 3, 3, padding=1))
            self.mt = neurons.MultiThresholdIF(threshold=0.5)
            self.mid = engine.TimeDistributed(nn.Conv2d(3, 3, 3, padding=1))
            self.sn = neurons.IF(threshold=1.0)
            self.out = engine.TimeDistributed(nn.Conv2d(6, 1, 3, padding=1))

        def forward(self, x):
            a = self.mt(self.enc(engine.broadcast_time(x, T)))
            b = self.sn(self.mid(a))
            return self.out(torch.cat([a, b], dim=2)).mean(0)

    torch.manual_seed(1)
    model = RealSNN()
    x = _img()
    with torch.no_grad():  # the rates, measured independently of distill.energy
        a = model.mt(model.enc(engine.broadcast_time(x, T)))
        b = model.sn(model.mid(a))
    rate_a = float((a != 0).float().mean())
    rate_ab = float((torch.cat([a, b], 2) != 0).float().mean())
    assert 0 < rate_a < 1
    rep = measure_energy(model, x, FP32, count_neuron_updates=True)
    assert rep.spiking and rep.timesteps == T
    enc, mid, out = _row(rep, "enc.layer"), _row(rep, "mid.layer"), _row(rep, "out.layer")
    # a time-broadcast input runs once on B inside TimeDistributed: counted once, analog
    assert enc.kind == "analog" and enc.macs == H * W * 3 * 9
    assert mid.kind == "spike" and mid.macs == T * H * W * 3 * 3 * 9
    assert mid.input_rate == pytest.approx(rate_a)
    # graded multi-threshold spikes concatenated with binary spikes: still spikes
    assert out.kind == "spike" and out.input_rate == pytest.approx(rate_ab)
    assert _row(rep, "mt").neuron_updates == T * 3 * H * W


# ---------------------------------------------------------------------------- teacher counts


class Attention(nn.Module):
    def __init__(self, c, d):
        super().__init__()
        self.q, self.k, self.v, self.o = nn.Linear(c, d), nn.Linear(c, d), nn.Linear(c, d), nn.Linear(d, c)

    def forward(self, x):
        b, c, h, w = x.shape
        t = x.flatten(2).transpose(1, 2)  # [B, N, C]
        a = torch.matmul(self.q(t), self.k(t).transpose(-1, -2)).softmax(-1)
        y = self.o(torch.matmul(a, self.v(t)))
        q4 = self.q(t).unflatten(-1, (2, -1)).transpose(1, 2)  # [B, 2 heads, N, d/2]
        y2 = F.scaled_dot_product_attention(q4, q4, q4).transpose(1, 2).flatten(2)
        return x + (y + self.o(y2)).transpose(1, 2).reshape(b, c, h, w)


def test_teacher_two_conv_hand_count():
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 3, 3, padding=1))
    rep = measure_energy(net, torch.rand(2, 3, H, W), FP32)
    assert not rep.spiking
    assert [(r.layer, r.output_shape, r.macs) for r in rep.rows] == [
        ("0", [8, H, W], H * W * 8 * 3 * 9), ("2", [3, H, W], H * W * 3 * 8 * 9)]
    assert rep.macs == 2 * H * W * 8 * 3 * 9
    assert rep.energy_pj == pytest.approx(rep.macs * 4.6)
    with torch.no_grad(), FlopCounterMode(display=False) as plain:
        net(torch.rand(2, 3, H, W))
    assert rep.macs == plain.get_total_flops() // 2 // 2  # torch's own count, per image


def test_teacher_counts_attention_matmuls():
    c, d = 4, 6
    n = H * W
    net = nn.Sequential(nn.Conv2d(1, c, 3, padding=1), Attention(c, d))
    rep = measure_energy(net, torch.rand(1, 1, H, W), FP32)
    conv = H * W * c * 9
    linears = 2 * (n * c * d) + n * c * d + n * c * d + 2 * (n * d * c)  # q twice, k, v, o twice
    matmuls = 2 * (n * n * d)
    sdpa = 2 * (n * n * d)  # QK^T and PV over 2 heads of d/2
    assert _row(rep, "1 [bmm]").macs == matmuls
    assert _row(rep, "1 [attn qk]").macs + _row(rep, "1 [attn pv]").macs == sdpa
    assert _row(rep, "1.q").macs == 2 * n * c * d
    assert rep.macs == conv + linears + matmuls + sdpa


def test_needs_sigma_and_model_kwargs():
    class Sigma(nn.Module):
        needs_sigma = True

        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(2, 1, 1)

        def forward(self, x, sigma):
            return self.conv(torch.cat([x, sigma.view(-1, 1, 1, 1).expand_as(x)], 1))

    with pytest.raises(ConfigError, match="sigma"):
        measure_energy(Sigma(), _img(), FP32)
    rep = measure_energy(Sigma(), _img(), FP32, model_kwargs={"sigma": torch.full((1,), 0.1)})
    assert rep.macs == H * W * 2


# ---------------------------------------------------------------------------- hygiene


def _hook_count(model):
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


def test_restores_training_mode_and_removes_hooks_even_on_error():
    model = TwoLayerSNN(2).train()
    model.head.eval()  # mixed modes are restored module by module
    measure_energy(model, _img(), FP32, count_neuron_updates=True)
    assert model.training and model.conv1.training and not model.head.training
    assert _hook_count(model) == 0

    class Boom(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(1, 1, 1)

        def forward(self, x):
            self.conv(x)
            raise RuntimeError("boom")

    boom = Boom().train()
    with pytest.raises(RuntimeError, match="boom"):
        measure_energy(boom, _img(), FP32)
    assert boom.training and _hook_count(boom) == 0
    assert torch.is_grad_enabled()


def test_list_of_batches_averages_per_image():
    conv = nn.Conv2d(1, 2, 3, padding=1)
    rep = measure_energy(conv, [torch.rand(1, 1, 4, 4), torch.rand(1, 1, 8, 8)], FP32)
    assert rep.images == 2 and rep.macs == (16 + 64) * 2 * 9 / 2
    with pytest.raises(ConfigError):
        measure_energy(conv, [], FP32)


# ---------------------------------------------------------------------------- constants and output


def test_presets_and_resolve():
    assert resolve_constants("45nm-fp32") == EnergyConstants(4.6, 0.9, 0.0, "45nm-fp32")
    assert (PRESETS["45nm-int8"].e_mac_pj, PRESETS["45nm-int8"].e_ac_pj) == (0.23, 0.03)
    assert (PRESETS["45nm-fp16"].e_mac_pj, PRESETS["45nm-fp16"].e_ac_pj) == (1.5, 0.4)
    custom = resolve_constants({"e_mac_pj": 2, "e_ac_pj": 1, "name": "mine"})
    assert custom == EnergyConstants(2.0, 1.0, 0.0, "mine")
    over = resolve_constants({"preset": "45nm-int8", "e_neuron_pj": 0.05})
    assert (over.e_mac_pj, over.e_ac_pj, over.e_neuron_pj) == (0.23, 0.03, 0.05)
    assert resolve_constants(custom) is custom


def test_bad_constants_rejected():
    with pytest.raises(ConfigError) as err:
        resolve_constants("7nm-magic")
    for name in PRESETS:
        assert name in str(err.value)
    with pytest.raises(ConfigError, match="e_ac_pj"):
        EnergyConstants(e_mac_pj=1.0, e_ac_pj=-0.1)
    with pytest.raises(ConfigError, match="e_mac_pj"):
        resolve_constants({"e_mac_pj": float("nan"), "e_ac_pj": 1.0})
    with pytest.raises(ConfigError, match="e_ac_pj"):
        resolve_constants({"e_mac_pj": 1.0})
    with pytest.raises(ConfigError, match="allowed"):
        resolve_constants({"e_mac": 1.0, "e_ac_pj": 1.0})
    with pytest.raises(ConfigError, match="45nm-fp32"):
        resolve_constants({"preset": "nope"})


def test_energy_formula_report_outputs_and_comparison(tmp_path):
    consts = EnergyConstants(e_mac_pj=2.0, e_ac_pj=0.5, e_neuron_pj=0.1, name="t")
    student = measure_energy(TwoLayerSNN(4), _img(), consts, count_neuron_updates=True)
    assert student.energy_pj == pytest.approx(
        student.macs * 2.0 + student.acs * 0.5 + student.neuron_updates * 0.1)
    assert student.energy_uj == pytest.approx(student.energy_pj * 1e-6)

    d = student.to_dict()
    assert json.loads(json.dumps(d)) == d
    assert d["per_image"]["energy_pj"] == pytest.approx(student.energy_pj)
    assert d["constants"]["name"] == "t" and len(d["layers"]) == len(student.rows)

    path = tmp_path / "sub" / "energy.csv"
    student.write_csv(path)
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["layer"] for r in rows] == [r.layer for r in student.rows]
    c2 = next(r for r in rows if r["layer"] == "conv2.layer")
    assert float(c2["input_rate"]) == pytest.approx(0.75) and c2["output_shape"] == f"4x3x{H}x{W}"
    assert sum(float(r["energy_pj"]) for r in rows) == pytest.approx(student.energy_pj)
    assert next(r for r in rows if r["layer"] == "conv1.layer")["input_rate"] == ""
    assert list(path.parent.glob("*.tmp")) == []

    table = student.format_table()
    for text in ("conv2.layer", "75.00%", "analog", "total per image", "constants: t"):
        assert text in table

    teacher = measure_energy(nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.Conv2d(8, 1, 3, padding=1)),
                             _img(), consts)
    ratio = energy_ratio(teacher, student)
    assert ratio == pytest.approx(teacher.energy_pj / student.energy_pj)
    text = format_comparison(teacher, student)
    assert "== Teacher ==" in text and "== Student ==" in text and f"{ratio:.3g}x" in text
    zero = EnergyReport(rows=[], macs=0, acs=0, neuron_updates=0, energy_pj=0.0, constants=consts)
    assert math.isinf(energy_ratio(teacher, zero))


def test_esdnet_spiking_shortcut_turns_its_analog_shortcut_convs_into_spike_convs():
    """ESDNet's paper shortcut conv multiplies the analog block input at every step (MACs); with spiking_shortcut it
    reads the block's first LIF spikes, so it is charged as ACs at that layer's input rate, and the input equals
    the residual path's first conv's input."""
    from students.esdnet import ESDNet

    torch.manual_seed(0)
    x = torch.rand(1, 3, 32, 32)
    paper, spiking = (ESDNet(preset="tiny", spiking_shortcut=flag, zero_tail=False) for flag in (False, True))
    spiking.load_state_dict(paper.state_dict())  # the same weights: only the shortcut's input differs
    reports = {name: measure_energy(net, x, FP32) for name, net in (("paper", paper), ("spiking", spiking))}
    for block in ("encoder.0.0", "decoder.2.0"):
        path = f"{block}.shortcut.0.layer"
        analog, spiked = _row(reports["paper"], path), _row(reports["spiking"], path)
        assert analog.kind == "analog" and analog.acs == 0 and analog.macs > 0
        residual_conv = _row(reports["spiking"], f"{block}.residual.1.layer")
        # the same dense operations, now gated by spikes (a time-broadcast analog input is charged for one step)
        per_step = analog.macs // (4 if len(analog.output_shape) == 4 else 1)
        assert spiked.kind == "spike" and spiked.macs == 4 * per_step
        assert spiked.acs == pytest.approx(spiked.input_rate * spiked.macs)
        assert spiked.input_rate == pytest.approx(residual_conv.input_rate)  # the same spikes feed both convs
        assert spiked.acs == pytest.approx(residual_conv.acs)
    assert reports["spiking"].energy_pj < 0.5 * reports["paper"].energy_pj
    assert not torch.equal(paper(x), spiking(x))
