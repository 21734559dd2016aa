#!/bin/bash
# Issue 14 confirmation at >= 2000 spiking steps, 3 paired seeds (worktree pinned at the commit that added the arm).
cd /work/wt-long
PYTHONPATH=/work/wt-long nice /work/main/.venv/bin/python benchmarks/distill_pays.py --runs-dir /work/runs/pays_long \
  --train /work/shared/data/photos-train --eval /work/shared/data/photos-eval \
  --seeds 0 --arms strict+twin_hint distilled_ffdnet+twin_hint plain \
  --steps 2000 --plain-steps 2700 --twin-steps 1000 --strict-twin-steps 1700 --val-every 250 --jobs 1
