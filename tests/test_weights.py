"""teachers.weights: state-dict, Lightning-ckpt and KAIR-layout loading, errors, paths and hashes."""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from torch import nn

import teachers.weights as weights
from distill.errors import CheckpointError
from teachers.dncnn import DnCNN
from teachers.ffdnet import FFDNet
from teachers.restormer import Restormer
from teachers.weights import load_weights, resolve_checkpoint, sha256_file

pytestmark = pytest.mark.usefixtures("single_thread")


@dataclass
class HParams:
    """Stands in for the pickled hyperparameters a Lightning checkpoint carries."""

    lr: float = 1e-3


def trained_dncnn(bn: bool = True, seed: int = 0) -> DnCNN:
    """A small DnCNN whose BN running stats differ from a fresh one's."""
    torch.manual_seed(seed)
    model = DnCNN(in_channels=1, features=8, depth=4, bn=bn)
    model.train()
    with torch.no_grad():
        model(torch.rand(4, 1, 8, 8))
    return model.eval()


def outputs(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    model.eval()
    with torch.no_grad():
        return model(x, torch.full((x.shape[0],), 0.1)) if getattr(model, "needs_sigma", False) else model(x)


X = torch.rand(2, 1, 9, 8)


def test_plain_state_dict_round_trip(tmp_path: Path) -> None:
    src = trained_dncnn()
    path = tmp_path / "dncnn.pt"
    torch.save(src.state_dict(), path)
    dst = DnCNN(in_channels=1, features=8, depth=4, bn=True, checkpoint=str(path))
    assert dst.checkpoint_path == path.resolve() and dst.checkpoint_path.is_absolute()
    assert torch.equal(outputs(dst, X), outputs(src, X))
    fresh = DnCNN(in_channels=1, features=8, depth=4, bn=True)
    assert load_weights(fresh, path) == path.resolve()
    assert fresh.checkpoint_path == path.resolve()


@pytest.mark.parametrize("prefix", ["teacher.", "model."])
def test_lightning_ckpt_with_prefix_and_hparams(tmp_path: Path, prefix: str) -> None:
    src = trained_dncnn()
    other = FFDNet(in_channels=1, features=4, depth=3)  # e.g. the student: must be ignored
    state = {prefix + k: v for k, v in src.state_dict().items()}
    state.update({"student." + k: v for k, v in other.state_dict().items()})
    state["adapters.0.weight"] = torch.zeros(3, 3)
    ckpt = {"state_dict": state, "epoch": 3, "global_step": 10, "hyper_parameters": {"h": HParams()}}
    path = tmp_path / "run.ckpt"
    torch.save(ckpt, path)
    dst = DnCNN(in_channels=1, features=8, depth=4, bn=True, checkpoint=str(path))
    assert torch.equal(outputs(dst, X), outputs(src, X))
    # explicit prefix also works, and a wrong explicit one is reported
    assert load_weights(DnCNN(features=8, depth=4), path, prefix=prefix) == path.resolve()
    with pytest.raises(CheckpointError, match="nope"):
        load_weights(DnCNN(features=8, depth=4), path, prefix="nope.")


def test_pickled_objects_refused_outside_ckpt(tmp_path: Path) -> None:
    src = trained_dncnn()
    path = tmp_path / "weights.pth"
    torch.save({"state_dict": src.state_dict(), "hyper_parameters": HParams()}, path)
    with pytest.raises(CheckpointError, match=r"weights\.pth.*pickled objects"):
        load_weights(DnCNN(features=8, depth=4), path)


def test_nested_lightning_prefix_found(tmp_path: Path) -> None:
    src = FFDNet(in_channels=1, features=8, depth=3)
    path = tmp_path / "nested.ckpt"
    torch.save({"state_dict": {"model.model." + k: v for k, v in src.state_dict().items()}}, path)
    dst = FFDNet(in_channels=1, features=8, depth=3, checkpoint=str(path))
    assert torch.equal(outputs(dst, X), outputs(src, X))


def test_two_equal_candidates_need_explicit_prefix(tmp_path: Path) -> None:
    a, b = trained_dncnn(seed=1), trained_dncnn(seed=2)
    state = {**{"net_a." + k: v for k, v in a.state_dict().items()},
             **{"net_b." + k: v for k, v in b.state_dict().items()}}
    path = tmp_path / "two.pt"
    torch.save(state, path)
    with pytest.raises(CheckpointError, match="prefix="):
        load_weights(DnCNN(features=8, depth=4), path)
    dst = DnCNN(features=8, depth=4)
    load_weights(dst, path, prefix="net_b.")
    assert torch.equal(outputs(dst, X), outputs(b, X))


def kair_dncnn_names(depth: int, bn: bool) -> list[list[str]]:
    """KAIR's flat ``model.N`` names per conv/BN layer, from network_dncnn.py's layout rules."""
    # head: conv(0) relu(1); body j: conv, [BN], relu; tail: conv
    step = 3 if bn else 2
    layers = [["model.0.weight", "model.0.bias"]]
    for j in range(depth - 2):
        conv = 2 + step * j
        layers.append([f"model.{conv}.weight", f"model.{conv}.bias"])
        if bn:
            layers.append([f"model.{conv + 1}.{s}" for s in
                           ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")])
    tail = 2 + step * (depth - 2)
    layers.append([f"model.{tail}.weight", f"model.{tail}.bias"])
    return layers


def to_kair(model: nn.Module, names: list[list[str]]) -> dict[str, torch.Tensor]:
    """Rename the model's own tensors, layer by layer in order, to KAIR's names."""
    layers = [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.BatchNorm2d))]
    assert len(layers) == len(names)
    out = {}
    for layer, layer_names in zip(layers, names):
        tensors = list(layer.state_dict().values())
        assert len(tensors) == len(layer_names)
        out.update(zip(layer_names, tensors))
    return out


@pytest.mark.parametrize("bn", [False, True])
def test_kair_dncnn_layout_loads(tmp_path: Path, bn: bool) -> None:
    src = trained_dncnn(bn=bn)
    kair = to_kair(src, kair_dncnn_names(4, bn))
    assert "model.2.weight" in kair and ("model.3.running_var" in kair) == bn
    path = tmp_path / "dncnn_25.pth"
    torch.save(kair, path)
    dst = DnCNN(in_channels=1, features=8, depth=4, bn=bn, checkpoint=str(path))
    assert torch.equal(outputs(dst, X), outputs(src, X))


def test_kair_ffdnet_layout_loads(tmp_path: Path) -> None:
    torch.manual_seed(0)
    src = FFDNet(in_channels=3, features=8, depth=4)
    names = [[f"model.{2 * i}.weight", f"model.{2 * i}.bias"] for i in range(4)]  # act_mode='R'
    kair = to_kair(src, names)
    assert kair["model.0.weight"].shape == (8, 3 * 4 + 1, 3, 3)
    path = tmp_path / "ffdnet_color.pth"
    torch.save(kair, path)
    dst = FFDNet(in_channels=3, features=8, depth=4, checkpoint=str(path))
    x = torch.rand(1, 3, 7, 10)
    assert torch.equal(outputs(dst, x), outputs(src, x))


def test_kair_file_with_wrong_architecture_reports_kair_names(tmp_path: Path) -> None:
    src = trained_dncnn(bn=False)
    path = tmp_path / "dncnn_15.pth"
    torch.save(to_kair(src, kair_dncnn_names(4, False)), path)
    with pytest.raises(CheckpointError, match="KAIR layout") as err:
        load_weights(DnCNN(features=8, depth=4, bn=True), path)  # BN model, BN-merged file
    assert "missing" in str(err.value) and "body.3.running_mean" in str(err.value)


def test_restormer_basicsr_params_and_round_trip(tmp_path: Path) -> None:
    torch.manual_seed(0)
    src = Restormer.tiny(1)
    with torch.no_grad():
        for p in src.parameters():
            p.add_(0.01 * torch.randn_like(p))
    path = tmp_path / "deraining.pth"
    torch.save({"params": src.state_dict()}, path)
    dst = Restormer(in_channels=1, preset="tiny", checkpoint=str(path))
    assert torch.equal(outputs(dst, X), outputs(src, X))


def test_mismatch_lists_missing_unexpected_and_misshaped(tmp_path: Path) -> None:
    path = tmp_path / "other.pt"
    torch.save(DnCNN(features=8, depth=4, bn=False).state_dict(), path)
    with pytest.raises(CheckpointError) as err:
        load_weights(DnCNN(features=16, depth=3, bn=True), path)
    msg = str(err.value)
    assert "other.pt" in msg
    assert "missing keys" in msg and "body.3.running_mean" in msg
    assert "unexpected keys" in msg and "body.6.weight" in msg
    assert "mis-shaped keys" in msg and "body.0.weight (expected (16, 1, 3, 3), found (8, 1, 3, 3))" in msg


def test_mismatch_list_is_truncated(tmp_path: Path) -> None:
    path = tmp_path / "tiny.pt"
    torch.save(Restormer.tiny(1).state_dict(), path)
    with pytest.raises(CheckpointError) as err:
        load_weights(Restormer(in_channels=1, dim=8, num_blocks=(1, 1), num_refinement_blocks=0,
                               heads=(1, 1)), path)
    msg = str(err.value)
    assert "more" in msg and len(msg) < 4000


def test_missing_bn_counter_is_tolerated(tmp_path: Path) -> None:
    src = trained_dncnn()
    state = {k: v for k, v in src.state_dict().items() if not k.endswith("num_batches_tracked")}
    path = tmp_path / "old.pt"
    torch.save(state, path)
    dst = DnCNN(features=8, depth=4, checkpoint=str(path))
    assert torch.equal(outputs(dst, X), outputs(src, X))


def test_missing_file_names_the_file(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="no_such_teacher.pth"):
        DnCNN(features=8, depth=3, checkpoint=str(tmp_path / "no_such_teacher.pth"))
    with pytest.raises(CheckpointError, match="not a file"):
        load_weights(DnCNN(features=8, depth=3), tmp_path)


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
@pytest.mark.parametrize("name, data", [
    ("garbage.pth", b"this is not a checkpoint at all"),
    ("empty.pt", b""),
    ("garbage.ckpt", b"\x80\x04garbage"),
    ("pickle-opcodes.pt", b"\x80\x02*garbage"),  # a pickle header then bytes no unpickler accepts
])
def test_corrupt_file_names_the_file(tmp_path: Path, name: str, data: bytes) -> None:
    path = tmp_path / name
    path.write_bytes(data)
    with pytest.raises(CheckpointError, match=name.replace(".", r"\.") + ".*corrupt"):
        load_weights(DnCNN(features=8, depth=3), path)


def test_truncated_file_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "cut.pt"
    torch.save(DnCNN(features=8, depth=3).state_dict(), path)
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(CheckpointError, match="cut.pt"):
        load_weights(DnCNN(features=8, depth=3), path)


def test_not_a_state_dict(tmp_path: Path) -> None:
    path = tmp_path / "list.pt"
    torch.save([torch.zeros(1)], path)
    with pytest.raises(CheckpointError, match="list.pt.*not a state dict"):
        load_weights(DnCNN(features=8, depth=3), path)


def test_relative_paths_cwd_then_repo_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    src = trained_dncnn()
    (tmp_path / "cwd" / "ckpts").mkdir(parents=True)
    (tmp_path / "root" / "ckpts").mkdir(parents=True)
    torch.save(src.state_dict(), tmp_path / "root" / "ckpts" / "t.pt")
    monkeypatch.setattr(weights, "REPO_ROOT", tmp_path / "root")
    monkeypatch.chdir(tmp_path / "cwd")
    assert resolve_checkpoint("ckpts/t.pt") == (tmp_path / "root" / "ckpts" / "t.pt").resolve()
    dst = DnCNN(features=8, depth=4, checkpoint="ckpts/t.pt")
    assert dst.checkpoint_path == (tmp_path / "root" / "ckpts" / "t.pt").resolve()
    # a file under the current directory wins over the repository root
    torch.save(trained_dncnn(seed=5).state_dict(), tmp_path / "cwd" / "ckpts" / "t.pt")
    assert resolve_checkpoint("ckpts/t.pt") == (tmp_path / "cwd" / "ckpts" / "t.pt").resolve()
    with pytest.raises(CheckpointError, match="nothere.pt"):
        resolve_checkpoint("ckpts/nothere.pt")


def test_repo_root_is_the_parent_of_teachers() -> None:
    assert (weights.REPO_ROOT / "teachers" / "weights.py").is_file()


def test_sha256_file(tmp_path: Path) -> None:
    path = tmp_path / "blob.bin"
    data = bytes(range(256)) * 5000
    path.write_bytes(data)
    assert sha256_file(path) == hashlib.sha256(data).hexdigest()
    assert sha256_file(path, chunk_size=7) == hashlib.sha256(data).hexdigest()
    with pytest.raises(CheckpointError, match="missing.bin"):
        sha256_file(tmp_path / "missing.bin")


@pytest.mark.filterwarnings("ignore:.*LeafSpec")
def test_real_lightning_checkpoint(tmp_path: Path) -> None:
    """A checkpoint written by lightning's Trainer (hyperparameters and loop state pickled inside)."""
    import lightning as L

    class Wrapper(L.LightningModule):
        def __init__(self, lr: float = 1e-3, note: HParams | None = None) -> None:
            super().__init__()
            self.save_hyperparameters()
            self.model = FFDNet(in_channels=1, features=4, depth=3)

        def training_step(self, batch, batch_idx):
            x = batch[0]
            return nn.functional.mse_loss(self.model(x, torch.full((x.shape[0],), 0.1)), x)

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=self.hparams.lr)

    torch.manual_seed(0)
    data = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.rand(2, 1, 8, 8)), batch_size=2)
    module = Wrapper(note=HParams())
    trainer = L.Trainer(max_steps=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, default_root_dir=tmp_path, accelerator="cpu")
    trainer.fit(module, data)
    path = tmp_path / "last.ckpt"
    trainer.save_checkpoint(path)
    dst = FFDNet(in_channels=1, features=4, depth=3, checkpoint=str(path))
    assert torch.equal(outputs(dst, X), outputs(module.model, X))


def test_basicsr_checkpoint_prefers_ema_weights(tmp_path: Path) -> None:
    ema, plain = DnCNN(features=8, depth=3), DnCNN(features=8, depth=3)
    path = tmp_path / "net_g.pth"
    torch.save({"params": plain.state_dict(), "params_ema": ema.state_dict()}, path)
    model = DnCNN(features=8, depth=3)
    load_weights(model, path)
    for key, value in ema.state_dict().items():
        assert torch.equal(model.state_dict()[key], value), key
