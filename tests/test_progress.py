"""Progress: lines in a log file while a fit runs (stdout no terminal), the rich bar on a terminal with an epoch total
that max_steps implies, and --trainer.enable_progress_bar=false turning both off."""
import io
import re

import pytest
from lightning.pytorch import Trainer
from lightning.pytorch.callbacks import ProgressBar
from lightning.pytorch.demos.boring_classes import BoringModel, RandomDataset
from torch.utils.data import DataLoader

from cli_helpers import QUICKSTART, spikedistill, tiny_recipe, wait_for
from distill.cli import SpikeDistillCLI
from distill.progress import LineProgress, StepRichProgressBar, progress_bar

pytestmark = pytest.mark.usefixtures("single_thread")


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def fit(bar: ProgressBar, max_steps: int, accumulate: int = 1) -> Trainer:
    """BoringModel on 64 samples in batches of 8: 8 batches per epoch; validation every 5 batches of the run."""
    trainer = Trainer(accelerator="cpu", max_steps=max_steps, accumulate_grad_batches=accumulate, logger=False,
                      enable_checkpointing=False, enable_model_summary=False, callbacks=[bar], log_every_n_steps=1,
                      val_check_interval=5, check_val_every_n_epoch=None, num_sanity_val_steps=0,
                      limit_val_batches=1)
    loader = DataLoader(RandomDataset(32, 64), batch_size=8)
    trainer.fit(BoringModel(), loader, DataLoader(RandomDataset(32, 8), batch_size=8))
    return trainer


def test_terminal_gets_the_rich_bar_and_a_file_gets_lines():
    assert type(progress_bar(Terminal())) is StepRichProgressBar
    assert type(progress_bar(io.StringIO())) is LineProgress


@pytest.mark.parametrize("max_steps, accumulate, last_epoch", [
    (20, 1, "2/2"),  # 8 steps per epoch: 20 steps end in the third epoch (0, 1, 2)
    (20, 2, "4/4"),  # 4 steps per epoch: 5 epochs
    (8, 1, "0/0"),
])
def test_rich_bar_epoch_total_follows_max_steps(max_steps, accumulate, last_epoch):
    bar = StepRichProgressBar()
    fit(bar, max_steps, accumulate)
    assert bar.train_progress_bar.description.strip() == f"Epoch {last_epoch}"  # Lightning's own reads "Epoch 2/-2"


def test_lines_every_n_steps_and_at_the_last_step():
    out = io.StringIO()
    fit(LineProgress(every_n_steps=5, every_seconds=1e9, stream=out), max_steps=12)
    lines = out.getvalue().splitlines()
    steps = [int(m.group(1)) for m in (re.match(r"train: step (\d+)/12 ", line) for line in lines) if m]
    assert steps == [5, 10, 12]
    assert re.search(r"train: step 10/12 \(83%\) \| epoch 1/1 \| .* it/s \| elapsed \d+:\d\d:\d\d \| ETA \d+:\d\d:\d\d",
                     "\n".join(lines))
    assert lines[0].startswith("fit: set-up") and lines[1].startswith("train: from step 0/12, ")
    assert [line for line in lines if line.startswith("val: ")] == ["val: step 5", "val: step 10"]
    assert lines[-1].startswith("train: ended at step 12/12 after ")


def test_every_seconds_prints_each_step_when_steps_are_slower():
    out = io.StringIO()
    fit(LineProgress(every_n_steps=1000, every_seconds=0.0, stream=out), max_steps=4)
    assert re.findall(r"train: step (\d)/4", out.getvalue()) == ["1", "2", "3", "4"]


@pytest.mark.parametrize("flag, expected", [([], LineProgress), (["--trainer.enable_progress_bar=false"], None)])
def test_cli_progress_outside_a_terminal_and_disabled(tmp_path, flag, expected):
    cli = SpikeDistillCLI(args=["--config", QUICKSTART, f"--trainer.default_root_dir={tmp_path}",
                                "--trainer.logger=false", *flag], run=False)  # pytest's stdout is no terminal
    bars = [c for c in cli.trainer.callbacks if isinstance(c, ProgressBar)]
    assert [type(b) for b in bars] == ([expected] if expected else [])


@pytest.mark.slow  # a `spikedistill fit` subprocess whose stdout is a file
def test_log_file_shows_progress_lines_while_the_fit_runs(tmp_path):
    """The fit is parked before step 10 (of 15): the log already holds a line for each step done."""
    held, log = tmp_path / "held", tmp_path / "fit.log"
    proc = spikedistill("fit", "--config", QUICKSTART, "--config", str(tiny_recipe(tmp_path)),
                        "--trainer.enable_progress_bar=true", f"--trainer.default_root_dir={tmp_path / 'run'}",
                        "--trainer.callbacks+=cli_helpers.HoldAtStep", "--trainer.callbacks.step=9",
                        f"--trainer.callbacks.marker={held}", log=log, OMP_NUM_THREADS="1")
    try:
        wait_for(held, proc)
        text = log.read_text()
    finally:
        proc.kill()
        proc.wait(timeout=60)
    assert [int(s) for s in re.findall(r"^train: step (\d+)/15 ", text, re.M)] == list(range(1, 10))
    assert re.findall(r"^val: step (\d+) \| val/psnr \d+\.\d+$", text, re.M) == ["3", "6", "9"]
    assert re.search(r"^train: step 9/15 \(60%\) \| epoch 1/1 \| train/loss [\d.]+ \| val/psnr [\d.]+ \| .* ETA ",
                     text, re.M)
