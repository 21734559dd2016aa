import math

import pytest
import torch
import torch.nn.functional as F

from distill.errors import ConfigError
from distill.losses import RestorationLoss, charbonnier, fft_loss, ssim_loss
from distill.schedules import WeightSchedule, scheduled


def test_constant_and_warmup():
    s = WeightSchedule(warmup_steps=4)
    assert [s(i) for i in range(6)] == [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]


def test_linear_and_cosine_decay_reach_final():
    lin = WeightSchedule(kind="linear", decay_steps=10, final=0.2)
    cos = WeightSchedule(kind="cosine", decay_steps=10, final=0.0)
    assert lin(0) == 1.0 and lin(5) == pytest.approx(0.6) and lin(10) == pytest.approx(0.2) and lin(50) == pytest.approx(0.2)
    assert cos(5) == pytest.approx(0.5) and cos(10) == pytest.approx(0.0)
    assert cos(2) == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.2)))


def test_step_off_and_scaled_weight():
    s = WeightSchedule(off_after=3)
    assert [scheduled(0.12, s, i) for i in range(5)] == [0.12, 0.12, 0.12, 0.0, 0.0]
    assert scheduled(0.5, None, 1000) == 0.5


@pytest.mark.parametrize("kwargs", [{"kind": "exp"}, {"kind": "linear"}, {"warmup_steps": -1}])
def test_bad_schedule_named(kwargs):
    with pytest.raises(ConfigError) as err:
        WeightSchedule(**kwargs)
    assert str(next(iter(kwargs.values()))) in str(err.value)


def test_losses_zero_on_identical_and_positive_otherwise():
    x = torch.rand(2, 1, 16, 16)
    y = (x + 0.1 * torch.randn_like(x)).clamp(0, 1)
    for fn in (fft_loss, ssim_loss):
        assert fn(x, x).abs() < 1e-5
        assert fn(x, y) > 1e-3
    assert float(charbonnier(x, x, eps=1e-3)) == pytest.approx(1e-3)
    assert float(charbonnier(x, y, eps=1e-6)) == pytest.approx(float(F.l1_loss(x, y)), rel=1e-3)


def test_fft_loss_is_amplitude_only():
    x = torch.rand(1, 1, 16, 16)
    shifted = torch.roll(x, shifts=(3, 5), dims=(2, 3))  # same amplitude spectrum, different phase
    assert fft_loss(x, shifted) < 1e-5 and F.l1_loss(x, shifted) > 1e-2


def test_restoration_loss_composes_weights_and_schedules():
    x, y = torch.rand(2, 1, 16, 16), torch.rand(2, 1, 16, 16)
    loss = RestorationLoss(l1=1.0, fft=0.1, schedules={"fft": WeightSchedule(off_after=2)})
    total, parts = loss(x, y, step=0)
    assert set(parts) == {"l1", "fft"}
    assert total == pytest.approx(float(parts["l1"] + 0.1 * parts["fft"]))
    total_late, _ = loss(x, y, step=2)
    assert total_late == pytest.approx(float(parts["l1"]))


def test_restoration_loss_errors():
    with pytest.raises(ConfigError, match="l1=-1"):
        RestorationLoss(l1=-1)
    with pytest.raises(ConfigError, match="at least one"):
        RestorationLoss(l1=0)
    with pytest.raises(ConfigError, match="psnr"):
        RestorationLoss(schedules={"psnr": WeightSchedule()})
