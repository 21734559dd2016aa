"""Per-image PSNR/SSIM against scikit-image on real images."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from skimage.color import rgb2ycbcr
from skimage.metrics import peak_signal_noise_ratio as sk_psnr
from skimage.metrics import structural_similarity as sk_ssim
from torchmetrics.image import PeakSignalNoiseRatio

from distill.data import read_image, samples_dir
from distill.errors import ConfigError, DataError
from distill.metrics import RestorationMetrics, ScoresByRole, psnr_per_image, rgb_to_y, ssim_per_image

# torchmetrics takes 10/ln(10) in float32: PSNR agrees with skimage to ~1e-6 dB, SSIM to 1e-9.
SK_SSIM = dict(gaussian_weights=True, sigma=1.5, use_sample_covariance=False)


def _noisy(x: torch.Tensor, sigma: float, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (x + sigma * torch.randn(x.shape, generator=g)).clamp(0, 1)


@pytest.fixture(scope="module")
def gray_pairs():
    cam = read_image(samples_dir() / "camera.png", 1)
    clean = torch.stack([cam[:, 60:124, 200:264], cam[:, 300:364, 100:164]])
    noisy = torch.stack([_noisy(clean[0], 0.05, 0), _noisy(clean[1], 0.2, 1)])
    return noisy, clean


@pytest.fixture(scope="module")
def rgb_pairs():
    ast = read_image(samples_dir() / "astronaut.png", 3)
    chelsea = read_image(samples_dir() / "chelsea.png", 3)
    clean = torch.stack([ast[:, 100:164, 180:244], chelsea[:, 40:104, 120:184]])
    noisy = torch.stack([_noisy(clean[0], 0.03, 2), _noisy(clean[1], 0.12, 3)])
    return noisy, clean


def _hwc(x: torch.Tensor) -> np.ndarray:
    return x.permute(1, 2, 0).double().numpy()


def test_gray_psnr_ssim_match_skimage(gray_pairs):
    noisy, clean = gray_pairs
    psnr = psnr_per_image(noisy, clean)
    ssim = ssim_per_image(noisy, clean)
    for i in range(2):
        p, t = noisy[i, 0].double().numpy(), clean[i, 0].double().numpy()
        assert psnr[i].item() == pytest.approx(sk_psnr(t, p, data_range=1.0), abs=1e-5)
        assert ssim[i].item() == pytest.approx(sk_ssim(t, p, data_range=1.0, **SK_SSIM), abs=1e-9)
    m = RestorationMetrics()
    m.update(noisy[:1], clean[:1])
    m.update(noisy[1:], clean[1:])
    out = m.compute()
    assert out["psnr"] == pytest.approx(psnr.mean().item(), abs=1e-6)
    assert out["ssim"] == pytest.approx(ssim.mean().item(), abs=1e-6)
    m.reset()
    assert math.isnan(m.compute()["psnr"])


def test_rgb_psnr_ssim_match_skimage(rgb_pairs):
    noisy, clean = rgb_pairs
    psnr = psnr_per_image(noisy, clean)
    ssim = ssim_per_image(noisy, clean)
    for i in range(2):
        p, t = _hwc(noisy[i]), _hwc(clean[i])
        assert psnr[i].item() == pytest.approx(sk_psnr(t, p, data_range=1.0), abs=1e-5)
        assert ssim[i].item() == pytest.approx(sk_ssim(t, p, data_range=1.0, channel_axis=2, **SK_SSIM), abs=1e-9)


def test_y_channel_and_crop_border_match_skimage(rgb_pairs):
    noisy, clean = rgb_pairs
    b = 4
    m = RestorationMetrics(y_channel=True, crop_border=b)
    m.update(noisy, clean)
    ps, ss = [], []
    for i in range(2):
        # skimage's rgb2ycbcr gives Y in [16, 235] for [0, 1] input: the BasicSR convention
        yp = rgb2ycbcr(_hwc(noisy[i]))[..., 0] / 255.0
        yt = rgb2ycbcr(_hwc(clean[i]))[..., 0] / 255.0
        yp, yt = yp[b:-b, b:-b], yt[b:-b, b:-b]
        ps.append(sk_psnr(yt, yp, data_range=1.0))
        ss.append(sk_ssim(yt, yp, data_range=1.0, **SK_SSIM))
    out = m.compute()
    assert out["psnr"] == pytest.approx(np.mean(ps), abs=1e-5)
    assert out["ssim"] == pytest.approx(np.mean(ss), abs=1e-6)
    assert m.protocol()["y_channel"] is True and m.protocol()["crop_border"] == 4
    assert m.protocol()["data_range"] == 1.0
    y = rgb_to_y(torch.tensor([[0.0, 1.0]]).repeat(3, 1).T.reshape(2, 3, 1, 1).double())
    assert torch.allclose(y.flatten(), torch.tensor([16 / 255, 235 / 255], dtype=torch.float64))


def test_data_range_255_and_clamping(gray_pairs):
    noisy, clean = gray_pairs
    at255 = psnr_per_image(noisy * 255, clean * 255, data_range=255.0)
    assert torch.allclose(at255, psnr_per_image(noisy, clean))
    s255 = ssim_per_image(noisy * 255, clean * 255, data_range=255.0)
    assert torch.allclose(s255, ssim_per_image(noisy, clean))
    # predictions are clamped to [0, data_range] before scoring
    over = noisy.clone()
    over[0, 0, 0, 0] = 5.0
    clipped = over.clamp(0, 1)
    assert torch.allclose(psnr_per_image(over, clean), psnr_per_image(clipped, clean))


def test_per_image_mean_differs_from_batch_pooled(gray_pairs):
    noisy, clean = gray_pairs
    per_image = psnr_per_image(noisy, clean)
    assert float(per_image[0] - per_image[1]) > 5  # very different images
    pooled = PeakSignalNoiseRatio(data_range=1.0)  # torchmetrics default: MSE pooled over the batch
    pooled.update(noisy.double(), clean.double())
    ours = RestorationMetrics()
    ours.update(noisy, clean)
    assert ours.compute()["psnr"] == pytest.approx(per_image.mean().item(), abs=1e-6)
    assert abs(ours.compute()["psnr"] - float(pooled.compute())) > 1.0


def test_metric_errors():
    with pytest.raises(ConfigError, match="data_range"):
        RestorationMetrics(data_range=0)
    with pytest.raises(ConfigError, match="crop_border"):
        RestorationMetrics(crop_border=-1)
    m = RestorationMetrics(crop_border=10)
    with pytest.raises(DataError, match="smaller"):
        m.update(torch.rand(1, 1, 24, 24), torch.rand(1, 1, 24, 24))
    with pytest.raises(DataError, match="differs"):
        m.update(torch.rand(1, 1, 24, 24), torch.rand(1, 1, 24, 23))


def test_scores_by_role_keep_each_roles_images_apart_and_collect_resets(gray_pairs):
    """Each role's PSNR is the scikit-image mean over its own images; `collect` starts the next evaluation empty."""
    noisy, clean = gray_pairs
    blurred = torch.nn.functional.avg_pool2d(noisy, 3, stride=1, padding=1)
    scores = ScoresByRole(("input", "model"))
    scores.score({"input": noisy, "model": blurred}, clean)
    for role, images in (("input", noisy), ("model", blurred)):
        expected = np.mean([sk_psnr(c[0].double().numpy(), i[0].double().numpy(), data_range=1.0)
                            for c, i in zip(clean, images)])
        assert scores.current()[role]["psnr"] == pytest.approx(expected, abs=1e-5)
    assert scores.collect() != {}
    assert all(math.isnan(s["psnr"]) for s in scores.current().values())
