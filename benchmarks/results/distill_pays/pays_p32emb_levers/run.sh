#!/bin/bash
# Issue 14, each lever's share with the embedded-photos gray teacher (dncnn_nested_qcfs_gray_s25_emb.pt, nested 28.94):
# the shipped combination (pays_p32emb's select_nested+lowlr) minus the twin hint, and minus the low-peak one-cycle
# schedule, at the 2000-step budget, paired seeds (init N, data N), one thread per run, two at a time.
# pays_p32emb's select_nested+lowlr runs are copied into the runs folder first (the same arm, teacher and seeds).
# Resumes; finished runs are skipped.  usage: run.sh SEED...
W=${W:-/work/wt-r2}; T=$W/teachers/pretrained/dncnn_nested_qcfs_gray_s25_emb.pt
cd $W; export PYTHONPATH=$W OMP_NUM_THREADS=1 WANDB_MODE=disabled
nice /work/main/.venv/bin/python benchmarks/distill_pays.py --runs-dir /work/runs/pays_p32emb_levers \
  --train /work/shared/data/photos-train --eval /work/shared/data/photos-eval --data-seed seed \
  --nested-teacher $T --seeds "$@" --arms select_nested+lowlr-twin_hint select_nested-lowlr \
  --steps 2000 --plain-steps 2700 --twin-steps 1000 --strict-twin-steps 1700 --untrained-twin-steps 2600 \
  --val-every 250 --jobs 2
