"""Atomic writes: results.json, leaderboard files and checkpoints are written to a temporary name and
renamed, so a failure or a kill in the middle of a write never leaves a truncated file that a later
command reads as valid. The CLI plugs `AtomicCheckpointIO` into every trainer it builds."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest
import torch

from cli_helpers import QUICKSTART, REPO, cli_env, tiny_recipe
from distill import io as dio
from distill.checkpointing import AtomicCheckpointIO
from distill.cli import SpikeDistillCLI
from distill.leaderboard import main as leaderboard_main
from distill.results import write_results


def hidden(folder):
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


class Boom(RuntimeError):
    pass


def half_then_fail(real):
    """A writer that writes half of what it was asked to, then fails (a full disk, a crash)."""
    def write(path, data, *args, **kwargs):
        with open(path, "w" if isinstance(data, str) else "wb") as fh:
            fh.write(data[: len(data) // 2])
        raise Boom("disk full")
    return write


def test_results_json_failure_keeps_the_old_file(tmp_path, monkeypatch):
    target = tmp_path / "results.json"
    write_results(target, {"run": {"name": "old"}, "metrics": {"student": {"psnr": 30.0}}})
    before = target.read_text()
    monkeypatch.setattr(dio.Path, "write_text", half_then_fail(dio.Path.write_text))
    with pytest.raises(Boom):
        write_results(target, {"run": {"name": "new"}, "metrics": {"student": {"psnr": float("nan")}}})
    assert target.read_text() == before and json.loads(before)["run"]["name"] == "old"
    assert hidden(tmp_path) == []  # the partial temporary file was removed


def test_leaderboard_output_failure_keeps_the_old_file(tmp_path, monkeypatch, capsys):
    from test_leaderboard import make_results

    make_results(tmp_path / "runs" / "a")
    out = tmp_path / "board.md"
    leaderboard_main([str(tmp_path / "runs"), "--output", str(out), "--no-progress"])
    table = out.read_text()
    assert "SpikingDnCNN" in table
    monkeypatch.setattr(dio.Path, "write_text", half_then_fail(dio.Path.write_text))
    with pytest.raises(Boom):
        leaderboard_main([str(tmp_path / "runs"), "--output", str(out), "--no-progress", "--format", "csv"])
    assert out.read_text() == table and hidden(tmp_path) == []


def test_checkpoint_io_failure_keeps_the_old_checkpoint(tmp_path, monkeypatch):
    io = AtomicCheckpointIO()
    path = tmp_path / "checkpoints" / "last.ckpt"
    io.save_checkpoint({"state_dict": {"w": torch.ones(3)}, "global_step": 6}, path)
    real_save = torch.save

    def interrupted(obj, f, *args, **kwargs):
        real_save(obj, f, *args, **kwargs)
        with open(f, "r+b") as fh:  # the file is there but cut short, as if the process died mid-write
            fh.truncate(os.path.getsize(f) // 2)
        raise Boom("killed")

    monkeypatch.setattr(torch, "save", interrupted)
    with pytest.raises(Boom):
        io.save_checkpoint({"state_dict": {"w": torch.zeros(3)}, "global_step": 9}, path)
    monkeypatch.setattr(torch, "save", real_save)
    loaded = torch.load(path, weights_only=False)
    assert loaded["global_step"] == 6 and torch.equal(loaded["state_dict"]["w"], torch.ones(3))
    assert hidden(path.parent) == []


def test_sigkill_during_checkpoint_writes_never_leaves_a_truncated_file(tmp_path):
    """A real process rewriting a 24 MB checkpoint in a loop, killed at an arbitrary moment."""
    target = tmp_path / "last.ckpt"
    child = textwrap.dedent(f"""
        import torch
        from distill.io import atomic_path
        big = torch.arange(6_000_000, dtype=torch.float32)
        i = 0
        while True:
            with atomic_path({str(target)!r}) as tmp:
                torch.save({{"i": i, "x": big + i}}, tmp)
            i += 1
    """)
    proc = subprocess.Popen([sys.executable, "-c", child], cwd=REPO, env=cli_env())
    try:
        deadline = time.monotonic() + 120
        while not target.exists() and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.05)
        assert target.exists(), "the writer never produced a checkpoint"
        time.sleep(0.7)  # a few more rewrites; most of the loop is spent writing, so the kill lands mid-write
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    loaded = torch.load(target, weights_only=True)  # complete and readable
    assert torch.equal(loaded["x"], torch.arange(6_000_000, dtype=torch.float32) + loaded["i"])
    # a write cut short leaves only a hidden temporary file, which `--ckpt_path last` does not match
    assert all(name.startswith(".last.ckpt.") and name.endswith(".tmp") for name in hidden(tmp_path))
    assert [p.name for p in tmp_path.glob("last*.ckpt")] == ["last.ckpt"]


def test_cli_trainers_write_checkpoints_atomically(tmp_path):
    recipe = tiny_recipe(tmp_path)
    base = ["--config", QUICKSTART, "--config", str(recipe), f"--trainer.default_root_dir={tmp_path / 'r'}"]
    cli = SpikeDistillCLI(args=base, run=False)
    assert isinstance(cli.trainer.strategy.checkpoint_io, AtomicCheckpointIO)
    # also when the recipe sets other plugins, e.g. SLURM auto-requeue
    slurm = "--trainer.plugins=lightning.pytorch.plugins.environments.SLURMEnvironment"
    cli = SpikeDistillCLI(args=[*base, slurm, "--trainer.plugins.auto_requeue=true"], run=False)
    assert isinstance(cli.trainer.strategy.checkpoint_io, AtomicCheckpointIO)
    slurm_plugin = cli.config_init["trainer"]["plugins"]
    assert type(slurm_plugin).__name__ == "SLURMEnvironment" and slurm_plugin.auto_requeue
    # and the default last.ckpt lands where `--ckpt_path last` looks
    latest = [c for c in cli.trainer.checkpoint_callbacks if c.monitor is None]
    assert len(latest) == 1 and latest[0].filename == "last"
    assert str(latest[0].dirpath) == str(tmp_path / "r" / "checkpoints")
