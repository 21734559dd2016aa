#!/usr/bin/env bash
# distilled_ffdnet-clean, seeds 0-2, into runs/pays_gray beside the earlier arms (worktree /work/wt_pays)
cd /work/wt_pays
export PYTHONPATH=/work/wt_pays WANDB_MODE=disabled
nice /work/main/.venv/bin/python benchmarks/distill_pays.py --runs-dir /work/main/runs/pays_gray --seeds 0 1 2 \
  --arms distilled_ffdnet-clean --jobs 2
