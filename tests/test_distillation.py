"""DistillationModule end to end on tiny models: frozen teacher, hint loss, results.json, checkpoints."""
import json

import lightning as L
import pytest
import torch

from distill.callbacks import ConvergenceMonitor, EnergyMonitor, run_callbacks
from distill.convergence import ConvergenceTargets
from distill.data import DenoisingDataModule
from distill.distillation import DistillationModule, OutputDistillation
from distill.errors import CheckpointError, ConfigError, TrainingError
from distill.hints import Hint
from distill.module import RestorationModule
from students.spiking_dncnn import SpikingDnCNN
from teachers.dncnn import DnCNN


def tiny_data(**kwargs):
    options = dict(channels=1, sigma=25.0, patch_size=16, patches_per_epoch=64, batch_size=8, eval_size=32)
    return DenoisingDataModule(**(options | kwargs))


def tiny_teacher(tmp_path=None):
    teacher = DnCNN(in_channels=1, features=8, depth=4, bn=True)
    if tmp_path is None:
        return teacher
    path = tmp_path / "teacher.pt"
    torch.save(teacher.state_dict(), path)
    return DnCNN(in_channels=1, features=8, depth=4, bn=True, checkpoint=str(path))


def tiny_module(teacher=None, hints=None, **kwargs):
    student = SpikingDnCNN(in_channels=1, features=6, depth=4, timesteps=2)
    hints = [Hint(teacher="body.4", student="blocks.0.neuron", weight=1.0)] if hints is None else hints
    return DistillationModule(teacher=teacher or tiny_teacher(), student=student, hints=hints, example_size=16, **kwargs)


def trainer(tmp_path, callbacks=(), **kwargs):
    """A tiny Trainer with the run's callbacks (energy, convergence, results.json), as the CLI builds it."""
    options = dict(default_root_dir=tmp_path, max_steps=6, logger=False, enable_checkpointing=False,
                   enable_progress_bar=False, enable_model_summary=False, val_check_interval=3,
                   check_val_every_n_epoch=None, num_sanity_val_steps=0)
    return L.Trainer(callbacks=[*run_callbacks(), *callbacks], **(options | kwargs))


def run_callback(trainer, kind):
    return next(c for c in trainer.callbacks if isinstance(c, kind))


class HintLog(L.Callback):
    def __init__(self):
        self.values = []

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        self.values.append(float(trainer.callback_metrics["train/hint0"]))


def test_teacher_frozen_through_fit(tmp_path):
    L.seed_everything(0)
    module = tiny_module()
    before = {k: v.clone() for k, v in module.teacher.state_dict().items()}
    modes = []

    class Watch(L.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            modes.append(pl_module.teacher.training)

        def on_validation_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0):
            modes.append(pl_module.teacher.training)

    trainer(tmp_path, callbacks=[Watch()]).fit(module, datamodule=tiny_data())
    assert modes and not any(modes)  # eval mode in training and validation
    after = module.teacher.state_dict()
    for key, value in before.items():  # weights and BN running statistics untouched
        assert torch.equal(value, after[key]), key
    assert all(not p.requires_grad and p.grad is None for p in module.teacher.parameters())
    optimizer = module.configure_optimizers()
    optimized = {id(p) for group in optimizer.param_groups for p in group["params"]}
    assert not optimized & {id(p) for p in module.teacher.parameters()}
    assert {id(p) for p in module.hint_set.parameters()} <= optimized


def test_hint_loss_nonzero_and_decreasing(tmp_path):
    L.seed_everything(0)
    module = tiny_module(restoration_loss=None, optimizer=lambda p: torch.optim.Adam(p, lr=5e-3))
    log = HintLog()
    trainer(tmp_path, max_steps=40, val_check_interval=40, callbacks=[log]).fit(module, datamodule=tiny_data())
    first, last = sum(log.values[:5]) / 5, sum(log.values[-5:]) / 5
    assert first > 0 and last < 0.7 * first, (first, last)


def test_networks_passed_directly_stay_out_of_the_hyperparameters(recwarn):
    module = tiny_module(output_distillation=OutputDistillation(weight=0.5))
    for hparams in (module.hparams, module.hparams_initial):  # what checkpoints and loggers get
        assert not {"teacher", "student"} & set(hparams)
        assert hparams["example_size"] == 16 and hparams["output_distillation"].weight == 0.5
    assert not [w for w in recwarn if "is an instance of `nn.Module`" in str(w.message)]


def test_results_json_has_every_field(tmp_path):
    L.seed_everything(0)
    module = tiny_module(output_distillation=OutputDistillation(weight=0.5))
    fit = trainer(tmp_path)
    data = tiny_data()
    fit.fit(module, datamodule=data)
    fit.test(module, datamodule=data, verbose=False)
    results = json.loads((tmp_path / "results.json").read_text())
    assert set(results["metrics"]) == {"input", "teacher", "student"}
    assert all(set(v) == {"psnr", "ssim"} for v in results["metrics"].values())
    params = results["params"]
    assert params["student"] == sum(p.numel() for p in module.student.parameters())
    assert params["ratio"] == pytest.approx(params["teacher"] / params["student"])
    assert params["adapters"] == sum(p.numel() for p in module.hint_set.parameters()) > 0
    energy = results["energy"]
    assert energy["ratio"] == pytest.approx(energy["teacher_uj"] / energy["student_uj"], rel=1e-6)
    assert energy["constants"]["e_mac_pj"] == 4.6
    assert (tmp_path / "energy_student.csv").exists() and (tmp_path / "energy_teacher.csv").exists()
    assert [h["step"] for h in results["convergence"]["history"]] == [3, 6]
    assert results["timesteps"] == 2 and results["task"] == "denoise" and results["sigma"] == 25.0
    assert results["metric_protocol"]["data_range"] == 1.0
    assert results["versions"]["torch"].startswith(torch.__version__.split("+")[0])
    assert results["hints"][0]["student"] == "blocks.0.neuron"


def test_checkpoint_excludes_teacher_and_checks_its_sha(tmp_path):
    L.seed_everything(0)
    teacher = tiny_teacher(tmp_path)
    module = tiny_module(teacher=teacher)
    fit = trainer(tmp_path, max_steps=2, enable_checkpointing=True, val_check_interval=2)
    fit.fit(module, datamodule=tiny_data())
    ckpt_path = tmp_path / "manual.ckpt"
    fit.save_checkpoint(ckpt_path)
    checkpoint = torch.load(ckpt_path, weights_only=False)
    assert not [k for k in checkpoint["state_dict"] if k.startswith("teacher.")]
    assert checkpoint["teacher_source"]["sha256"] == module.teacher_source["sha256"]
    # resuming with the same teacher file works; a changed file is refused, naming both hashes
    resumed = tiny_module(teacher=DnCNN(in_channels=1, features=8, depth=4, checkpoint=str(tmp_path / "teacher.pt")))
    resumed.on_load_checkpoint(torch.load(ckpt_path, weights_only=False))
    changed = tiny_teacher()
    torch.save(changed.state_dict(), tmp_path / "teacher.pt")
    stale = tiny_module(teacher=DnCNN(in_channels=1, features=8, depth=4, checkpoint=str(tmp_path / "teacher.pt")))
    with pytest.raises(CheckpointError, match="teacher weights changed") as err:
        stale.on_load_checkpoint(torch.load(ckpt_path, weights_only=False))
    assert module.teacher_source["sha256"] in str(err.value)


def test_channel_mismatch_between_data_and_student(tmp_path):
    module = tiny_module()
    with pytest.raises(ConfigError, match="3-channel .RGB. images but the student expects 1"):
        trainer(tmp_path).fit(module, datamodule=tiny_data(channels=3))


def test_nan_loss_stops_naming_step_and_term(tmp_path):
    module = tiny_module(hints=[])
    original = module.compute_losses

    def poisoned(batch):
        pred, terms = original(batch)
        if module.global_step == 2:
            terms["restoration"] = terms["restoration"] * float("nan")
        return pred, terms

    module.compute_losses = poisoned
    with pytest.raises(TrainingError, match=r"step 2 .*'restoration': nan"):
        trainer(tmp_path).fit(module, datamodule=tiny_data())


def test_restoration_module_trains_a_teacher_alone(tmp_path):
    L.seed_everything(0)
    module = RestorationModule(model=tiny_teacher(), optimizer=lambda p: torch.optim.Adam(p, lr=3e-3))
    data = tiny_data()
    fit = trainer(tmp_path, max_steps=30, val_check_interval=30)
    fit.fit(module, datamodule=data)
    fit.test(module, datamodule=data, verbose=False)
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["metrics"]["model"]["psnr"] > results["metrics"]["input"]["psnr"]


def zoo_teachers():
    from teachers.ffdnet import FFDNet
    from teachers.restormer import Restormer
    from teachers.twins import DnCNNTwin, ESDNetTwin, SpikerIRTwin, UNetTwin
    from teachers.unet import UNet

    return {
        "DnCNN": lambda: DnCNN(in_channels=1, features=8, depth=4),
        "FFDNet": lambda: FFDNet(in_channels=1, features=8, depth=3),
        "UNet": lambda: UNet(in_channels=1, preset="tiny"),
        "Restormer": lambda: Restormer(in_channels=1, preset="tiny"),
        "DnCNNTwin": lambda: DnCNNTwin(in_channels=1, features=8, depth=4),
        "UNetTwin": lambda: UNetTwin(in_channels=1, preset="tiny"),
        "ESDNetTwin": lambda: ESDNetTwin(in_channels=1, preset="tiny"),
        "SpikerIRTwin": lambda: SpikerIRTwin(in_channels=1, preset="tiny"),
    }


@pytest.mark.parametrize("name", list(zoo_teachers()))
def test_every_teacher_serves_frozen_in_a_distillation_fit(tmp_path, name):
    L.seed_everything(0)
    teacher = zoo_teachers()[name]()
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    module = tiny_module(teacher=teacher, hints=[], output_distillation=OutputDistillation(weight=1.0))
    trainer(tmp_path, max_steps=2, val_check_interval=2).fit(module, datamodule=tiny_data())
    assert not teacher.training and all(not p.requires_grad for p in teacher.parameters())
    for key, value in before.items():
        assert torch.equal(value, teacher.state_dict()[key]), key
    assert module.val_scores["teacher"]["psnr"] > 0


def test_each_validation_logs_parameter_ratio_firing_rates_energy_and_convergence(tmp_path):
    import csv

    from lightning.pytorch.loggers import CSVLogger

    L.seed_everything(0)
    module = tiny_module(convergence=ConvergenceTargets(psnr=[0.0, 99.0], below_teacher=[]))
    logger = CSVLogger(tmp_path, name="csv")
    fit = trainer(tmp_path, max_steps=4, val_check_interval=2, logger=logger)
    fit.fit(module, datamodule=tiny_data())
    rows = list(csv.DictReader(open(logger.log_dir + "/metrics.csv")))
    validations = [r for r in rows if r.get("params/ratio")]
    assert [int(r["step"]) for r in validations] == [1, 3]  # Lightning logs validation at the last step index
    counts = module.parameter_counts()
    row = validations[-1]
    assert float(row["params/ratio"]) == pytest.approx(counts["teacher"] / counts["student"])
    assert float(row["params/student"]) == counts["student"]
    energy = run_callback(fit, EnergyMonitor)
    ratio = energy.reports["teacher"].energy_pj / energy.reports["student"].energy_pj
    assert float(row["energy/ratio"]) == pytest.approx(ratio, rel=1e-6)
    assert float(row["energy/mean_firing_rate"]) == pytest.approx(energy.mean_firing_rate, rel=1e-6)
    for layer, rate in energy.firing_rates.items():
        assert float(row[f"firing/{layer}"]) == pytest.approx(rate, rel=1e-6)
    assert "firing/head.neuron" in row
    # a target already met (0 dB) is logged with the step of the first validation, at every validation since;
    # an unmet one (99 dB) is never logged
    assert [float(r["convergence/steps_to_0dB"]) for r in validations] == [2, 2]
    assert not any(r.get("convergence/steps_to_99dB") for r in rows)
    history = run_callback(fit, ConvergenceMonitor).tracker.history
    assert [h["step"] for h in history] == [2, 4] and history[0]["psnr"] == pytest.approx(float(
        next(r for r in rows if r.get("val/psnr") and int(r["step"]) == 1)["val/psnr"]), rel=1e-6)
