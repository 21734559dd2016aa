import pytest
import torch
from torch import nn

from distill.errors import ConfigError
from distill.hints import Hint, HintHead, HintSet, attention_map, hint_distance, resolve_module, time_major

T = 3


class ToyNeuron(nn.Module):
    """Follows the neuron contract: [T, B, ...] current in, spikes out, optional membrane record."""

    record_membrane = False

    def forward(self, current):
        membrane = current.cumsum(0)
        if self.record_membrane:
            self.membrane = membrane
        return (membrane > 0.2).float() + membrane - membrane.detach()  # straight-through


class ToyStudent(nn.Module):
    timesteps = T
    in_channels = 1

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.neuron = ToyNeuron()
        self.pool = nn.AvgPool2d(2)
        self.head = nn.Conv2d(4, 1, 3, padding=1)

    def forward(self, x):
        spikes = self.neuron(self.conv(x).unsqueeze(0).expand(T, -1, -1, -1, -1))
        self.pool(spikes.flatten(0, 1))  # a folded [T*B] feature at half resolution
        return x + self.head(spikes.mean(0))


class ToyTeacher(nn.Module):
    in_channels = 1

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(),
                                  nn.Conv2d(8, 1, 3, padding=1))

    def forward(self, x):
        return x - self.body(x)


EXAMPLE = torch.rand(2, 1, 8, 8)


def test_unknown_path_lists_closest_names():
    with pytest.raises(ConfigError) as err:
        HintSet([Hint(teacher="body.33", student="neuron")], ToyTeacher(), ToyStudent(), EXAMPLE)
    message = str(err.value)
    assert "body.33" in message and "body.3" in message and "ToyTeacher" in message
    with pytest.raises(ConfigError, match="neuronn"):
        resolve_module(ToyStudent(), "neuronn", "student")


def test_adapter_channels_inferred_by_dry_run():
    hints = HintSet([Hint(teacher="body.1", student="neuron", adapter="conv1x1")], ToyTeacher(), ToyStudent(), EXAMPLE)
    adapter = hints.heads[0].adapter
    assert isinstance(adapter, nn.Conv2d) and (adapter.in_channels, adapter.out_channels) == (4, 8)
    stack = HintSet([Hint(teacher="body.1", student="neuron", adapter="conv_stack")], ToyTeacher(), ToyStudent(), EXAMPLE)
    assert stack.heads[0].adapter[0].in_channels == 4 and stack.heads[0].adapter[-1].out_channels == 8


def test_identity_adapter_channel_mismatch_names_channels():
    with pytest.raises(ConfigError, match="4 student channels to 8 teacher channels"):
        HintSet([Hint(teacher="body.1", student="neuron", adapter="identity")], ToyTeacher(), ToyStudent(), EXAMPLE)
    # attention transfer compares channel-pooled maps, so identity is fine there
    HintSet([Hint(teacher="body.1", student="neuron", adapter="identity", loss="attention")],
            ToyTeacher(), ToyStudent(), EXAMPLE)


def test_spatial_mismatch_rejected_with_both_shapes_or_resized():
    with pytest.raises(ConfigError) as err:
        HintSet([Hint(teacher="body.1", student="pool")], ToyTeacher(), ToyStudent(), EXAMPLE)
    assert "(4, 4, 4)" in str(err.value) and "(8, 8, 8)" in str(err.value)
    hints = HintSet([Hint(teacher="body.1", student="pool", resize=True)], ToyTeacher(), ToyStudent(), EXAMPLE)
    student, teacher = ToyStudent(), ToyTeacher()
    with hints.capture(student, "student") as s_taps:
        student(EXAMPLE)
    with hints.capture(teacher, "teacher") as t_taps:
        teacher(EXAMPLE)
    total, losses = hints([s_taps[0].take()], [t_taps[0].take()], T, step=0)
    assert torch.isfinite(total) and losses[0] > 0


def test_folded_feature_unfolds_to_time_major():
    folded = torch.arange(T * 2 * 3, dtype=torch.float).reshape(T * 2, 3, 1, 1)
    assert time_major(folded, T, 2).shape == (T, 2, 3, 1, 1)
    assert torch.equal(time_major(folded, T, 2)[1, 0], folded[2])
    analog = torch.rand(2, 3, 4, 4)
    assert time_major(analog, T, 2).shape == (1, 2, 3, 4, 4)


@pytest.mark.parametrize("reduce", ["mean", "last", "per_step"])
def test_time_reduce_modes_by_hand(reduce):
    head = HintHead(Hint(teacher="t", student="s", adapter="identity", loss="mse", time_reduce=reduce),
                    torch.Size((T, 2, 3, 4, 4)), torch.Size((2, 3, 4, 4)))
    student = torch.stack([torch.full((2, 3, 4, 4), float(t + 1)) for t in range(T)])  # 1, 2, 3 over time
    teacher = torch.full((2, 3, 4, 4), 2.5)
    expected = {"mean": (2.0 - 2.5) ** 2, "last": (3.0 - 2.5) ** 2,
                "per_step": ((1 - 2.5) ** 2 + (2 - 2.5) ** 2 + (3 - 2.5) ** 2) / 3}[reduce]
    assert float(head(student, teacher)) == pytest.approx(expected)


def test_hint_distances():
    a = torch.rand(2, 4, 5, 5)
    for kind in ("mse", "l1", "cosine", "attention"):
        assert float(hint_distance(kind, a, a)) == pytest.approx(0.0, abs=1e-6)
    assert float(hint_distance("cosine", a, 3 * a)) == pytest.approx(0.0, abs=1e-6)  # scale-free
    assert float(hint_distance("cosine", a, -a)) == pytest.approx(2.0, abs=1e-6)
    assert torch.allclose(attention_map(a).norm(dim=1), torch.ones(2))


def test_hooks_removed_and_membrane_flag_restored():
    student, teacher = ToyStudent(), ToyTeacher()
    hints = HintSet([Hint(teacher="body.1", student="neuron", student_signal="membrane")], teacher, student, EXAMPLE)
    with hints.capture(student, "student") as taps:
        assert student.neuron.record_membrane is True and len(student.neuron._forward_hooks) == 1
        student(EXAMPLE)
    membrane = taps[0].take()
    assert membrane.shape == (T, 2, 4, 8, 8)
    assert torch.allclose(membrane[-1], student.conv(EXAMPLE) * T, atol=1e-5)
    assert len(student.neuron._forward_hooks) == 0 and student.neuron.record_membrane is False
    assert all(len(m._forward_hooks) == 0 for m in teacher.modules())


def test_current_signal_is_neuron_input_and_membrane_needs_neuron():
    student, teacher = ToyStudent(), ToyTeacher()
    hints = HintSet([Hint(teacher="body.1", student="neuron", student_signal="current")], teacher, student, EXAMPLE)
    with hints.capture(student, "student") as taps:
        student(EXAMPLE)
    assert torch.allclose(taps[0].take()[0], student.conv(EXAMPLE))
    with pytest.raises(ConfigError, match="needs a spiking neuron"):
        HintSet([Hint(teacher="body.1", student="conv", student_signal="membrane")], teacher, student, EXAMPLE)


def test_hint_gradients_reach_student_and_adapter_not_teacher():
    student, teacher = ToyStudent(), ToyTeacher().requires_grad_(False)
    hints = HintSet([Hint(teacher="body.1", student="neuron", student_signal="current")], teacher, student, EXAMPLE)
    with hints.capture(student, "student") as s_taps:
        student(EXAMPLE)
    with torch.no_grad(), hints.capture(teacher, "teacher") as t_taps:
        teacher(EXAMPLE)
    total, _ = hints([s_taps[0].take()], [t_taps[0].take()], T, step=0)
    total.backward()
    assert student.conv.weight.grad.abs().sum() > 0
    assert hints.heads[0].adapter.weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in teacher.parameters())


@pytest.mark.parametrize("field,value", [("adapter", "mlp"), ("loss", "kl"), ("time_reduce", "max"),
                                         ("student_signal", "voltage")])
def test_bad_hint_fields_named(field, value):
    with pytest.raises(ConfigError) as err:
        Hint(teacher="a", student="b", **{field: value})
    assert value in str(err.value) and field in str(err.value)


@pytest.mark.parametrize("signal", ["spikes", "membrane", "current"])
def test_capture_joins_time_chunks_and_ignores_recompute(signal):
    from students.spiking_dncnn import SpikingDnCNN

    torch.manual_seed(0)
    whole = SpikingDnCNN(features=6, depth=4, timesteps=4)
    chunked = SpikingDnCNN(features=6, depth=4, timesteps=4, checkpoint_segments=2)
    chunked.load_state_dict(whole.state_dict())
    whole.eval(), chunked.eval()  # in training mode BN would see per-chunk statistics (documented)
    teacher, x = ToyTeacher(), torch.rand(2, 1, 8, 8)
    captured = []
    for student in (whole, chunked):
        hints = HintSet([Hint(teacher="body.1", student="blocks.0.neuron", student_signal=signal)], teacher, student, x)
        with hints.capture(student, "student") as taps:
            student(x).sum().backward()  # backward recomputes chunks; the tap must not see those calls
        captured.append(taps[0].take())
    assert captured[0].shape == (4, 2, 6, 8, 8)
    assert torch.allclose(captured[0], captured[1], atol=1e-6)


def test_hint_from_an_ann_twin_teacher():
    from teachers.twins import DnCNNTwin

    teacher, student, x = DnCNNTwin(features=8, depth=4), ToyStudent(), torch.rand(2, 1, 8, 8)
    hints = HintSet([Hint(teacher="blocks.0.neuron", student="neuron")], teacher, student, x)
    with hints.capture(student, "student") as s_taps:
        student(x)
    with torch.no_grad(), hints.capture(teacher, "teacher") as t_taps:
        teacher(x)
    total, (loss,) = hints([s_taps[0].take()], [t_taps[0].take()], T, step=0)
    assert hints.heads[0].adapter.out_channels == 8 and torch.isfinite(total) and loss > 0
