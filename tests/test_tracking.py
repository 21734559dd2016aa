"""Loggers a run gets: wandb in the mode WANDB_MODE or --wandb_mode picks (offline unless asked), the whole run config
in wandb's run, TensorBoard on request, and the local view (CSV metrics, leaderboard, plots) of a finished run."""
import csv
import json
import os
import struct
import time
from pathlib import Path

import pytest
from lightning.pytorch.loggers import CSVLogger, WandbLogger

from cli_helpers import QUICKSTART, tiny_recipe
from distill.cli import SpikeDistillCLI, main
from distill.errors import ConfigError
from distill.tracking import default_loggers, tensorboard_available, wandb_mode

pytestmark = pytest.mark.usefixtures("single_thread")

AGENT = {"WANDB_SWEEP_ID": "sw33p", "WANDB_RUN_ID": "r1"}


@pytest.mark.parametrize("choice, env, mode", [
    (None, {}, "offline"),  # nothing reaches the network unless asked
    (None, {"WANDB_MODE": "online"}, "online"),
    (None, {"WANDB_MODE": "Disabled"}, "disabled"),
    (None, {"WANDB_MODE": "dryrun"}, "offline"),  # wandb's older names
    (None, {"WANDB_MODE": "run"}, "online"),
    ("online", {"WANDB_MODE": "offline"}, "online"),  # the recipe or flag wins
    ("disabled", {"WANDB_MODE": "online"}, "disabled"),
    (None, AGENT, "online"),  # a `wandb agent` run reports to its sweep
    (None, {**AGENT, "WANDB_MODE": "offline"}, "offline"),
])
def test_wandb_mode_follows_flag_then_environment(choice, env, mode):
    assert wandb_mode(choice, env) == mode


def test_wandb_mode_refuses_unknown_values():
    with pytest.raises(ConfigError, match="WANDB_MODE='onlin' is not allowed: use one of online, offline, disabled"):
        wandb_mode(None, {"WANDB_MODE": "onlin"})


def cli_loggers(tmp_path, *args):
    """The loggers the CLI gives a quickstart run (classes built, nothing run)."""
    cli = SpikeDistillCLI(args=["--config", QUICKSTART, f"--trainer.default_root_dir={tmp_path / 'run'}", *args],
                          run=False)
    return cli.trainer.loggers


@pytest.mark.parametrize("env, flag", [("online", []), ("offline", ["--wandb_mode=online"])])
def test_online_is_chosen_by_env_or_flag_without_connecting(tmp_path, monkeypatch, env, flag):
    import wandb

    monkeypatch.setenv("WANDB_MODE", env)
    started = []
    monkeypatch.setattr(wandb, "init", lambda **kwargs: started.append(kwargs) or object())  # nothing connects
    loggers = cli_loggers(tmp_path, *flag)
    assert [type(logger) for logger in loggers] == [CSVLogger, WandbLogger]
    assert not started  # building the logger starts no run
    loggers[1].experiment
    assert started[0]["mode"] == "online" and started[0]["project"] == "spikedistill"
    assert started[0]["dir"] == str(tmp_path / "run")


def test_wandb_disabled_leaves_csv_alone(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    assert [type(logger) for logger in cli_loggers(tmp_path, "--wandb_mode=disabled")] == [CSVLogger]


@pytest.mark.skipif(tensorboard_available(), reason="tensorboard is installed")
def test_tensorboard_without_the_package_names_the_extra(tmp_path):
    with pytest.raises(ConfigError, match=r"pip install 'spikedistill\[tensorboard\]'.*metrics.csv"):
        default_loggers(tmp_path, "disabled", tensorboard=True)


@pytest.mark.skipif(not tensorboard_available(), reason="tensorboard is not installed")
def test_tensorboard_logger_joins_the_defaults(tmp_path):
    from lightning.pytorch.loggers import TensorBoardLogger

    loggers = default_loggers(tmp_path, "disabled", tensorboard=True)
    assert isinstance(loggers[-1], TensorBoardLogger) and loggers[-1].save_dir == str(tmp_path)


def wandb_records(path: Path):
    """The protobuf records of an offline run's `run-<id>.wandb` file (wandb 0.31 writes no files/config.yaml
    offline: the config is in these records). The file is a LevelDB log: 32 KiB blocks of records, each with a
    7-byte header (checksum, length, type: 1 full, 2 first, 3 middle, 4 last), after a 7-byte file header."""
    from wandb.proto import wandb_internal_pb2

    raw = path.read_bytes()
    assert raw[:4] == b":W&B"
    position, block, pending = 7, 1 << 15, b""
    while position + 7 <= len(raw):
        if block - position % block < 7:  # a block's tail too short for a header is padding
            position += block - position % block
            continue
        _, length, kind = struct.unpack("<IHB", raw[position : position + 7])
        if position + 7 + length > len(raw):  # a record still being written
            return
        pending += raw[position + 7 : position + 7 + length]
        position += 7 + length
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            pending = b""
            yield record


def finished_records(path: Path, timeout: float = 60.0) -> list:
    """The records of a run file once its `exit` record is on disk: wandb's core process may still be writing the
    file when `finish()` returns (seen on a loaded CI machine), so the file is read again until it is complete."""
    deadline = time.monotonic() + timeout
    while True:
        records = list(wandb_records(path))
        if any(record.WhichOneof("record_type") == "exit" for record in records) or time.monotonic() > deadline:
            return records
        time.sleep(0.5)


def offline_config(run_dir: Path) -> dict:
    """The run config of the one offline wandb run under `run_dir`, read back from its files."""
    (found,) = run_dir.glob("wandb/offline-run-*/run-*.wandb")
    config: dict = {}
    for record in finished_records(found):
        kind = record.WhichOneof("record_type")
        items = record.config.update if kind == "config" else record.run.config.update if kind == "run" else []
        config.update({item.key: json.loads(item.value_json) for item in items})
    return config


@pytest.fixture(scope="module")
def offline_run(tmp_path_factory):
    """A tiny quickstart fit with the default loggers and wandb offline: its run folder."""
    import wandb

    folder = tmp_path_factory.mktemp("offline")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("WANDB_MODE", "offline")
        patch.setenv("WANDB_DIR", str(folder))
        patch.setenv("WANDB_CONSOLE", "off")
        patch.chdir(folder)
        run = folder / "runs" / "tiny"
        main(["fit", "--config", QUICKSTART, "--config", str(tiny_recipe(folder, max_steps=6)), "--seed_everything=7",
              "--trainer.logger=null", "--trainer.enable_progress_bar=false", f"--trainer.default_root_dir={run}"])
    assert wandb.run is None  # the CLI finished its wandb run
    return run


def test_wandb_run_config_holds_the_whole_run_config(offline_run):
    config = offline_config(offline_run)
    assert config["seed_everything"] == 7
    assert config["data"]["init_args"]["patch_size"] == 16 and config["data"]["init_args"]["sigma"] == 25.0
    assert config["trainer"]["max_steps"] == 6 and config["trainer"]["val_check_interval"] == 3
    assert config["model"]["init_args"]["student"]["init_args"]["features"] == 6


def test_local_view_reads_the_csv_log_and_results(offline_run, capsys):
    """Without TensorBoard: the CSV log holds every step's metrics, and leaderboard and plot read the run."""
    (metrics,) = offline_run.glob("csv/version_*/metrics.csv")
    rows = list(csv.DictReader(metrics.open()))
    assert [int(r["step"]) for r in rows if r.get("train/loss")] == list(range(6))  # log_every_n_steps: 1
    assert [int(r["step"]) for r in rows if r.get("val/psnr")] == [2, 5]  # validation after steps 3 and 6
    capsys.readouterr()
    main(["leaderboard", str(offline_run.parent), "--format", "csv"])
    (row,) = csv.DictReader(capsys.readouterr().out.splitlines())
    student = json.loads((offline_run / "results.json").read_text())["metrics"]["student"]
    assert float(row["psnr_mean"]) == pytest.approx(student["psnr"], abs=1e-5) and row["seeds"] == "1"
    out = offline_run.parent / "plots"
    main(["plot", str(offline_run.parent), "--output", str(out), "--no-progress"])
    assert any(p.name.startswith("convergence_") for p in out.iterdir())


@pytest.mark.parametrize("env, expected", [({}, "offline"), (AGENT, None)])
def test_entry_point_keeps_wandb_offline_except_under_an_agent(monkeypatch, capsys, env, expected):
    """`spikedistill` sets WANDB_MODE=offline when it is unset, so that a recipe's own WandbLogger stays offline too;
    not under `wandb agent`, whose runs report to the sweep."""
    from distill.entry import main as entry_main

    monkeypatch.delenv("WANDB_MODE")
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    entry_main(["--help"])
    assert os.environ.get("WANDB_MODE") == expected
