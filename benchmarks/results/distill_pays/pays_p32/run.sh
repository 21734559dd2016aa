#!/bin/bash
# Issue 14 at the 2000-step budget: select_nested+lowlr from the 32-px QCFS-nested gray teacher
# (benchmarks/results/teacher_training/p32/), paired seeds (init N, data N); plain and strict+twin_hint are the
# pays_long runs (copied into the runs folder, same seeds and data order). Resumes; finished runs are skipped.
# usage: run.sh SEED...
W=/work/wt-t; T=/work/runs/p32/dncnn_nested_qcfs_s25_p32/dncnn_nested_qcfs_s25_p32.pt
cd $W; export PYTHONPATH=$W OMP_NUM_THREADS=1 WANDB_MODE=disabled
nice /work/main/.venv/bin/python benchmarks/distill_pays.py --runs-dir /work/runs/pays_p32 \
  --train /work/shared/data/photos-train --eval /work/shared/data/photos-eval --data-seed seed \
  --nested-teacher $T --seeds "$@" --arms select_nested+lowlr \
  --steps 2000 --plain-steps 2700 --twin-steps 1000 --strict-twin-steps 1700 --untrained-twin-steps 2600 \
  --val-every 250 --jobs 2
