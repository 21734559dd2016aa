"""ANN -> SNN conversion of the U-Net: connection-wise normalisation, convergence with T."""
from __future__ import annotations

import functools
import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from distill.errors import ConfigError
from students.conversion import activation_scales, ann_to_snn_key, convert_unet
from students.spiking_unet import SpikingUNet
from teachers.unet import UNet


pytestmark = pytest.mark.usefixtures("single_thread")


def _camera() -> torch.Tensor:
    spec = importlib.util.find_spec("skimage")
    assert spec is not None and spec.submodule_search_locations, "scikit-image is a project dependency"
    path = Path(list(spec.submodule_search_locations)[0]) / "data" / "camera.png"
    with Image.open(path) as im:
        return torch.from_numpy(np.asarray(im.convert("L"), dtype=np.float32) / 255.0)


@functools.cache
def _trained_unet():
    """A tiny U-Net briefly trained to denoise real patches (camera.png, sigma 25/255); trained once per session."""
    img = _camera()
    patches = torch.stack(
        [img[i : i + 32, j : j + 32] for i in range(96, 416, 80) for j in range(96, 416, 80)]
    ).unsqueeze(1)
    g = torch.Generator().manual_seed(0)
    noisy = patches + 25 / 255 * torch.randn(patches.shape, generator=g)
    torch.manual_seed(0)
    ann = UNet(preset="tiny")
    opt = torch.optim.Adam(ann.parameters(), 2e-3)
    first = None
    for _ in range(25):
        opt.zero_grad()
        loss = torch.nn.functional.mse_loss(ann(noisy), patches)
        loss.backward()
        opt.step()
        first = first if first is not None else loss.item()
    assert loss.item() < first
    return ann.eval(), noisy, patches


@pytest.fixture
def trained(single_thread):
    """(ann, noisy, clean) of :func:`_trained_unet`, built under the suite's one-thread fixture."""
    return _trained_unet()


def _residual_error(snn, ann, x) -> float:
    with torch.no_grad():
        ref = ann(x) - x
        return float((snn(x) - x - ref).abs().mean() / ref.abs().mean())


def test_converted_output_approaches_ann_as_T_grows(trained):
    ann, noisy, _ = trained
    x = noisy[:6]
    errors = {T: _residual_error(convert_unet(ann, noisy, timesteps=T).eval(), ann, x) for T in (2, 8, 32)}
    assert errors[32] < errors[8] < errors[2], errors
    assert errors[32] < 0.05, errors  # within 5 % of the ANN's predicted residual


def test_if_neurons_convert_too(trained):
    ann, noisy, _ = trained
    x = noisy[:4]
    e8 = _residual_error(convert_unet(ann, noisy, timesteps=8, neuron="if").eval(), ann, x)
    e32 = _residual_error(convert_unet(ann, noisy, timesteps=32, neuron="if").eval(), ann, x)
    assert e32 < e8


def test_weights_are_scaled_connection_wise(trained):
    ann, noisy, _ = trained
    theta = 0.5
    snn = convert_unet(ann, noisy, timesteps=2, threshold=theta)
    lam = activation_scales(ann, noisy)
    assert lam == {k: v for k, v in snn.activation_scales.items() if k != "input"}
    a = dict(ann.named_parameters())
    s = dict(snn.named_parameters())
    # first layer: analog image in, lambda_in = 1, multi-threshold outputs in membrane units
    torch.testing.assert_close(
        s["encoders.0.conv1.layer.weight"], a["encoders.0.conv1.weight"] * theta / lam["encoders.0.act1"]
    )
    torch.testing.assert_close(
        s["encoders.0.conv1.layer.bias"], a["encoders.0.conv1.bias"] * theta / lam["encoders.0.act1"]
    )
    # concatenated [skip, up]: each slice by its own source
    c = ann.channels[1]
    w_ann, w_snn = a["decoders.0.conv1.weight"], s["decoders.0.conv1.layer.weight"]
    out = lam["decoders.0.act1"]
    torch.testing.assert_close(w_snn[:, :c], w_ann[:, :c] * lam["encoders.1.act2"] / out)
    torch.testing.assert_close(w_snn[:, c:], w_ann[:, c:] * lam["decoders.0.up_act"] / out)
    assert lam["encoders.1.act2"] != pytest.approx(lam["decoders.0.up_act"])  # the slices really differ
    # output layer: back to ANN units, bias untouched
    last = f"decoders.{ann.levels - 2}.act2"
    torch.testing.assert_close(s["out.weight"], a["out.weight"] * lam[last] / theta)
    torch.testing.assert_close(s["out.bias"], a["out.bias"])
    assert {ann_to_snn_key(k) for k in a} == set(s)


def test_converted_network_fine_tunes(trained):
    ann, noisy, clean = trained
    snn = convert_unet(ann, noisy, timesteps=4)
    assert isinstance(snn, SpikingUNet) and snn.timesteps == 4
    opt = torch.optim.Adam(snn.parameters(), 1e-4)
    x, y = noisy[:4], clean[:4]
    loss = torch.nn.functional.mse_loss(snn(x), y)
    loss.backward()
    grads = [p.grad for p in snn.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert sum(float(g.abs().sum()) for g in grads) > 0
    opt.step()


def test_conversion_rejects_leaky_neurons_and_bad_percentile(trained):
    ann, noisy, _ = trained
    with pytest.raises(ConfigError, match=r"neuron='lif'.*multi_threshold.*if"):
        convert_unet(ann, noisy, neuron="lif")
    with pytest.raises(ConfigError, match=r"percentile=0"):
        activation_scales(ann, noisy, percentile=0)


@pytest.mark.filterwarnings("ignore:ConvertedSpikingUNet. the U-Net has no checkpoint")
def test_default_calibration_is_registered_by_distill_data(monkeypatch):
    """calibration=None: students cannot import distill, so distill.data registers its default DataModule."""
    import students.conversion as conversion
    from distill.data import DenoisingDataModule

    torch.manual_seed(0)
    ann = UNet(preset="tiny")
    student = conversion.ConvertedSpikingUNet(ann, calibration_patches=2, timesteps=2)
    default = DenoisingDataModule(channels=1, sigma=25.0, patch_size=40)  # the documented default
    reference = convert_unet(ann, conversion.calibration_inputs(default, 2), timesteps=2)
    assert student.activation_scales == reference.activation_scales
    monkeypatch.setattr(conversion, "_default_calibration", None)  # as in a process that never imported distill
    with pytest.raises(ConfigError, match=r"calibration=None.*import distill\.data"):
        conversion.ConvertedSpikingUNet(ann, calibration_patches=2, timesteps=2)
