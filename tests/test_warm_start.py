"""The warm start inside a fit: it runs once, its time counts as training, a resume does not repeat it, and
options that need a teacher or an IF start are refused with the key to set."""
import json

import pytest

import distill.warm_start
from distill.cli import main
from distill.errors import ConfigError
from distill.module import RestorationModule
from distill.warm_start import WarmStart
from students.spiking_dncnn import SpikingDnCNN

from test_cli import TINY


def fit(run, *extra):
    main(["fit", "--config", "recipes/quickstart_hint.yaml", "--trainer.val_check_interval=2",
          f"--trainer.default_root_dir={run}", *TINY, *extra])


def test_warm_start_runs_once_counts_its_time_and_survives_a_resume(tmp_path, repo_root, monkeypatch):
    monkeypatch.chdir(repo_root)
    run = tmp_path / "run"
    fit(run, "--trainer.max_steps=2", "--model.init_args.warm_start.twin_steps=6")
    first = json.loads((run / "results.json").read_text())
    report = first["warm_start"]
    assert report["twin_steps"] == 6 and 0 < report["twin_seconds"] <= report["seconds"]
    assert first["convergence"]["train_seconds"] >= report["seconds"]
    assert first["convergence"]["history"][0]["seconds"] >= report["seconds"]  # the clock starts before step 1

    def refuse(*_args):
        raise AssertionError("a resumed run must not train its twin again")

    monkeypatch.setattr(distill.warm_start, "run_warm_start", refuse)
    fit(run, "--trainer.max_steps=4", "--model.init_args.warm_start.twin_steps=6", "--ckpt_path=last")
    resumed = json.loads((run / "results.json").read_text())
    assert resumed["run"]["global_step"] == 4 and resumed["warm_start"] == report


def test_weight_calibration_runs_after_the_rate_calibration_and_is_reported(tmp_path, repo_root, monkeypatch):
    monkeypatch.chdir(repo_root)
    run = tmp_path / "run"
    fit(run, "--trainer.max_steps=1", "--model.init_args.warm_start.twin_steps=4",
        "--model.init_args.warm_start.weight_calibration=3")
    report = json.loads((run / "results.json").read_text())["warm_start"]
    paths = ["head.neuron", "blocks.0.neuron", "blocks.1.neuron", "tail"]  # TINY: depth 4
    assert list(report["weight_calibration_mse"]) == paths
    assert all(v >= 0 for v in report["weight_calibration_mse"].values())
    assert isinstance(report["weight_calibrated_psnr"], float) and "calibrated_psnr" in report


def test_twin_hint_is_the_mse_of_each_layers_rate_to_the_twins_activation():
    import torch

    from distill.warm_start import TwinHint
    from students.transfer import make_twin, neuron_paths

    torch.manual_seed(0)
    student = SpikingDnCNN(1, 4, 4, timesteps=3, neuron="if", norm="none", init_membrane=0.5, zero_tail=False)
    twin = make_twin(student)
    x = torch.rand(2, 1, 12, 12)
    spikes, acts = {}, {}
    for net, store in ((student, spikes), (twin, acts)):
        hooks = [net.get_submodule(p).register_forward_hook(lambda _m, _i, o, p=p, d=store: d.__setitem__(p, o))
                 for p in neuron_paths(net)]
        net(x)
        for h in hooks:
            h.remove()
    assert spikes["blocks.1.neuron"].shape[0] == 3  # [T, B, C, H, W]
    by_hand = sum(float(((spikes[p].mean(0) - acts[p].reshape(spikes[p].shape[1:])) ** 2).mean()) for p in spikes)
    hint = TwinHint(twin, 0.5)
    assert float(hint.loss(spikes, x)) == pytest.approx(0.5 * by_hand / len(spikes), rel=1e-5)
    assert not any(p.requires_grad for p in hint.twin.parameters()) and not hint.twin.training


def test_twin_hint_trains_and_its_twin_survives_a_resume(tmp_path, repo_root, monkeypatch):
    import torch

    from distill.warm_start import TwinHint

    monkeypatch.chdir(repo_root)
    run = tmp_path / "run"
    options = ["--model.init_args.warm_start.twin_steps=3", "--model.init_args.warm_start.twin_hint_weight=0.5"]
    losses = []
    loss = TwinHint.loss
    monkeypatch.setattr(TwinHint, "loss", lambda self, *a: losses.append(loss(self, *a)) or losses[-1])
    fit(run, "--trainer.max_steps=2", *options)
    assert len(losses) == 2 and all(v.item() > 0 and v.requires_grad for v in losses)  # one term per training step
    saved = torch.load(run / "checkpoints" / "last.ckpt", weights_only=False)["warm_start_twin"]
    assert "head.neuron.threshold" in saved and "tail.weight" in saved
    restored = []
    original = TwinHint.restore.__func__

    def spy(cls, student, state, weight):
        restored.append({k: v.clone() for k, v in state.items()})
        return original(cls, student, state, weight)

    monkeypatch.setattr(TwinHint, "restore", classmethod(spy))
    fit(run, "--trainer.max_steps=4", *options, "--ckpt_path=last")
    assert len(restored) == 1 and all(torch.equal(restored[0][k], saved[k]) for k in saved)
    with pytest.raises(ConfigError, match="holds no warm-start twin"):
        module = RestorationModule(SpikingDnCNN(1, 4, 3, neuron="if", init_membrane=0.5),
                                   warm_start=WarmStart(twin_steps=1, twin_hint_weight=1.0))
        module.warm_start_report = {"twin_steps": 1}
        module.on_fit_start()


def test_teacher_options_need_a_teacher():
    student = SpikingDnCNN(1, 4, 3, neuron="if", init_membrane=0.5)
    RestorationModule(student, warm_start=WarmStart(twin_steps=1))  # no teacher needed
    for option in ({"teacher_output_weight": 1.0}, {"twin_hints": True}, {"select_from_teacher": True}):
        with pytest.raises(ConfigError, match="need a teacher"):
            RestorationModule(student, warm_start=WarmStart(twin_steps=1, **option))


def test_a_student_that_does_not_start_at_half_threshold_is_refused(tmp_path, repo_root, monkeypatch, capsys):
    monkeypatch.chdir(repo_root)
    with pytest.raises(SystemExit) as exit_:
        fit(tmp_path / "r", "--trainer.max_steps=1", "--model.init_args.student.init_args.init_membrane=0.0")
    assert exit_.value.code == 2
    assert "set the student's init_membrane: 0.5 (it has init_membrane=0.0)" in capsys.readouterr().err


@pytest.mark.parametrize("field, value", [("twin_steps", -1), ("lr", 0.0), ("teacher_output_weight", -1.0),
                                          ("clean_weight", -1.0), ("weight_calibration", -1),
                                          ("twin_hint_weight", -0.5),
                                          ("threshold_percentile", 0.0), ("calibration_patches", 0)])
def test_bad_options_name_the_field(field, value):
    with pytest.raises(ConfigError, match=f"{field}={value!r}"):
        WarmStart(**{field: value})


def test_last_checkpoint_is_the_latest_step_even_when_psnr_falls(tmp_path, repo_root, monkeypatch):
    """Lightning's save_last only follows new bests; the run's last.ckpt must hold the final step regardless."""
    import torch

    monkeypatch.chdir(repo_root)
    run = tmp_path / "run"
    fit(run, "--trainer.max_steps=6", "--trainer.callbacks+=cli_helpers.SpoilAfterFirstValidation")
    best = sorted(p.name for p in (run / "checkpoints").glob("best-*.ckpt"))
    assert best == ["best-step=2.ckpt"]  # the PSNR fell after the first validation
    assert torch.load(run / "checkpoints" / "last.ckpt", weights_only=False)["global_step"] == 6
    # and when the last steps have no validation, the end of training still writes them
    fit(tmp_path / "odd", "--trainer.max_steps=5")
    assert torch.load(tmp_path / "odd" / "checkpoints" / "last.ckpt", weights_only=False)["global_step"] == 5


def test_a_twin_needs_some_target():
    with pytest.raises(ConfigError, match="clean_weight=0 with teacher_output_weight=0"):
        WarmStart(clean_weight=0.0)


def test_clean_weight_zero_trains_the_twin_on_the_teachers_output_alone():
    """With clean_weight 0 the twin's loss is the L1 distance to the teacher's output, computed here by hand."""
    import torch

    from distill.warm_start import _twin_loss

    torch.manual_seed(0)
    twin, teacher = torch.nn.Conv2d(1, 1, 3, padding=1), torch.nn.Conv2d(1, 1, 3, padding=1)
    batch = {"input": torch.rand(2, 1, 8, 8), "target": torch.rand(2, 1, 8, 8), "sigma": torch.full((2,), 0.1)}

    class Module:
        @staticmethod
        def restoration_loss(pred, target, step):
            return (pred - target).abs().mean(), {}

    with torch.no_grad():
        pred, reference = twin(batch["input"]), teacher(batch["input"])
    only = _twin_loss(Module, twin, teacher, None, WarmStart(clean_weight=0.0, teacher_output_weight=2.0), batch, 0)
    assert only.item() == pytest.approx(2.0 * (pred - reference).abs().mean().item(), rel=1e-6)
    mixed = _twin_loss(Module, twin, teacher, None, WarmStart(clean_weight=0.5, teacher_output_weight=2.0), batch, 0)
    expected = 0.5 * (pred - batch["target"]).abs().mean() + 2.0 * (pred - reference).abs().mean()
    assert mixed.item() == pytest.approx(expected.item(), rel=1e-6)
