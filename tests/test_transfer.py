"""Warm-start transfer: QCFS twins, the exact copy into IF students, rate calibration, weight selection."""
import pytest
import snntorch
import torch

from distill.errors import ConfigError
from students.neurons import IF, QCFS, MultiThresholdIF, build_neuron
from students.spiking_dncnn import SpikingDnCNN
from students.transfer import (
    calibrate_rates, calibrate_weights, channel_rates, copy_twin, init_thresholds, make_twin, neuron_paths, select_from_dncnn,
    spikes_per_step,
)
from teachers.dncnn import DnCNN


def snntorch_if_rates(current: torch.Tensor, threshold: float, steps: int) -> torch.Tensor:
    """Spikes per step of snntorch's IF (Leaky, beta=1, soft reset) fed ``current`` for ``steps``, from half the
    threshold: the independent reference for the QCFS equivalence."""
    neuron = snntorch.Leaky(beta=1.0, threshold=threshold, reset_mechanism="subtract")
    mem = torch.full_like(current, 0.5 * threshold)
    total = torch.zeros_like(current)
    for _ in range(steps):
        spk, mem = neuron(current, mem)
        total += spk
    return total / steps


@pytest.mark.parametrize("steps", [1, 4, 8])
def test_qcfs_equals_if_rate_of_a_constant_current(steps):
    torch.manual_seed(0)
    z = torch.randn(4000) * 0.8
    threshold = 0.7
    ours = QCFS(steps, threshold)(z)
    expected = torch.clamp(torch.floor(z * steps / threshold + 0.5), 0, steps) / steps  # the paper's formula
    assert torch.equal(ours, expected)
    reference = snntorch_if_rates(z, threshold, steps)
    # the two can differ only where z sits on a rounding boundary (strict vs. non-strict threshold)
    assert (ours != reference).float().mean() < 1e-3


@pytest.mark.parametrize("leak", [0.0, 0.01])
def test_qcfs_gradient_is_the_clipped_straight_through_one_with_a_leak(leak):
    z = torch.tensor([-1.0, 0.2, 0.6, 1.8, 3.0], requires_grad=True)
    QCFS(4, 2.0, leak=leak)(z).sum().backward()
    assert torch.allclose(z.grad, torch.tensor([leak, 1.0, 1.0, 1.0, leak]) / 2.0)


def test_a_silent_twin_layer_recovers_through_the_leak():
    """Every input of the activation below zero: with no leak nothing upstream learns; with it, it does."""
    for leak, moves in ((0.0, False), (0.01, True)):
        conv = torch.nn.Conv2d(1, 2, 1)
        with torch.no_grad():
            conv.bias.fill_(-5.0)
        act = QCFS(4, 1.0, leak=leak)
        act(conv(torch.rand(1, 1, 4, 4))).sum().backward()
        assert (conv.bias.grad.abs().sum() > 0) == moves


def test_make_twin_swaps_neurons_sets_one_step_and_leaves_the_student_alone():
    student = SpikingDnCNN(1, 6, 4, timesteps=4, neuron="if", norm="none", zero_tail=False)
    before = {k: v.clone() for k, v in student.state_dict().items()}
    twin = make_twin(student)
    assert neuron_paths(twin) == neuron_paths(student) == ["head.neuron", "blocks.0.neuron", "blocks.1.neuron"]
    assert all(isinstance(twin.get_submodule(p), QCFS) and twin.get_submodule(p).levels == 4 for p in neuron_paths(twin))
    assert twin.timesteps == 1 and twin.head.conv.timesteps == 1
    with torch.no_grad():
        for p in twin.parameters():
            p.add_(1.0)
    assert all(torch.equal(before[k], v) for k, v in student.state_dict().items())


def copied_pair(seed: int, depth: int, batch: int, side: int):
    """A data-initialised QCFS twin of an 8-channel IF student, copied into it; with the batch used."""
    torch.manual_seed(seed)
    student = SpikingDnCNN(1, 8, depth, timesteps=4, neuron="if", norm="none", zero_tail=False, init_membrane=0.5)
    twin = make_twin(student)
    x = torch.rand(batch, 1, side, side)
    init_thresholds(twin, x)
    copy_twin(twin, student)
    return student, twin, x


def test_copy_of_a_one_layer_twin_is_exact_at_the_first_neuron():
    student, twin, x = copied_pair(1, depth=3, batch=2, side=16)
    assert student.head.neuron.init_membrane == 0.5
    assert float(student.head.neuron.threshold) == float(twin.head.neuron.threshold)
    for key, value in twin.state_dict().items():
        if not key.endswith("threshold"):
            assert torch.equal(student.state_dict()[key], value), key
    twin_rate = channel_rates(twin, x, ["head.neuron"])["head.neuron"]
    with torch.no_grad():
        spikes = student.head.neuron(student.head.conv(x))
        current = twin.head.conv(x)[0]
    assert torch.allclose(spikes.mean(0).mean((0, 2, 3)), twin_rate, atol=1e-6)
    assert torch.allclose(spikes.mean(0), twin.head.neuron(current), atol=1e-6)


def test_copy_refuses_a_zero_reset_student():
    student = SpikingDnCNN(1, 6, 3, timesteps=4, neuron="if", reset_mechanism="zero", norm="none", init_membrane=0.5)
    with pytest.raises(ConfigError, match="reset_mechanism='zero'.*subtract"):
        copy_twin(make_twin(student), student)


@pytest.mark.parametrize("neuron, levels, need", [("if", None, "0.5"), ("multi_threshold", [0.5, 0.5], "0.25")])
def test_copy_refuses_a_start_the_checkpoint_would_not_rebuild(neuron, levels, need):
    """The copy needs the neuron to start at half a spike's threshold; setting it in place would be lost when a
    checkpoint rebuilds the student from its recipe, so a recipe with another init_membrane is refused."""
    student = SpikingDnCNN(1, 6, 3, timesteps=4, neuron=neuron, neuron_levels=levels, norm="none", init_membrane=0.0)
    with pytest.raises(ConfigError, match=rf"head.neuron.*init_membrane: {need} \(it has init_membrane=0.0\)"):
        copy_twin(make_twin(student), student)


def test_init_thresholds_keeps_every_layer_alive():
    torch.manual_seed(0)
    student = SpikingDnCNN(1, 12, 8, timesteps=4, neuron="if", norm="none")
    twin = make_twin(student)
    x = torch.rand(4, 1, 24, 24)
    silent = channel_rates(twin, x, neuron_paths(twin))
    assert float(silent["blocks.5.neuron"].mean()) < 1e-3  # at the default init, activity dies with depth
    init_thresholds(twin, x, percentile=99.0)
    alive = channel_rates(twin, x, neuron_paths(twin))
    assert all(float(rate.mean()) > 0.02 for rate in alive.values())


@pytest.mark.parametrize("target", ["twin", 0.15])
def test_calibration_reaches_the_target_rates_on_a_fixed_batch(target):
    student, twin, x = copied_pair(2, depth=5, batch=8, side=24)
    paths = neuron_paths(student)
    if target == "twin":
        targets = channel_rates(twin, x, paths)
    else:
        targets = {p: torch.full((8,), target) for p in paths}
    before = channel_rates(student, x, paths)
    errors = calibrate_rates(student, x, targets, iterations=8)
    after = channel_rates(student, x, paths)
    for p in paths:
        assert float((after[p] - targets[p]).abs().max()) == pytest.approx(errors[p], abs=1e-6)
        assert errors[p] < 0.02, (p, errors[p])
    assert max(float((before[p] - targets[p]).abs().max()) for p in paths) > 0.05  # there was something to fix


def test_calibration_names_a_neuron_without_a_bias():
    student = SpikingDnCNN(1, 6, 3, timesteps=2, neuron="if", norm="none")
    student.head.conv.layer.bias = None
    with pytest.raises(ConfigError, match="no bias feeds neuron 'head.neuron'"):
        calibrate_rates(student, torch.rand(1, 1, 8, 8), {"head.neuron": torch.zeros(6)})


def _rate_errors(student, twin, x):
    """Per-layer MSE between the student's firing rate (mean over T) and the twin's activation, and the output's."""
    seen = {}
    for name, net in (("student", student), ("twin", twin)):
        rates = {}
        hooks = [net.get_submodule(p).register_forward_hook(
            lambda _m, _i, o, p=p, r=rates: r.__setitem__(p, o.mean(0) if o.dim() == 5 else o))
            for p in neuron_paths(net)]
        with torch.no_grad():
            rates["output"] = net(x)
        for h in hooks:
            h.remove()
        seen[name] = rates
    return {k: float((seen["student"][k] - seen["twin"][k]).pow(2).mean()) for k in seen["twin"]}


def test_weight_calibration_fits_every_layer_and_the_output_to_the_twin():
    student, twin, x = copied_pair(3, depth=5, batch=8, side=24)
    calibrate_rates(student, x, channel_rates(twin, x, neuron_paths(twin)))
    student.train()
    flags = {n: p.requires_grad for n, p in student.named_parameters()}
    before = _rate_errors(student, twin, x)
    errors = calibrate_weights(student, twin, x, iterations=40, lr=3e-3)
    after = _rate_errors(student, twin, x)
    assert set(errors) == set(neuron_paths(student)) | {"tail"}
    assert before["head.neuron"] == 0.0 and after["head.neuron"] == 0.0  # a constant current: the copy is exact
    for path in neuron_paths(student)[1:]:  # deeper layers see spike trains: the copy is off, the fit closer
        assert 0 < after[path] < before[path], (path, before[path], after[path])
    assert after["output"] < 0.9 * before["output"], (before["output"], after["output"])
    assert errors["tail"] == pytest.approx(after["output"], rel=1e-4)  # the returned error is the measured one
    assert student.training and {n: p.requires_grad for n, p in student.named_parameters()} == flags
    with pytest.raises(ConfigError, match="has no output module 'head_out'"):
        calibrate_weights(student, twin, x, iterations=1, output="head_out")


def test_weight_selection_of_an_equal_teacher_reproduces_it():
    """Same width and depth, fine quantisation and no clipping: the selected twin computes the teacher."""
    torch.manual_seed(3)
    teacher = DnCNN(1, 8, 5, bn=True).eval()
    with torch.no_grad():  # non-trivial batch-norm statistics, which the selection must fold
        for m in teacher.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.1, 0.1)
    student = SpikingDnCNN(1, 8, 5, timesteps=512, neuron="if", norm="none")
    twin = make_twin(student)
    x = torch.rand(2, 1, 20, 20)
    select_from_dncnn(teacher, twin, x, percentile=100.0)
    with torch.no_grad():
        assert torch.allclose(twin(x), teacher(x), atol=2e-3)


def test_weight_selection_takes_evenly_spaced_channels_and_checks_shapes():
    teacher = DnCNN(1, 16, 6, bn=False)
    twin = make_twin(SpikingDnCNN(1, 4, 4, timesteps=4, neuron="if", norm="none"))
    select_from_dncnn(teacher, twin, torch.rand(1, 1, 12, 12))
    keep = [0, 5, 10, 15]
    assert torch.equal(twin.head.conv.layer.bias, teacher.body[0].bias[keep].detach())
    with pytest.raises(ConfigError, match="norm='none'"):
        select_from_dncnn(teacher, make_twin(SpikingDnCNN(1, 4, 4, timesteps=4, neuron="if")), torch.rand(1, 1, 8, 8))
    with pytest.raises(ConfigError, match="no deeper than its teacher"):
        select_from_dncnn(teacher, make_twin(SpikingDnCNN(1, 4, 8, timesteps=4, neuron="if", norm="none")),
                          torch.rand(1, 1, 8, 8))
    with pytest.raises(ConfigError, match="teachers.dncnn.DnCNN"):
        select_from_dncnn(torch.nn.Identity(), twin, torch.rand(1, 1, 8, 8))


def test_weight_selection_of_a_nested_teacher_reproduces_its_nested_network():
    """A teacher trained with a nested width gives a student of that width its first channels: the selected twin
    computes the teacher's nested sub-network (fine quantisation, no clipping), not the evenly spaced pick."""
    torch.manual_seed(5)
    teacher = DnCNN(1, 12, 5, bn=False, nested_features=4).eval()
    twin = make_twin(SpikingDnCNN(1, 4, 5, timesteps=512, neuron="if", norm="none"))
    x = torch.rand(2, 1, 16, 16)
    select_from_dncnn(teacher, twin, x, percentile=100.0)
    assert torch.equal(twin.head.conv.layer.bias, teacher.body[0].bias[:4].detach())
    assert not torch.equal(twin.head.conv.layer.bias, teacher.body[0].bias[[0, 4, 7, 11]].detach())  # the spread pick
    with torch.no_grad():
        assert torch.allclose(twin(x), teacher.nested_output(x), atol=2e-3)


def test_weight_selection_of_a_quantised_nested_teacher_is_exact_at_its_levels():
    """A nested network trained with QCFS hands over its learned thresholds: the selected twin computes the teacher's
    nested output exactly at the teacher's levels (coarse T = 4 included), and at 8 levels it computes that nested
    network with its clips kept and 8 levels instead of 4."""
    torch.manual_seed(8)
    teacher = DnCNN(1, 12, 5, bn=False, nested_features=4, nested_levels=4)
    x = torch.rand(2, 1, 16, 16)
    teacher.train()
    teacher.nested_output(x)  # the first training batch sets the thresholds
    with torch.no_grad():
        for act in teacher.nested_acts:
            act.threshold.mul_(0.8)  # as if training had moved them off the percentile
    teacher.eval()
    twin = make_twin(SpikingDnCNN(1, 4, 5, timesteps=4, neuron="if", norm="none"))
    select_from_dncnn(teacher, twin, torch.rand(2, 1, 16, 16))
    with torch.no_grad():
        assert torch.allclose(twin(x), teacher.nested_output(x), atol=1e-5)
        coarse = teacher.nested_output(x)
        other = make_twin(SpikingDnCNN(1, 4, 5, timesteps=8, neuron="if", norm="none"))
        select_from_dncnn(teacher, other, x)
        for act in teacher.nested_acts:
            act.levels = 8
        assert torch.allclose(other(x), teacher.nested_output(x), atol=1e-5)
        assert not torch.allclose(other(x), coarse, atol=1e-3)  # the finer rounding is a different network


def test_if_neuron_from_half_threshold_matches_snntorch():
    """The student's own IF with init_membrane 0.5 is the reference loop's neuron."""
    torch.manual_seed(4)
    current = torch.randn(6, 3, 5) * 0.6
    ours = IF(threshold=0.8, init_membrane=0.5)(current)
    neuron = snntorch.Leaky(beta=1.0, threshold=0.8, reset_mechanism="subtract")
    mem, spikes = torch.full_like(current[0], 0.4), []
    for t in range(6):
        spk, mem = neuron(current[t], mem)
        spikes.append(spk)
    assert torch.equal(ours, torch.stack(spikes))


def burst_if_rate(current: torch.Tensor, threshold: float, bursts: int, steps: int) -> torch.Tensor:
    """Hand-written reference: an IF neuron that may fire up to ``bursts`` spikes of threshold / bursts a step (soft
    reset by each), from half a spike's threshold; the mean output per step in threshold units."""
    quantum = threshold / bursts
    mem, total = torch.full_like(current, 0.5 * quantum), torch.zeros_like(current)
    for _ in range(steps):
        mem = mem + current
        for _ in range(bursts):
            fire = (mem > quantum).float()
            mem, total = mem - fire * quantum, total + fire / bursts
    return total / steps


@pytest.mark.parametrize("bursts", [2, 3])
def test_a_uniform_multi_threshold_neuron_is_qcfs_with_bursts_times_t_levels(bursts):
    torch.manual_seed(1)
    z = torch.randn(1, 1, 1, 4000) * 0.8
    threshold = 0.7
    neuron = MultiThresholdIF((1.0 / bursts,) * bursts, threshold=threshold, init_membrane=0.5 / bursts)
    assert spikes_per_step(neuron) == bursts and spikes_per_step(IF()) == 1
    ours = neuron(z.expand(4, -1, -1, -1, -1).contiguous()).mean(0) / threshold
    reference = burst_if_rate(z, threshold, bursts, 4)
    assert (ours - reference).abs().max() < 1e-5
    twin = QCFS(4 * bursts, threshold)(z)
    assert ((twin - reference).abs() > 1e-5).float().mean() < 1e-3  # only rounding boundaries (strict vs. non-strict) differ


def test_copy_into_a_burst_student_is_exact_at_the_first_neuron():
    """A [0.5, 0.5] student's twin has 2T levels; after the copy each neuron has threshold 1 with its input scaled by
    the twin's threshold, so its output per step is the twin's rate."""
    torch.manual_seed(3)
    student = SpikingDnCNN(1, 8, 3, timesteps=4, neuron="multi_threshold", neuron_levels=[0.5, 0.5], norm="none",
                           zero_tail=False, init_membrane=0.25)
    twin = make_twin(student)
    assert all(twin.get_submodule(p).levels == 8 for p in neuron_paths(twin))
    x = torch.rand(2, 1, 16, 16)
    init_thresholds(twin, x)
    copy_twin(twin, student)
    assert student.head.neuron.init_membrane == 0.25 and float(student.head.neuron.threshold) == 1.0
    with torch.no_grad():
        out = student.head.neuron(student.head.conv(x)).mean(0)
        rate = twin.head.neuron(twin.head.conv(x)[0])
    assert (out - rate).abs().max() < 1e-5
    assert len(torch.unique(rate)) > 5  # more than the 5 values 4 levels allow


def test_a_twin_needs_a_uniform_ladder_and_levels_need_a_multi_threshold_neuron():
    student = SpikingDnCNN(1, 4, 3, timesteps=4, neuron="multi_threshold", norm="none")  # the (2, 1, 0.5, 0.25) default
    with pytest.raises(ConfigError, match=r"head.neuron.*\(2.0, 1.0, 0.5, 0.25\).*equal levels"):
        make_twin(student)
    with pytest.raises(ConfigError, match=r"neuron_levels=\[0.5, 0.5\] needs neuron='multi_threshold'.*'if'"):
        build_neuron("if", levels=[0.5, 0.5])
