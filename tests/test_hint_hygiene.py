"""Hint hygiene (issue 14): normalisation, log distance, gradient cap, teacher signal, teacher tail, diagnostics."""
import math

import lightning as L
import numpy as np
import pytest
import torch
from torch import nn

from distill.data import DenoisingDataModule
from distill.distillation import DistillationModule
from distill.errors import ConfigError
from distill.hints import FeatureTap, Hint, HintHead, HintSet, flat_grad, normalize_feature, teacher_tail
from students.spiking_dncnn import SpikingDnCNN
from teachers.dncnn import DnCNN
from teachers.twins import DnCNNTwin

pytestmark = pytest.mark.filterwarnings("ignore:.*reference is not registered")


def tiny_module(hints, **kwargs):
    torch.manual_seed(0)
    teacher, student = DnCNN(1, 8, 4), SpikingDnCNN(1, 8, 4, timesteps=2, zero_tail=False)
    return DistillationModule(teacher=teacher, student=student, hints=hints, example_size=16, **kwargs)


def batch(size=2, side=16):
    torch.manual_seed(1)
    clean = torch.rand(size, 1, side, side)
    return {"input": clean + 0.1 * torch.randn_like(clean), "target": clean, "sigma": torch.full((size,), 0.1),
            "name": [f"img{i}" for i in range(size)]}


def identity_head(**options):
    hint = Hint(teacher="t", student="s", adapter="identity", **options)
    return HintHead(hint, torch.Size((1, 2, 2, 1, 2)), torch.Size((2, 2, 1, 2)))


# ---- normalisation and log distance ---------------------------------------------------------------------
# two channels over a batch of 2 and a 1x2 image: channel 0 holds 1, 2, 3, 6 and channel 1 holds 0, 0, 4, 4
FEATURE = torch.tensor([[[[1.0, 2.0]], [[0.0, 0.0]]], [[[3.0, 6.0]], [[4.0, 4.0]]]])


@pytest.mark.parametrize("kind", ["channel", "bn"])
def test_channel_normalisation_by_hand(kind):
    c0, c1 = np.array([1.0, 2.0, 3.0, 6.0]), np.array([0.0, 0.0, 4.0, 4.0])
    # means 3 and 2; biased variances (4 + 1 + 0 + 9) / 4 = 3.5 and (4 + 4 + 4 + 4) / 4 = 4
    expected0, expected1 = (c0 - 3.0) / math.sqrt(3.5 + 1e-5), (c1 - 2.0) / math.sqrt(4.0 + 1e-5)
    out = normalize_feature(kind, FEATURE)
    assert np.allclose(out[:, 0].flatten().numpy(), expected0, atol=1e-6)
    assert np.allclose(out[:, 1].flatten().numpy(), expected1, atol=1e-6)
    assert torch.equal(normalize_feature("none", FEATURE), FEATURE)


@pytest.mark.parametrize("kind", ["channel", "bn"])
def test_normalised_hint_ignores_per_channel_scale_and_shift(kind):
    head = identity_head(normalize=kind)
    teacher = FEATURE * torch.tensor([3.0, 0.5]).view(1, 2, 1, 1) + torch.tensor([5.0, -2.0]).view(1, 2, 1, 1)
    assert float(head(FEATURE.unsqueeze(0), teacher)) == pytest.approx(0.0, abs=1e-8)
    assert float(identity_head()(FEATURE.unsqueeze(0), teacher)) > 1.0  # without normalisation they differ
    # student channel 0 against a teacher whose channel 0 is reversed: normalised values compared by hand
    flipped = FEATURE.clone()
    flipped[:, 0] = torch.tensor([[[6.0, 3.0]], [[2.0, 1.0]]])
    z = (np.array([1.0, 2.0, 3.0, 6.0]) - 3.0) / math.sqrt(3.5 + 1e-5)
    expected = (((z - z[::-1]) ** 2).sum() + 0.0) / 8  # channel 1 matches exactly; 8 elements in all
    assert float(head(FEATURE.unsqueeze(0), flipped)) == pytest.approx(expected, rel=1e-5)


def test_log_distance_by_hand():
    student, teacher = torch.full((1, 2, 2, 1, 2), 3.0), torch.full((2, 2, 1, 2), 1.0)
    assert float(identity_head(loss="mse")(student, teacher)) == pytest.approx(4.0)
    assert float(identity_head(loss="mse", log_distance=True)(student, teacher)) == pytest.approx(math.log(5.0))
    assert float(identity_head(loss="l1", log_distance=True)(student, teacher)) == pytest.approx(math.log(3.0))


@pytest.mark.parametrize("field,value", [("normalize", "zscore"), ("teacher_signal", "mid"),
                                         ("max_grad_ratio", 0), ("max_grad_ratio", -1.0), ("max_grad_ratio", "big"),
                                         ("log_distance", "yes"), ("teacher_tail", 1)])
def test_bad_new_hint_fields_named(field, value):
    with pytest.raises(ConfigError) as err:
        Hint(teacher="a", student="b", **{field: value})
    assert repr(value) in str(err.value) and field in str(err.value)


def test_teacher_tail_rejects_feature_losses_and_normalisation():
    with pytest.raises(ConfigError, match=r"loss='cosine' is not allowed; use one of \['mse', 'l1'\]"):
        Hint(teacher="a", student="b", teacher_tail=True, loss="cosine")
    with pytest.raises(ConfigError, match="normalize='channel' is not allowed"):
        Hint(teacher="a", student="b", teacher_tail=True, normalize="channel")


# ---- teacher signal -----------------------------------------------------------------------------------
def test_teacher_signal_pre_captures_the_relu_input():
    torch.manual_seed(0)
    teacher, student, x = DnCNN(1, 8, 4).eval(), SpikingDnCNN(1, 8, 4, timesteps=2), torch.rand(2, 1, 16, 16)
    hints = HintSet([Hint(teacher="body.4", student="blocks.0.neuron", teacher_signal="pre"),
                     Hint(teacher="body.4", student="blocks.0.neuron")], teacher, student, x)
    with torch.no_grad(), hints.capture(teacher, "teacher") as taps:
        teacher(x)
        pre, post = (tap.take() for tap in taps)
        bn_out = teacher.body[3](teacher.body[2](teacher.body[1](teacher.body[0](x))))  # conv ReLU conv BN
    assert isinstance(teacher.body[4], nn.ReLU) and torch.equal(pre, bn_out)
    assert torch.equal(post, torch.relu(bn_out)) and (bn_out < 0).any()


def test_input_of_an_in_place_module_is_refused():
    with pytest.raises(ConfigError, match="in-place ReLU"):
        FeatureTap(nn.ReLU(inplace=True), "current", "body.1")


# ---- teacher tail -------------------------------------------------------------------------------------
def teacher_feature_at(teacher, path, signal, x):
    module = dict(teacher.named_modules())[path]
    tap = FeatureTap(module, "current" if signal == "pre" else "spikes", path)
    with torch.no_grad(), tap.attached():
        out = teacher(x)
    feature = tap.take()
    return (feature[0] if feature.dim() == 5 else feature), out


@pytest.mark.parametrize("signal", ["post", "pre"])
def test_teacher_tail_reproduces_dncnn_from_its_own_feature(signal):
    torch.manual_seed(0)
    teacher, x = DnCNN(1, 8, 4).eval(), torch.rand(2, 1, 16, 16)
    for path in [f"body.{k}" for k in range(len(teacher.body))] + ["body"]:
        feature, out = teacher_feature_at(teacher, path, signal, x)
        with torch.no_grad():
            assert torch.equal(teacher_tail(teacher, path, signal)(feature, x), out), (path, signal)


@pytest.mark.parametrize("path", ["head", "head.neuron", "blocks.0", "blocks.1.bn", "blocks.1.neuron"])
@pytest.mark.parametrize("signal", ["post", "pre"])
def test_teacher_tail_reproduces_a_dncnn_twin(path, signal):
    torch.manual_seed(0)
    teacher, x = DnCNNTwin(1, 8, 4).eval(), torch.rand(2, 1, 16, 16)
    feature, out = teacher_feature_at(teacher, path, signal, x)
    with torch.no_grad():
        assert torch.allclose(teacher_tail(teacher, path, signal)(feature, x), out, atol=1e-6)


def test_teacher_tail_hint_with_identity_adapter_on_the_teachers_feature_is_zero():
    torch.manual_seed(0)
    teacher, x = DnCNN(1, 8, 4).eval(), torch.rand(2, 1, 16, 16)
    feature, out = teacher_feature_at(teacher, "body.4", "post", x)
    hint = Hint(teacher="body.4", student="s", adapter="identity", loss="l1", teacher_tail=True)
    head = HintHead(hint, torch.Size((1, *feature.shape)), feature.shape, teacher_tail(teacher, "body.4", "post"))
    with torch.no_grad():
        assert float(head(feature.unsqueeze(0), feature, x, out)) == 0.0
        assert float(head(feature.unsqueeze(0), feature, x, x)) == pytest.approx(float((out - x).abs().mean()))


def test_teacher_tail_gradients_pass_through_the_frozen_teacher():
    module = tiny_module([Hint(teacher="body.4", student="blocks.0.neuron", student_signal="current",
                               loss="l1", teacher_tail=True)])
    module.train()
    _, terms = module.compute_losses(batch())
    terms["hint"].backward()
    assert all(p.grad is None and not p.requires_grad for p in module.teacher.parameters())
    assert module.hint_set.heads[0].adapter.weight.grad.abs().sum() > 0
    assert module.student.blocks[0].conv.layer.weight.grad.abs().sum() > 0
    assert not [k for k in module.state_dict() if k.startswith("hint_set.") and "body" in k]  # teacher not duplicated


def test_teacher_tail_on_an_unsupported_teacher_names_it():
    from teachers.unet import UNet

    with pytest.raises(ConfigError, match="not supported for the teacher UNet: its forward is not a flat sequence"):
        teacher_tail(UNet(in_channels=1, preset="tiny"), "enc.0", "post")
    with pytest.raises(ConfigError, match=r"'tail' is not on the main path of DnCNNTwin; use one of \['head.neuron'"):
        teacher_tail(DnCNNTwin(1, 8, 4), "tail", "post")


# ---- gradient cap -------------------------------------------------------------------------------------
def grad_norms(module, terms):
    params = module.student_parameters()
    return flat_grad(terms["hint"], params).norm(), flat_grad(terms["restoration"], params).norm()


@pytest.mark.parametrize("ratio", [0.05, 0.3])
def test_gradient_cap_bounds_the_hint_gradient(ratio):
    hints = [Hint(teacher="body.4", student="blocks.0.neuron", student_signal="current", weight=50.0,
                  max_grad_ratio=ratio)]
    module = tiny_module(hints).train()
    _, terms = module.compute_losses(batch())
    hint_norm, restoration_norm = grad_norms(module, terms)
    assert float(hint_norm / restoration_norm) <= ratio + 1e-6
    assert float(hint_norm / restoration_norm) == pytest.approx(ratio, rel=1e-4)  # the cap is active here


def test_gradient_cap_leaves_a_small_hint_gradient_unchanged():
    options = dict(teacher="body.4", student="blocks.0.neuron", student_signal="current", weight=0.5)
    capped, free = tiny_module([Hint(**options, max_grad_ratio=1e6)]).train(), tiny_module([Hint(**options)]).train()
    _, capped_terms = capped.compute_losses(batch())
    _, free_terms = free.compute_losses(batch())
    assert torch.equal(capped_terms["hint"], free_terms["hint"])
    assert torch.equal(grad_norms(capped, capped_terms)[0], grad_norms(free, free_terms)[0])


# ---- adapters in the optimizer, diagnostics ------------------------------------------------------------
def test_every_adapter_parameter_is_optimized_and_gets_a_gradient():
    hints = [Hint(teacher="body.1", student="head.neuron", student_signal="current", adapter="conv1x1"),
             Hint(teacher="body.4", student="blocks.0.neuron", student_signal="current", adapter="conv_bn"),
             Hint(teacher="body.4", student="blocks.1.neuron", student_signal="membrane", adapter="conv_stack",
                  max_grad_ratio=0.5, log_distance=True),
             Hint(teacher="body.3", student="blocks.1.bn", adapter="conv1x1", teacher_signal="pre", loss="l1"),
             Hint(teacher="body.4", student="blocks.0.neuron", student_signal="current", loss="l1", teacher_tail=True)]
    module = tiny_module(hints).train()
    optimized = {id(p) for group in module.configure_optimizers().param_groups for p in group["params"]}
    _, terms = module.compute_losses(batch())
    sum(terms.values()).backward()
    adapters = list(module.hint_set.named_parameters())
    assert len(adapters) > 10
    for name, p in adapters:
        assert id(p) in optimized, name
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_gradient_stats_by_hand_without_side_effects():
    hints = [Hint(teacher="body.4", student="blocks.0.neuron", student_signal="current", weight=2.0),
             Hint(teacher="body.4", student="blocks.0.neuron", student_signal="current", weight=2.0,
                  max_grad_ratio=0.01)]
    module = tiny_module(hints).eval()
    module.hint_set.heads[1].load_state_dict(module.hint_set.heads[0].state_dict())  # one gradient, capped or not
    data = batch()
    buffers = {k: v.clone() for k, v in module.state_dict().items()}
    with torch.inference_mode():  # as in validation
        stats = module.hint_gradient_stats(data)
    assert not module.training and all(p.grad is None for p in module.parameters())
    assert all(torch.equal(v, module.state_dict()[k]) for k, v in buffers.items())  # BN statistics untouched
    module.train()
    _, _, restoration, (loss, _) = module.loss_parts(data)
    params = module.student_parameters()
    g_r, g_h = flat_grad(restoration, params), flat_grad(2.0 * loss, params)
    assert stats[0]["grad_ratio"] == pytest.approx(float(g_h.norm() / g_r.norm()), rel=1e-4)
    assert stats[0]["grad_cosine"] == pytest.approx(float(torch.dot(g_h, g_r) / (g_h.norm() * g_r.norm())), abs=1e-4)
    assert stats[1]["grad_ratio"] == pytest.approx(0.01, rel=1e-4)  # the weighted, capped gradient
    assert stats[1]["grad_cosine"] == pytest.approx(stats[0]["grad_cosine"], abs=1e-4)


def test_each_validation_records_hint_diagnostics_and_results_record_new_fields(tmp_path):
    L.seed_everything(0)
    hints = [Hint(teacher="body.4", student="blocks.0.neuron", normalize="channel", log_distance=True,
                  max_grad_ratio=0.5, teacher_signal="pre"),
             Hint(teacher="body.4", student="blocks.0.neuron", loss="l1", teacher_tail=True)]
    module = tiny_module(hints)
    data = DenoisingDataModule(channels=1, sigma=25.0, patch_size=16, patches_per_epoch=64, batch_size=4, eval_size=16)
    L.Trainer(default_root_dir=tmp_path, max_steps=4, logger=False, enable_checkpointing=False,
              enable_progress_bar=False, enable_model_summary=False, val_check_interval=2,
              check_val_every_n_epoch=None, num_sanity_val_steps=1).fit(module, datamodule=data)
    results = module.results()
    diagnostics = results["hint_diagnostics"]
    assert [d["label"] for d in diagnostics] == ["blocks.0.neuron->body.4"] * 2
    for d in diagnostics:
        assert [h["step"] for h in d["history"]] == [2, 4]  # after each training stretch, none at sanity check
        assert d["grad_ratio"] == d["history"][-1]["grad_ratio"] > 0 and -1 <= d["grad_cosine"] <= 1
    assert all(h["grad_ratio"] <= 0.5 + 1e-6 for h in diagnostics[0]["history"])
    summary = module.hint_summary()
    assert summary["hints/1/grad_ratio"] == diagnostics[1]["grad_ratio"] and "hints/0/grad_cosine" in summary
    recorded = results["hints"][0]
    assert (recorded["normalize"], recorded["log_distance"], recorded["max_grad_ratio"],
            recorded["teacher_signal"], recorded["teacher_tail"]) == ("channel", True, 0.5, "pre", False)
    assert results["hints"][1]["teacher_tail"] is True
