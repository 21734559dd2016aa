"""The run's callbacks on their own: convergence bookkeeping across resumes (also from checkpoints written before
the callbacks existed), energy of every network, and training that loads neither plots nor the leaderboard."""
import subprocess
import sys
from types import SimpleNamespace

import pytest
import torch

from cli_helpers import REPO
from distill.callbacks import ConvergenceMonitor, EnergyMonitor, first_image
from distill.convergence import ConvergenceTargets
from distill.module import RestorationModule
from teachers.dncnn import DnCNN


def module_stub(warm_seconds=None, targets=None):
    """What ConvergenceMonitor reads of a module: its targets and the warm-start report."""
    report = None if warm_seconds is None else {"seconds": warm_seconds}
    return SimpleNamespace(convergence_targets=targets or ConvergenceTargets(), warm_start_report=report)


def test_warm_start_seconds_count_once_also_across_a_resume():
    module = module_stub(warm_seconds=5.0)
    first = ConvergenceMonitor()
    first.setup(None, module, "fit")
    first.on_train_start(None, module)
    first.on_train_start(None, module)  # a second fit of the same run
    assert first.tracker.train_seconds == 5.0
    first.tracker.update(step=3, psnr=20.0, teacher_psnr=None)
    resumed = ConvergenceMonitor()
    resumed.setup(None, module, "fit")
    resumed.load_state_dict(first.state_dict())  # Lightning restores it before on_train_start
    resumed.on_train_start(None, module)
    assert resumed.tracker.train_seconds == 5.0 and resumed.tracker.history == first.tracker.history


def test_a_checkpoint_from_before_the_callbacks_resumes_its_convergence():
    legacy = {"convergence": {"history": [{"step": 3, "seconds": 7.5, "psnr": 24.5}], "reference_psnr": 26.0,
                              "train_seconds": 7.5},
              "warm_start": {"seconds": 2.0}}
    monitor = ConvergenceMonitor()
    module = module_stub(warm_seconds=2.0, targets=ConvergenceTargets(psnr=[24.0], below_teacher=[1.0]))
    monitor.setup(None, module, "fit")
    monitor.on_load_checkpoint(None, module, legacy)
    monitor.on_train_start(None, module)  # its seconds already hold the warm start
    assert monitor.tracker.train_seconds == 7.5
    summary = monitor.tracker.summary()
    assert summary["24dB"]["step"] == 3 and summary["teacher-1dB"] == {"target_db": 25.0, "step": None,
                                                                        "seconds": None}


def test_energy_monitor_measures_the_module_network_on_one_image():
    torch.manual_seed(0)
    module = RestorationModule(model=DnCNN(in_channels=1, features=8, depth=3))
    batch = {"input": torch.rand(3, 1, 16, 16), "sigma": torch.zeros(3), "name": ["a", "b", "c"]}
    image = first_image(batch)
    assert set(image) == {"input", "sigma"} and image["input"].shape == (1, 1, 16, 16)
    monitor = EnergyMonitor()
    monitor.measure(module, image)
    report = monitor.reports["model"]
    # a 3-layer DnCNN on 16x16: (1*8 + 8*8 + 8*1) MACs per pixel, 9 taps each
    assert report.macs == 16 * 16 * 9 * (1 * 8 + 8 * 8 + 8 * 1)
    assert monitor.summary() == {"model_uj": pytest.approx(report.macs * 4.6e-6)}  # 45nm fp32 MAC: 4.6 pJ
    energy = monitor.results(module)["energy"]
    assert monitor.firing_rates == {} and energy["constants"]["name"] == "45nm-fp32"
    assert energy["image_size"] == [1, 16, 16]  # what "per image" means, in results.json


def test_training_loads_neither_the_plots_nor_the_leaderboard():
    code = ("import sys, distill.cli, distill.distillation, distill.callbacks; "
            "print(sorted(m for m in ('distill.plots', 'distill.leaderboard') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
