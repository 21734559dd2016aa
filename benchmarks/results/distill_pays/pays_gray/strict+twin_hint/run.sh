#!/usr/bin/env bash
# twin-hint arms, seeds 0-2, after the weight-calibration arms finish (worktree /work/wt_th)
while pgrep -f pays_wcal.sh > /dev/null; do sleep 20; done
cd /work/wt_th
export PYTHONPATH=/work/wt_th WANDB_MODE=disabled
nice /work/main/.venv/bin/python benchmarks/distill_pays.py --runs-dir /work/main/runs/pays_gray --seeds 0 1 2 \
  --arms strict+twin_hint distilled_ffdnet-clean+twin_hint --jobs 2
