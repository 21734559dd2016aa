"""Teacher models: construction, shapes, training, hint points, presets and argument errors."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from distill.errors import ConfigError
from teachers.dncnn import DnCNN, PRESETS as DNCNN_PRESETS
from teachers.ffdnet import FFDNet
from teachers.restormer import MDTA, PRESETS as RESTORMER_PRESETS, Restormer

pytestmark = pytest.mark.usefixtures("single_thread")

SMALL = {
    "dncnn_bn": lambda c: DnCNN(in_channels=c, features=8, depth=4, bn=True),
    "dncnn_plain": lambda c: DnCNN(in_channels=c, features=8, depth=4, bn=False),
    "ffdnet": lambda c: FFDNet(in_channels=c, features=8, depth=4),
    "restormer_tiny": lambda c: Restormer.tiny(c),
}


def run(model: nn.Module, x: torch.Tensor, sigma: float = 0.1) -> torch.Tensor:
    if getattr(model, "needs_sigma", False):
        return model(x, torch.full((x.shape[0],), sigma))
    return model(x)


@pytest.mark.parametrize("name", sorted(SMALL))
@pytest.mark.parametrize("channels", [1, 3])
def test_builds_and_keeps_shape_including_odd_sizes(name: str, channels: int) -> None:
    torch.manual_seed(0)
    model = SMALL[name](channels).eval()
    assert model.in_channels == channels
    assert model.checkpoint_path is None
    for h, w in [(8, 8), (7, 9), (5, 3)]:
        x = torch.rand(2, channels, h, w)
        with torch.no_grad():
            y = run(model, x)
        assert y.shape == x.shape
        assert torch.isfinite(y).all()


@pytest.mark.parametrize("name", sorted(SMALL))
def test_trains_loss_falls(name: str) -> None:
    torch.manual_seed(0)
    model = SMALL[name](1)
    target = torch.rand(2, 1, 8, 8)
    noisy = target + 0.1 * torch.randn_like(target)
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    losses = []
    for _ in range(8):
        opt.zero_grad()
        loss = nn.functional.mse_loss(run(model, noisy), target)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0], losses


@pytest.mark.parametrize("name", sorted(SMALL))
def test_hint_points_resolve_and_fire(name: str) -> None:
    model = SMALL[name](1).eval()
    points = model.hint_points()
    assert points
    seen: dict[str, torch.Size] = {}
    handles = [model.get_submodule(p).register_forward_hook(
        lambda m, i, o, p=p: seen.__setitem__(p, o.shape)) for p in points]
    with torch.no_grad():
        run(model, torch.rand(1, 1, 8, 8))
    for h in handles:
        h.remove()
    assert set(seen) == set(points)


def test_dncnn_layout_and_residual() -> None:
    plain = DnCNN(features=8, depth=5, bn=False)
    kinds = [type(m).__name__ for m in plain.body]
    assert kinds == ["Conv2d", "ReLU"] * 4 + ["Conv2d"]
    bn = DnCNN(features=8, depth=5, bn=True)
    kinds = [type(m).__name__ for m in bn.body]
    assert kinds == ["Conv2d", "ReLU"] + ["Conv2d", "BatchNorm2d", "ReLU"] * 3 + ["Conv2d"]
    assert all(not getattr(m, "inplace", False) for m in bn.body)
    x = torch.rand(1, 1, 6, 6)
    assert not torch.equal(plain(x), x)


def test_dncnn_zero_tail_starts_as_identity_and_learns() -> None:
    torch.manual_seed(0)
    model = DnCNN(in_channels=3, features=8, depth=4, bn=True, zero_tail=True)
    clean = torch.rand(4, 3, 12, 12)
    noisy = clean + 0.1 * torch.randn_like(clean)
    assert torch.equal(model(noisy), noisy)  # zero predicted noise
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(2):  # the first step moves only the tail; the second reaches the body through it
        opt.zero_grad()
        (model(noisy) - clean).abs().mean().backward()
        opt.step()
    assert model.body[-1].weight.abs().sum() > 0 and model.body[0].weight.grad.abs().sum() > 0


def test_dncnn_presets() -> None:
    assert DNCNN_PRESETS["dncnn_25"] == dict(in_channels=1, features=64, depth=17, bn=False)
    assert DNCNN_PRESETS["dncnn_color_blind"]["in_channels"] == 3
    m = DnCNN.from_preset("dncnn20", features=8)
    assert (m.depth, m.bn, m.features) == (20, True, 8)
    assert sum(isinstance(l, nn.Conv2d) for l in m.body) == 20
    with pytest.raises(ConfigError, match="dncnn99"):
        DnCNN.from_preset("dncnn99")


@pytest.mark.parametrize("kwargs", [dict(depth=1), dict(features=0), dict(in_channels=-1),
                                    dict(nested_features=64), dict(nested_features=0),
                                    dict(nested_features=8, bn=True)])
def test_dncnn_bad_arguments(kwargs: dict) -> None:
    with pytest.raises(ConfigError, match=next(iter(kwargs))):
        DnCNN(**{"bn": False, **kwargs} if list(kwargs) == ["nested_features"] else kwargs)


def test_dncnn_nested_output_is_the_narrow_network_made_of_its_first_channels() -> None:
    """The nested sub-network equals a separately built narrow DnCNN holding the first channels' weights."""
    torch.manual_seed(6)
    wide = DnCNN(1, 10, 4, bn=False, nested_features=3)
    narrow = DnCNN(1, 3, 4, bn=False)
    with torch.no_grad():
        convs = [m for m in wide.body if isinstance(m, nn.Conv2d)]
        for i, (src, dst) in enumerate(zip(convs, [m for m in narrow.body if isinstance(m, nn.Conv2d)])):
            rows = slice(None) if i == len(convs) - 1 else slice(0, 3)
            cols = slice(None) if i == 0 else slice(0, 3)
            dst.weight.copy_(src.weight[rows, cols])
            dst.bias.copy_(src.bias[rows])
    x = torch.rand(2, 1, 9, 11)
    assert torch.allclose(wide.nested_output(x), narrow(x), atol=1e-6)
    assert not torch.allclose(wide.nested_output(x), wide(x), atol=1e-3)
    with pytest.raises(ConfigError, match="no nested sub-network"):
        narrow.nested_output(x)


def test_dncnn_noise_map_is_one_more_constant_input_channel_holding_each_images_level() -> None:
    """``noise_map``: the first conv sees [image, sigma everywhere]; checked against a plain conv stack fed that
    input by hand, per image, so a map broadcast across the batch or left out would fail."""
    torch.manual_seed(3)
    net = DnCNN(1, 6, 3, bn=False, noise_map=True, nested_features=2)
    assert net.needs_sigma and not DnCNN().needs_sigma
    assert net.body[0].in_channels == 2
    x, sigma = torch.rand(2, 1, 7, 5), torch.tensor([0.1, 0.4])
    for i in range(2):
        by_hand = torch.cat([x[i:i + 1], torch.full((1, 1, 7, 5), float(sigma[i]))], dim=1)
        assert torch.allclose(net(x, sigma)[i:i + 1], x[i:i + 1] - net.body(by_hand), atol=1e-6)
    assert not torch.allclose(net(x, sigma)[0], net(x, sigma.flip(0))[0], atol=1e-4)
    assert set(net.auxiliary_outputs(x, sigma)) == {"nested"}
    with pytest.raises(ConfigError, match="noise_map=True"):
        net(x)
    with pytest.raises(ConfigError, match="noise_map=1"):
        DnCNN(noise_map=1)


def test_quantised_nested_dncnn_sets_thresholds_on_its_first_training_batch_then_learns_them() -> None:
    """``nested_levels``: QCFS activations in the nested network; the first training batch puts each threshold at
    the 99.9th percentile of its layer's positive pre-activations (checked on the head by hand), later batches keep
    them, the loss reaches them, and the nested output takes at most ``levels + 1`` values per unit before the tail."""
    import torch.nn.functional as F

    torch.manual_seed(9)
    net = DnCNN(1, 10, 4, bn=False, nested_features=3, nested_levels=4)
    x = torch.rand(2, 1, 12, 12)
    head = F.conv2d(x, net.body[0].weight[:3], net.body[0].bias[:3], padding=1)
    net.nested_output(x).sum().backward()
    assert float(net.nested_acts[0].threshold) == pytest.approx(float(torch.quantile(head.detach()[head > 0], 0.999)), rel=1e-5)
    assert all(a.threshold.grad is not None and a.threshold.grad.abs() > 0 for a in net.nested_acts)
    first = [float(a.threshold) for a in net.nested_acts]
    net.nested_output(torch.rand(2, 1, 12, 12) * 3)
    assert [float(a.threshold) for a in net.nested_acts] == first
    rates = net.nested_acts[0](head) * 4
    assert torch.equal(rates, rates.round()) and set(rates.unique().tolist()) <= {0.0, 1.0, 2.0, 3.0, 4.0}
    with pytest.raises(ConfigError, match="nested_levels=4 needs nested_features"):
        DnCNN(1, 10, 4, bn=False, nested_levels=4)


def test_ffdnet_depends_on_sigma_and_sigma_forms() -> None:
    torch.manual_seed(0)
    model = FFDNet(in_channels=3, features=8, depth=4).eval()
    x = torch.rand(2, 3, 7, 6)
    with torch.no_grad():
        low = model(x, torch.tensor([0.02, 0.02]))
        high = model(x, torch.tensor([0.2, 0.2]))
        mixed = model(x, torch.tensor([0.02, 0.2]))
        scalar = model(x, 0.02)
        kair = model(x, torch.full((2, 1, 1, 1), 0.2))
    assert (low - high).abs().max() > 1e-4
    assert torch.allclose(mixed[0], low[0]) and torch.allclose(mixed[1], high[1])
    assert torch.allclose(scalar, low) and torch.allclose(kair, high)
    with pytest.raises(ConfigError, match="sigma"):
        model(x, torch.zeros(3))
    assert FFDNet.needs_sigma is True and not DnCNN.needs_sigma and not Restormer.needs_sigma


def test_ffdnet_layout_and_presets() -> None:
    m = FFDNet(in_channels=3, features=8, depth=4)
    assert isinstance(m.down, nn.PixelUnshuffle) and isinstance(m.up, nn.PixelShuffle)
    assert m.body[0].in_channels == 3 * 4 + 1 and m.body[-1].out_channels == 12
    assert [type(l).__name__ for l in m.body] == ["Conv2d", "ReLU"] * 3 + ["Conv2d"]
    color = FFDNet.from_preset("ffdnet_color")
    assert (color.in_channels, color.features, color.depth) == (3, 96, 12)


def test_mdta_matches_explicit_per_head_attention() -> None:
    torch.manual_seed(0)
    attn = MDTA(dim=8, num_heads=2, bias=False)
    with torch.no_grad():
        attn.temperature.copy_(torch.tensor([0.5, 2.0]).view(2, 1, 1))
    x = torch.randn(1, 8, 3, 5)
    y = attn(x)
    q, k, v = attn.qkv_dwconv(attn.qkv(x)).chunk(3, dim=1)
    heads = []
    for h in range(2):
        sl = slice(4 * h, 4 * h + 4)
        qh = nn.functional.normalize(q[0, sl].reshape(4, -1), dim=-1)
        kh = nn.functional.normalize(k[0, sl].reshape(4, -1), dim=-1)
        a = torch.softmax(qh @ kh.T * attn.temperature[h, 0, 0], dim=-1)  # 4x4 channel attention
        heads.append(a @ v[0, sl].reshape(4, -1))
    expected = attn.project_out(torch.cat(heads).reshape(1, 8, 3, 5))
    assert torch.allclose(y, expected, atol=1e-6)


def test_restormer_tiny_attention_path_runs_with_gradients() -> None:
    torch.manual_seed(0)
    model = Restormer.tiny(3)
    assert model.heads == RESTORMER_PRESETS["tiny"]["heads"] and max(model.heads) > 1
    captured = {}
    model.latent[0].attn.register_forward_hook(lambda m, i, o: captured.update(latent=o.shape))
    y = model(torch.rand(1, 3, 16, 16))
    y.mean().backward()
    assert captured["latent"] == (1, 16 * 8, 2, 2)
    temps = [m.temperature.grad for m in model.modules() if isinstance(m, MDTA)]
    assert temps and all(g is not None and g.abs().sum() > 0 for g in temps)


def test_restormer_levels_configurable_and_names() -> None:
    model = Restormer(in_channels=1, dim=8, num_blocks=(1, 2, 1), num_refinement_blocks=0,
                      heads=(1, 2, 2), layernorm_type="BiasFree", bias=True).eval()
    names = dict(model.named_children())
    assert {"decoder_level1", "decoder_level2", "reduce_chan_level2", "up3_2", "up2_1", "latent"} <= set(names)
    assert "decoder_level3" not in names and "down3_4" not in names
    assert len(model.encoder_level2) == 2 and len(model.refinement) == 0
    assert model.hint_points() == ["encoder_level1", "encoder_level2", "latent", "decoder_level2",
                                   "decoder_level1"]
    with torch.no_grad():
        assert model(torch.rand(1, 1, 6, 7)).shape == (1, 1, 6, 7)  # padded to a multiple of 4


def test_restormer_default_config_matches_paper_names() -> None:
    # the default config (26 M params) is not built here; its 4-level names are checked on the tiny preset
    names = {n for n, _ in Restormer.tiny(3).named_children()}
    assert names == {"patch_embed", "encoder_level1", "down1_2", "encoder_level2", "down2_3", "encoder_level3",
                     "down3_4", "latent", "up4_3", "reduce_chan_level3", "decoder_level3", "up3_2",
                     "reduce_chan_level2", "decoder_level2", "up2_1", "decoder_level1", "refinement", "output"}


@pytest.mark.parametrize("kwargs, word", [
    (dict(preset="huge"), "huge"),
    (dict(preset="tiny", dim=32), "dim"),
    (dict(dim=7), "dim"),
    (dict(heads=(1, 2)), "heads"),
    (dict(dim=8, heads=(1, 3, 4, 8)), "heads"),
    (dict(num_blocks=(2,), heads=(1,)), "num_blocks"),
    (dict(layernorm_type="Batch"), "layernorm_type"),
])
def test_restormer_bad_arguments(kwargs: dict, word: str) -> None:
    with pytest.raises(ConfigError, match=word):
        Restormer(**kwargs)


def test_injection_by_class_path_and_init_args() -> None:
    from jsonargparse import ArgumentParser

    parser = ArgumentParser(exit_on_error=False)
    parser.add_argument("--teacher", type=nn.Module)
    for cfg, cls in [
        ({"class_path": "teachers.restormer.Restormer", "init_args": {"in_channels": 1, "preset": "tiny"}}, Restormer),
        ({"class_path": "teachers.ffdnet.FFDNet", "init_args": {"features": 8, "depth": 3}}, FFDNet),
        ({"class_path": "teachers.dncnn.DnCNN", "init_args": {"depth": 20, "bn": False, "features": 8}}, DnCNN),
    ]:
        built = parser.instantiate_classes(parser.parse_object({"teacher": cfg})).teacher
        assert isinstance(built, cls) and built.in_channels in (1,)
    assert built.depth == 20 and not built.bn


def test_twins_keep_the_default_tail_init_unless_asked() -> None:
    from teachers.twins import DnCNNTwin, ESDNetTwin

    x = torch.rand(1, 3, 16, 16)
    torch.manual_seed(0)
    assert not torch.equal(ESDNetTwin(preset="tiny")(x), x)  # the shipped twin weights were trained from this
    assert torch.equal(ESDNetTwin(preset="tiny", zero_tail=True)(x), x)
    assert torch.equal(DnCNNTwin(in_channels=3, features=8, depth=3, zero_tail=True)(x), x)


def test_residual_ffdnet_starts_as_the_identity_and_learns_through_every_layer() -> None:
    torch.manual_seed(0)
    model = FFDNet(in_channels=1, features=16, depth=15, residual=True)
    x, sigma = torch.rand(2, 1, 24, 24), torch.full((2,), 0.1)
    assert torch.equal(model(x, sigma), x)  # zero last conv: the untrained denoiser leaves the input alone
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    for _ in range(2):  # the zero last conv learns first; then the gradient reaches the first conv
        optimizer.zero_grad()
        ((model(x, sigma) - x * 0.9) ** 2).mean().backward()
        optimizer.step()
    assert model.body[-1].weight.abs().max() > 0 and model.body[0].weight.grad.abs().max() > 0
    # He init keeps the features alive through 14 ReLU layers (torch's default init shrinks them ~15x here)
    with torch.no_grad():
        z = torch.cat([model.down(x), model._sigma_map(sigma, model.down(x))], dim=1)
        assert model.body[:-1](z).std() > 0.2 * z.std()
    with pytest.raises(ConfigError, match="residual='yes' is not allowed"):
        FFDNet(residual="yes")


def test_training_a_nested_dncnn_adds_the_nested_width_loss_which_trains_only_its_channels() -> None:
    from distill.module import RestorationModule

    torch.manual_seed(7)
    net = DnCNN(1, 8, 3, bn=False, nested_features=3)
    module = RestorationModule(model=net)
    x, y = torch.rand(2, 1, 10, 10), torch.rand(2, 1, 10, 10)
    _, terms = module.compute_losses({"input": x, "target": y, "sigma": torch.full((2,), 0.1)})
    assert sorted(terms) == ["nested", "restoration"]
    assert terms["restoration"].item() == pytest.approx((net(x) - y).abs().mean().item(), rel=1e-6)
    assert terms["nested"].item() == pytest.approx((net.nested_output(x) - y).abs().mean().item(), rel=1e-6)
    terms["nested"].backward()
    first, middle = net.body[0].weight.grad, net.body[2].weight.grad
    assert first[:3].abs().sum() > 0 and first[3:].abs().sum() == 0
    assert middle[:3, :3].abs().sum() > 0 and middle[3:].abs().sum() == 0 and middle[:, 3:].abs().sum() == 0
    plain = RestorationModule(model=DnCNN(1, 8, 3, bn=False))
    assert sorted(plain.compute_losses({"input": x, "target": y, "sigma": torch.full((2,), 0.1)})[1]) == ["restoration"]
