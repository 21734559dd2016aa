#!/bin/bash
# Issue 14: plain BPTT at seed 0 again, on this machine (AMD EPYC), so the equal-wall-clock comparison has a control
# timed on the same CPU as the selected arms of pays_p32 (pays_long's plain ran on an Intel Xeon).
W=/work/wt-t; cd $W; export PYTHONPATH=$W OMP_NUM_THREADS=1 WANDB_MODE=disabled
nice /work/main/.venv/bin/python benchmarks/distill_pays.py --runs-dir /work/runs/plain_amd \
  --train /work/shared/data/photos-train --eval /work/shared/data/photos-eval --data-seed seed \
  --seeds 0 --arms plain --steps 2000 --plain-steps 2700 --val-every 250 --jobs 1
