#!/usr/bin/env bash
# weight-calibration arms, seeds 0-2, into runs/pays_gray beside the earlier arms (worktree /work/wt_wc)
cd /work/wt_wc
export PYTHONPATH=/work/wt_wc WANDB_MODE=disabled
nice /work/main/.venv/bin/python benchmarks/distill_pays.py --runs-dir /work/main/runs/pays_gray --seeds 0 1 2 \
  --arms strict+wcal distilled_ffdnet-clean+wcal distilled_ffdnet+wcal --jobs 2
