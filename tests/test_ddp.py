"""Scale-out: a 2-process DDP fit on CPU (gloo) writes the same results.json as a single-process run.

Each rank trains on half of every batch (DDP averages the gradients, so 2 x 4 crops per step match one
process with 8 when the student has no batch norm). Evaluation metrics are synced by torchmetrics and every
image is scored exactly once; only rank 0 writes results.json, samples and energy tables.
"""
from __future__ import annotations

import json

import pytest
import torch

from cli_helpers import QUICKSTART, spikedistill, tiny_recipe, wait
from distill.cli import main


def keys(tree, prefix=""):
    """Every key path of a JSON tree (lists of dicts contribute their first item's keys)."""
    out = set()
    if isinstance(tree, dict):
        for key, value in tree.items():
            out.add(prefix + key)
            out |= keys(value, prefix + key + ".")
    elif isinstance(tree, list) and tree and isinstance(tree[0], dict):
        out |= keys(tree[0], prefix + "[].")
    return out


@pytest.mark.skipif(not torch.distributed.is_available() or not torch.distributed.is_gloo_available(),
                    reason="this torch build has no gloo backend")
@pytest.mark.slow  # a two-process `spikedistill fit` subprocess
def test_two_process_ddp_fit_matches_single_process(tmp_path, capsys):
    recipe = tiny_recipe(tmp_path)
    common = ["fit", "--config", QUICKSTART, "--config", str(recipe),
              "--model.init_args.student.init_args.norm=none", "--trainer.deterministic=true"]
    ddp_dir, single_dir = tmp_path / "ddp", tmp_path / "single"
    log = tmp_path / "ddp.log"
    ddp = spikedistill(*common, "--data.init_args.batch_size=4", "--trainer.devices=2", "--trainer.strategy=ddp",
                       "--trainer.accelerator=cpu", f"--trainer.default_root_dir={ddp_dir}", log=log)
    try:
        main([*common, "--data.init_args.batch_size=8", f"--trainer.default_root_dir={single_dir}"])
        wait(ddp, log, timeout=400)
    finally:
        if ddp.poll() is None:
            ddp.kill()
    text = log.read_text()
    assert text.count("results: ") == 1  # the table is printed by rank 0 only
    assert "deadlock" not in text.lower() and "Traceback" not in text

    single = json.loads((single_dir / "results.json").read_text())
    multi = json.loads((ddp_dir / "results.json").read_text())
    assert keys(multi) == keys(single)
    assert multi["run"]["world_size"] == 2 and single["run"]["world_size"] == 1
    assert multi["run"]["global_step"] == single["run"]["global_step"] == 15
    # the same three test images, each scored once, averaged over both ranks
    for role in ("input", "teacher"):
        for name in ("psnr", "ssim"):
            assert multi["metrics"][role][name] == pytest.approx(single["metrics"][role][name], abs=1e-6)
    # the student trained on the same crops with the same averaged gradients (up to float summation order,
    # which spikes amplify a little)
    assert multi["metrics"]["student"]["psnr"] == pytest.approx(single["metrics"]["student"]["psnr"], abs=0.1)
    assert [h["step"] for h in multi["convergence"]["history"]] == [h["step"] for h in single["convergence"]["history"]]
    assert multi["energy"]["teacher_uj"] == pytest.approx(single["energy"]["teacher_uj"], rel=1e-9)
    assert multi["energy"]["student_uj"] == pytest.approx(single["energy"]["student_uj"], rel=0.2)
    assert set(multi["firing_rates"]) == set(single["firing_rates"])
    # rank 0 alone wrote the run's files: nothing twice, nothing left half-written
    assert sorted(p.name for p in (ddp_dir / "samples").iterdir()) == sorted(
        p.name for p in (single_dir / "samples").iterdir())
    assert {p.name for p in ddp_dir.iterdir()} == {p.name for p in single_dir.iterdir()}
    assert not [p for p in ddp_dir.rglob(".*") if p.is_file()]
    assert (ddp_dir / "checkpoints" / "last.ckpt").exists()


@pytest.mark.skipif(not torch.distributed.is_available() or not torch.distributed.is_gloo_available(),
                    reason="this torch build has no gloo backend")
@pytest.mark.slow  # two `spikedistill fit` subprocesses
def test_a_faked_two_task_slurm_job_trains_once_and_only_rank_0_writes(tmp_path):
    """Two processes with the variables `srun --ntasks=2` sets (ranks 0 and 1 on one node) form one DDP group:
    Lightning's SLURM environment, not a second separate fit on rank 1, which is what happened before
    --gpus/--nodes reached the trainer."""
    import socket

    recipe = tiny_recipe(tmp_path)
    run = tmp_path / "run"
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = str(sock.getsockname()[1])
    slurm = {"SLURM_NTASKS": "2", "SLURM_NTASKS_PER_NODE": "2", "SLURM_NNODES": "1", "SLURM_NODEID": "0",
             "SLURM_JOB_ID": "4242", "SLURM_JOB_NAME": "spikedistill", "SLURM_NODELIST": "127.0.0.1",
             "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": port}
    args = ["fit", "--config", QUICKSTART, "--config", str(recipe), "--model.init_args.student.init_args.norm=none",
            "--trainer.devices=2", "--trainer.num_nodes=1", "--trainer.strategy=ddp", "--trainer.accelerator=cpu",
            "--data.init_args.batch_size=4", f"--trainer.default_root_dir={run}"]
    logs = [tmp_path / f"rank{rank}.log" for rank in (0, 1)]
    procs = [spikedistill(*args, log=logs[rank], SLURM_PROCID=str(rank), SLURM_LOCALID=str(rank), **slurm)
             for rank in (0, 1)]
    try:
        for proc, log in zip(procs, logs):
            wait(proc, log, timeout=400)
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
    rank0, rank1 = (log.read_text() for log in logs)
    assert rank0.count("results: ") == 1 and "results: " not in rank1
    results = json.loads((run / "results.json").read_text())
    assert results["run"]["world_size"] == 2 and results["run"]["global_step"] == 15
    assert not list(run.glob("*/version_1"))  # rank 1 opened no logger run of its own
