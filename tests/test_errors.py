"""Clear errors through the real entry point (`distill.cli.main`): a mistake in a recipe, a file or the data
ends with exit status 2 and one `error: ...` paragraph naming the bad value and what is allowed, never a
traceback. Errors tested at the library level elsewhere are listed in `COVERED_ELSEWHERE`; here each is
checked once more as the user meets it, through the CLI."""
from __future__ import annotations

import math

import pytest
import torch
import yaml

from cli_helpers import QUICKSTART, tiny_recipe, tiny_teacher, write_images
from distill.cli import main
from distill.distillation import DistillationModule
from distill.errors import ConfigError, TrainingError
from students.spiking_dncnn import SpikingDnCNN
from teachers.dncnn import DnCNN

#: error -> where its message is tested at the library level
COVERED_ELSEWHERE = {
    "unknown hint module path (closest names)": "test_hints.py::test_unknown_path_lists_closest_names",
    "adapter cannot map shapes": "test_hints.py::test_identity_adapter_channel_mismatch_names_channels, "
                                 "::test_spatial_mismatch_rejected_with_both_shapes_or_resized",
    "missing/corrupt/wrong-architecture teacher file": "test_weights.py (missing, corrupt, truncated, mismatch)",
    "teacher SHA-256 changed": "test_distillation.py::test_checkpoint_excludes_teacher_and_checks_its_sha",
    "corrupt image": "test_data.py::test_corrupt_image_names_file, test_data_fuzz.py",
    "image smaller than the patch": "test_data.py::test_small_images_error_and_skip",
    "gray data for an RGB model and reverse": "test_distillation.py::test_channel_mismatch_between_data_and_student",
    "sigma < 0": "test_data.py::test_config_errors",
    "T < 1": "test_students.py::test_timesteps_validated",
    "threshold <= 0": "test_neurons.py::test_config_errors_name_value_and_allowed",
    "empty data folder": "test_data.py::test_empty_and_missing_folder",
    "rain/clean names that do not match": "test_rain.py::test_unmatched_pairs_listed",
    "NaN/Inf loss message": "test_distillation.py::test_nan_loss_stops_naming_step_and_term",
}


@pytest.fixture
def recipe(tmp_path):
    return tiny_recipe(tmp_path, max_steps=4, val_check_interval=2)


def run(capsys, *args):
    """`spikedistill ARGS` in-process: (exit status, stderr)."""
    with pytest.raises(SystemExit) as exit_:
        main(list(args))
    return exit_.value.code, capsys.readouterr().err


def assert_one_paragraph(err: str, *needles: str) -> None:
    assert "Traceback" not in err, err
    lines = [line for line in err.strip().splitlines() if line.strip()]
    message = [line for line in lines if line.startswith("error: ")]
    assert len(message) == 1, err
    assert len(lines) <= 10, err  # a short usage line, a tip, the error: no 100-line dump
    for needle in needles:
        assert needle in err, (needle, err)


def fit(recipe, tmp_path, *overrides):
    return ["fit", "--config", QUICKSTART, "--config", str(recipe), f"--trainer.default_root_dir={tmp_path / 'run'}",
            *overrides]


# ---------------------------------------------------------------------------------------- recipe keys


def test_unknown_recipe_key_in_a_file_is_named(capsys, tmp_path, recipe):
    extra = tmp_path / "typo.yaml"
    extra.write_text(yaml.safe_dump({"trainer": {"max_stpes": 10}}))
    code, err = run(capsys, *fit(recipe, tmp_path, "--config", str(extra)))
    assert code == 2
    assert_one_paragraph(err, "trainer.max_stpes", "did you mean 'max_steps'")


def test_unknown_key_of_an_injected_class_is_named(capsys, tmp_path, recipe):
    code, err = run(capsys, *fit(recipe, tmp_path, "--model.init_args.student.init_args.neuronn=lif"))
    assert code == 2
    assert_one_paragraph(err, "'neuronn' is not accepted", "SpikingDnCNN", "did you mean 'neuron'")


def test_unknown_optimizer_argument_gets_closest_name(capsys, tmp_path, recipe):
    extra = tmp_path / "lr.yaml"
    extra.write_text(yaml.safe_dump({"model": {"init_args": {"optimizer": {
        "class_path": "torch.optim.Adam", "init_args": {"lrr": 0.1}}}}}))
    code, err = run(capsys, *fit(recipe, tmp_path, "--config", str(extra)))
    assert code == 2
    assert_one_paragraph(err, "'lrr' is not accepted", "did you mean 'lr'")


def test_unknown_command_line_option_is_named(capsys, tmp_path, recipe):
    code, err = run(capsys, *fit(recipe, tmp_path, "--trainer.bogus=1"))
    assert code == 2
    assert_one_paragraph(err, "--trainer.bogus=1")


def test_wrong_type_names_key_and_expected_type(capsys, tmp_path, recipe):
    code, err = run(capsys, *fit(recipe, tmp_path, "--data.init_args.patch_size=big"))
    assert code == 2
    assert_one_paragraph(err, "patch_size", "Expected a <class 'int'>. Got value: big")


# ----------------------------------------------------------------- values checked while building the recipe


@pytest.mark.parametrize("override, needles", [
    ("--data.init_args.sigma=-3", ["sigma=-3.0", ">= 0"]),
    ("--model.init_args.student.init_args.timesteps=0", ["timesteps=0", ">= 1"]),
    ("--model.init_args.student.init_args.threshold=0", ["threshold=0", "> 0"]),
    ("--model.init_args.student.init_args.neuron=izhikevich", ["neuron='izhikevich'", "lif"]),
    ("--model.init_args.student.init_args.reset_mechanism=none", ["reset_mechanism='none'", "subtract", "zero"]),
    ("--model.init_args.hints=[{teacher: body.44, student: blocks.0.neuron}]", ["body.44", "closest valid paths"]),
    ("--model.init_args.hints=[{teacher: body.4, student: blocks.0.neuron, adapter: identity}]",
     ["6 student channels to 8 teacher channels"]),
    ("--model.init_args.hints=[{teacher: body.4, student: blocks.0.neuron, loss: kl}]",
     ['Parser key "loss"', "'mse', 'l1', 'cosine', 'attention'", "Got value: kl"]),
    ("--model.init_args.example_size=0", ["example_size=0", ">= 1"]),
    ("--model.init_args.student.init_args.in_channels=3", ["in_channels=1", "in_channels=3"]),
])
def test_bad_values_one_paragraph(capsys, tmp_path, recipe, override, needles):
    code, err = run(capsys, *fit(recipe, tmp_path, override))
    assert code == 2
    assert_one_paragraph(err, *needles)


def test_teacher_file_missing_corrupt_or_other_architecture(capsys, tmp_path, recipe):
    key = "--model.init_args.teacher.init_args.checkpoint"
    code, err = run(capsys, *fit(recipe, tmp_path, f"{key}={tmp_path / 'gone.pt'}"))
    assert code == 2
    assert_one_paragraph(err, "gone.pt", "not found")
    whole = (tmp_path / "teacher.pt").read_bytes()
    (tmp_path / "cut.pt").write_bytes(whole[: len(whole) // 2])  # a copy interrupted half-way
    code, err = run(capsys, *fit(recipe, tmp_path, f"{key}={tmp_path / 'cut.pt'}"))
    assert code == 2
    assert_one_paragraph(err, "cut.pt", "corrupt")
    wide = tiny_teacher(tmp_path / "wide.pt", features=16)
    code, err = run(capsys, *fit(recipe, tmp_path, f"{key}={wide}"))
    assert code == 2
    assert_one_paragraph(err, "wide.pt", "does not fit DnCNN", "mis-shaped",
                         "expected (8, 1, 3, 3), found (16, 1, 3, 3)")


def test_debug_env_reraises(tmp_path, recipe, monkeypatch):
    monkeypatch.setenv("SPIKEDISTILL_DEBUG", "1")
    with pytest.raises(Exception) as info:
        main(fit(recipe, tmp_path, "--data.init_args.sigma=-3"))
    assert isinstance(info.value, ConfigError) or isinstance(info.value.__cause__, ConfigError)


def test_optimizer_argument_error_is_a_config_error(tmp_path, recipe):
    module = DistillationModule(
        teacher=DnCNN(in_channels=1, features=8, depth=4),
        student=SpikingDnCNN(in_channels=1, features=6, depth=4, timesteps=2),
        optimizer=lambda params: torch.optim.Adam(params, lr=-1.0), example_size=16)
    with pytest.raises(ConfigError, match="optimizer.*Invalid learning rate: -1.0"):
        module.configure_optimizers()


def test_one_cycle_schedule_shorter_than_the_run_is_named(capsys, tmp_path, recipe):
    """The quickstart's one-cycle schedule cannot step past its total_steps: a longer run is refused before training,
    naming both numbers and the key to set (torch would raise mid-run, at step total_steps + 1)."""
    schedule = ("--model.init_args.scheduler={class_path: torch.optim.lr_scheduler.OneCycleLR, init_args: "
                "{max_lr: 0.001, total_steps: 3}}")
    code, err = run(capsys, *fit(recipe, tmp_path, schedule))
    assert code != 0
    assert_one_paragraph(err, "total_steps=3", "trainer.max_steps=4", "scheduler.init_args.total_steps >= 4")
    assert not (tmp_path / "run" / "checkpoints").exists()


# ------------------------------------------------------------------------- found once the data is read


def test_corrupt_and_small_images_named_at_fit(capsys, tmp_path, recipe):
    folder = write_images(tmp_path / "photos", count=2, size=48)
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 20)
    data = [f"--data.init_args.train=[{folder}]", f"--data.init_args.val=[{folder}]"]
    code, err = run(capsys, *fit(recipe, tmp_path, *data))
    assert code == 2
    assert_one_paragraph(err, "broken.png")
    (folder / "broken.png").unlink()
    code, err = run(capsys, *fit(recipe, tmp_path, *data, "--data.init_args.patch_size=64"))
    assert code == 2
    assert_one_paragraph(err, "img0.png", "48x48", "64x64 patch_size", "small_images='skip'")


def test_empty_folder_and_unmatched_rain_pairs_at_fit(capsys, tmp_path, recipe):
    empty = tmp_path / "empty"
    empty.mkdir()
    code, err = run(capsys, *fit(recipe, tmp_path, f"--data.init_args.train=[{empty}]"))
    assert code == 2
    assert_one_paragraph(err, str(empty))
    rain = tmp_path / "Rain"
    write_images(rain / "rain", count=2, size=48)
    write_images(rain / "norain", count=1, size=48)
    derain = ["--data=distill.data.DerainingDataModule", f"--data.init_args.train=[{rain}]",
              f"--data.init_args.val=[{rain}]", "--data.init_args.patch_size=16", "--data.init_args.channels=1"]
    code, err = run(capsys, *fit(recipe, tmp_path, *derain))
    assert code == 2
    assert_one_paragraph(err, "unmatched pairs", "img1.png")


def test_gray_data_for_rgb_model(capsys, tmp_path, recipe):
    rgb = tmp_path / "rgb_teacher.pt"
    torch.save(DnCNN(in_channels=3, features=8, depth=4, bn=True).state_dict(), rgb)
    overrides = ["--model.init_args.student.init_args.in_channels=3",
                 "--model.init_args.teacher.init_args.in_channels=3",
                 f"--model.init_args.teacher.init_args.checkpoint={rgb}", "--data.init_args.channels=1"]
    code, err = run(capsys, *fit(recipe, tmp_path, *overrides))
    assert code == 2
    assert_one_paragraph(err, "1-channel (gray) images but the student expects 3 (RGB)", "channels: 3")


# ---------------------------------------------------------------------------------- during and after fit


def test_nan_loss_stops_with_last_good_checkpoint_kept(capsys, tmp_path, recipe, monkeypatch):
    original = DistillationModule.compute_losses

    def poisoned(self, batch):
        pred, terms = original(self, batch)
        if self.global_step >= 3:
            terms["hint"] = terms["hint"] * float("inf")
        return pred, terms

    monkeypatch.setattr(DistillationModule, "compute_losses", poisoned)
    code, err = run(capsys, *fit(recipe, tmp_path, "--trainer.max_steps=6"))
    assert code == 2
    assert_one_paragraph(err, "non-finite loss at step 3", "'hint': inf", "last good checkpoint is kept")
    last = tmp_path / "run" / "checkpoints" / "last.ckpt"
    checkpoint = torch.load(last, weights_only=False)
    assert checkpoint["global_step"] == 2  # saved at the validation of step 2, before the bad step
    assert all(torch.isfinite(v).all() for v in checkpoint["state_dict"].values() if v.is_floating_point())
    restored = DistillationModule.load_from_checkpoint(last)
    assert all(p.isfinite().all() for p in restored.student.parameters())
    assert not (tmp_path / "run" / "results.json").exists()
    assert not [p for p in last.parent.iterdir() if p.name.startswith(".")]  # no temporary file left


def test_non_finite_weights_never_overwrite_a_good_checkpoint(tmp_path, recipe):
    import lightning as L
    from lightning.pytorch.callbacks import ModelCheckpoint

    from distill.checkpointing import AtomicCheckpointIO
    from distill.data import DenoisingDataModule

    module = DistillationModule(
        teacher=DnCNN(in_channels=1, features=8, depth=4),
        student=SpikingDnCNN(in_channels=1, features=6, depth=4, timesteps=2), example_size=16)
    trainer = L.Trainer(default_root_dir=tmp_path, max_steps=2, logger=False, enable_progress_bar=False,
                        enable_model_summary=False, num_sanity_val_steps=0, limit_val_batches=0,
                        plugins=[AtomicCheckpointIO()], callbacks=[ModelCheckpoint(dirpath=tmp_path / "ck")])
    trainer.fit(module, datamodule=DenoisingDataModule(patch_size=16, patches_per_epoch=8, batch_size=4))
    path = tmp_path / "ck" / "last.ckpt"
    trainer.save_checkpoint(path)
    before = path.read_bytes()
    with torch.no_grad():
        module.student.tail.weight[0, 0, 0, 0] = math.nan
    with pytest.raises(TrainingError, match=r"non-finite weights at step 2 .*student\.tail\.weight"):
        trainer.save_checkpoint(path)
    assert path.read_bytes() == before


def test_resume_refused_when_teacher_file_changed(capsys, tmp_path, recipe):
    main(fit(recipe, tmp_path, "--trainer.max_steps=2"))
    capsys.readouterr()
    before = (tmp_path / "teacher.pt").read_bytes()
    tiny_teacher(tmp_path / "teacher.pt", seed=1)  # the same architecture, other weights
    assert (tmp_path / "teacher.pt").read_bytes() != before
    code, err = run(capsys, *fit(recipe, tmp_path, "--trainer.max_steps=4", "--ckpt_path", "last"))
    assert code == 2
    assert_one_paragraph(err, "teacher weights changed since this run began", "teacher.pt", "SHA-256")
