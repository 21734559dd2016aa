"""`spikedistill predict` on real photos (scikit-image's embedded astronaut, coffee and camera): an RGB network keeps
colour, a gray one warns once naming the RGB files it converts, and predict writes only its images unless asked."""
import warnings

import numpy as np
import pytest
import skimage.data
from PIL import Image

from cli_helpers import QUICKSTART
from distill.cli import main

pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture
def photos(tmp_path):
    """Two RGB photos and a gray one, 48 px crops."""
    folder = tmp_path / "photos"
    folder.mkdir()
    Image.fromarray(skimage.data.astronaut()[:48, :48]).save(folder / "astronaut.png")
    Image.fromarray(skimage.data.coffee()[100:148, 200:248]).save(folder / "coffee.jpg", quality=95)
    Image.fromarray(skimage.data.camera()[:48, :48]).save(folder / "camera.png")
    return folder


def identity_dncnn(channels):
    """An untrained DnCNN whose zero tail makes it the identity."""
    return ["--model", "distill.module.RestorationModule", "--model.init_args.model", "teachers.dncnn.DnCNN",
            f"--model.init_args.model.init_args.in_channels={channels}", "--model.init_args.model.init_args.features=4",
            "--model.init_args.model.init_args.depth=3", "--model.init_args.model.init_args.zero_tail=true"]


def predict(tmp_path, photos, model, *extra):
    """predict the photos with `model` (arguments) into `tmp_path/out`; the gray-conversion warnings it gave."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        main(["predict", *model, "--data", "distill.prediction.ImageFolderDataModule", f"--data.folder={photos}",
              f"--data.output_dir={tmp_path / 'out'}", f"--trainer.default_root_dir={tmp_path / 'run'}", *extra])
    return [str(w.message) for w in caught if "converted to gray" in str(w.message)]


def pixels(path):
    with Image.open(path) as im:
        return im.mode, np.asarray(im, dtype=np.int16)


def test_rgb_network_writes_rgb_and_nothing_else(tmp_path, photos, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")  # wandb would be on: predict still starts no run
    monkeypatch.chdir(tmp_path)
    assert predict(tmp_path, photos, identity_dncnn(3)) == []
    for name in ("astronaut", "coffee"):
        mode, out = pixels(tmp_path / "out" / f"{name}.png")
        source = np.asarray(Image.open(next(photos.glob(f"{name}.*"))), dtype=np.int16)
        assert mode == "RGB" and np.abs(out - source).max() <= 1  # the identity network: colour kept
        assert np.abs(out[..., 0] - out[..., 2]).mean() > 10  # and it is colour
    assert pixels(tmp_path / "out" / "camera.png")[0] == "RGB"  # a gray photo through an RGB network
    assert not (tmp_path / "run").exists()  # no logs, no config.yaml, no wandb run in the run folder
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "photos"]


# the README's command: the gray quickstart recipe (its data's channels: 1 carry over), its untrained student the
# identity; and a gray network whose data leaves channels to it
@pytest.mark.parametrize("model", [["--config", QUICKSTART], identity_dncnn(1)], ids=["quickstart", "dncnn"])
def test_gray_network_warns_once_naming_the_rgb_photos(tmp_path, photos, model):
    (message,) = predict(tmp_path, photos, model, "--trainer.logger=false")
    assert "2 RGB image(s)" in message and "astronaut.png, coffee.jpg" in message and "camera" not in message
    assert "luma: 0.299 R + 0.587 G + 0.114 B" in message and "in_channels: 3" in message
    mode, out = pixels(tmp_path / "out" / "astronaut.png")
    luma = np.asarray(Image.fromarray(skimage.data.astronaut()[:48, :48]).convert("L"), dtype=np.int16)
    assert mode == "L" and np.abs(out - luma).max() <= 1
    assert pixels(tmp_path / "out" / "camera.png")[0] == "L"
    assert not (tmp_path / "run").exists()  # with logger false too: no config.yaml over the training run's


def test_predict_logs_when_asked_into_its_own_folder(tmp_path, photos):
    run = tmp_path / "run"
    (run / "csv").mkdir(parents=True)
    (run / "config.yaml").write_text("the training run's\n")
    predict(tmp_path, photos, identity_dncnn(3), "--trainer.logger=true", "--wandb_mode=disabled")
    assert (run / "config.yaml").read_text() == "the training run's\n"
    assert not list((run / "csv").iterdir())
    assert (run / "predict" / "csv" / "version_0" / "config.yaml").is_file()  # the logs predict was asked for
