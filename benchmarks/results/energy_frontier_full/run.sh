#!/usr/bin/env bash
# Energy frontier at the distillation budget (1700 twin + 400 spiking steps), one run at a time (worktree /work/wt_ef)
cd /work/wt_ef
export PYTHONPATH=/work/wt_ef WANDB_MODE=disabled
nice /work/main/.venv/bin/python benchmarks/energy_frontier.py --runs-dir /work/main/runs/energy_frontier --jobs 1
