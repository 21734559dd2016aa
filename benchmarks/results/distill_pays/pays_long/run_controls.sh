#!/bin/bash
# Issue 14: the 2000-step controls at paired seeds 1 and 2 (seed N = init N and data N; pays_long's seed 0 used data 0).
cd /work/wt-ctl
for s in 1 2; do
PYTHONPATH=/work/wt-ctl nice /work/main/.venv/bin/python benchmarks/distill_pays.py --runs-dir /work/runs/pays_long \
  --train /work/shared/data/photos-train --eval /work/shared/data/photos-eval --data-seed seed \
  --seeds $s --arms strict+twin_hint plain \
  --steps 2000 --plain-steps 2700 --twin-steps 1000 --strict-twin-steps 1700 --val-every 250 --jobs 1
done
