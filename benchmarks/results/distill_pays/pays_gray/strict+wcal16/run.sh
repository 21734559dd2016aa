#!/usr/bin/env bash
# weight calibration on the recipes' 16 calibration patches, seeds 0-1, two at a time, from a worktree at the commit
cd /work/wt-w
export PYTHONPATH=/work/wt-w OMP_NUM_THREADS=1
nice /work/main/.venv/bin/python benchmarks/distill_pays.py --runs-dir /work/runs/pays_gray --seeds 0 1 --arms strict+wcal16 --jobs 2
