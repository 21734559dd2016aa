"""Tiled restoration: exact where the receptive field fits in half the overlap, bounded, validated."""
import pytest
import torch
from torch import nn

from distill.errors import ConfigError
from distill.tiling import check_tiling, restore_tiled, tile_starts, tile_weights


def conv_stack(layers: int, channels: int = 2, seed: int = 0) -> nn.Module:
    """`layers` 3x3 convolutions with zero padding: receptive-field radius = `layers` pixels."""
    torch.manual_seed(seed)
    mods: list[nn.Module] = []
    for i in range(layers):
        mods.append(nn.Conv2d(channels, channels, 3, padding=1))
        if i < layers - 1:
            mods.append(nn.Tanh())
    return nn.Sequential(*mods).eval()


@pytest.mark.parametrize("size", [(37, 53), (64, 64), (33, 20)])
def test_tiled_equals_untiled_when_radius_fits_half_overlap(size):
    # condition tested: receptive radius r = 3 <= overlap // 2 = 4 -> tiled == untiled to 1e-5,
    # including edge tiles of sizes not divisible by the stride
    model = conv_stack(3)
    image = torch.rand(2, 2, *size)
    with torch.no_grad():
        full = model(image)
        tiled = restore_tiled(model, image, tile=16, overlap=8)
    assert tiled.shape == full.shape
    torch.testing.assert_close(tiled, full, atol=1e-5, rtol=0)


def test_too_small_overlap_differs():
    # r = 3 > overlap // 2 = 1: tile borders (zero padding) leak into the blended output
    model = conv_stack(3)
    image = torch.rand(1, 2, 40, 40)
    with torch.no_grad():
        diff = (restore_tiled(model, image, tile=16, overlap=2) - model(image)).abs().max()
    assert diff > 1e-4


def test_no_tiling_and_single_tile_call_fn_once():
    calls = []

    def fn(x):
        calls.append(tuple(x.shape))
        return x * 2

    image = torch.rand(1, 1, 10, 12)
    assert torch.equal(restore_tiled(fn, image, None, 0), image * 2)
    assert torch.equal(restore_tiled(fn, image, 16, 4), image * 2)
    assert calls == [(1, 1, 10, 12), (1, 1, 10, 12)]


def test_tiles_have_full_size_and_cover_the_image():
    seen = []

    def fn(x):
        seen.append(tuple(x.shape[-2:]))
        return x + 1

    image = torch.rand(1, 3, 50, 23)
    out = restore_tiled(fn, image, tile=16, overlap=4)
    torch.testing.assert_close(out, image + 1)  # a pointwise fn is exact with any overlap
    assert set(seen) == {(16, 16)}
    assert len(seen) == len(tile_starts(50, 16, 4)) * len(tile_starts(23, 16, 4))


def test_tile_starts_end_at_the_border():
    assert tile_starts(10, 16, 4) == [0]
    assert tile_starts(16, 16, 4) == [0]
    assert tile_starts(17, 16, 4) == [0, 1]
    starts = tile_starts(100, 32, 8)
    assert starts[0] == 0 and starts[-1] == 100 - 32
    assert all(b - a <= 32 - 8 for a, b in zip(starts, starts[1:]))


def test_weights_zero_at_inner_edges_only():
    w = tile_weights(16, True, False, overlap=8)
    assert torch.all(w[:4] == 0) and torch.all(w[4:8] > 0) and torch.all(w[8:] == 1)
    assert torch.all(tile_weights(16, False, False, overlap=8) == 1)


def test_memory_bounded_by_tile():
    biggest = []

    def fn(x):
        biggest.append(x.numel())
        return x

    restore_tiled(fn, torch.rand(1, 1, 300, 200), tile=64, overlap=8)
    assert max(biggest) == 64 * 64


@pytest.mark.parametrize("tile, overlap", [(8, 8), (4, 8), (0, 0), (-3, 0), (16, -1), (True, 0), (16.0, 2)])
def test_bad_tiling_raises_config_error(tile, overlap):
    with pytest.raises(ConfigError, match="tile"):
        check_tiling(tile, overlap)
    with pytest.raises(ConfigError):
        restore_tiled(lambda x: x, torch.rand(1, 1, 40, 40), tile, overlap)


def test_model_changing_size_is_rejected():
    with pytest.raises(ConfigError, match="height and width"):
        restore_tiled(lambda x: x[..., :-1, :], torch.rand(1, 1, 40, 40), 16, 4)


def test_non_batch_input_rejected():
    with pytest.raises(ConfigError, match=r"\[B, C, H, W\]"):
        restore_tiled(lambda x: x, torch.rand(1, 40, 40), 16, 4)
