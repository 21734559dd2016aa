#!/bin/bash
# Issue 14 at the 2000-step budget: select_nested+lowlr from the QCFS-nested gray teacher trained with the embedded
# photos beside photos-train (benchmarks/results/teacher_training/p32emb/), paired seeds (init N, data N; the
# students train on photos-train only, as every arm); plus plain at seed 0 on this machine, for a same-CPU clock.
# plain / strict+twin_hint seeds 0-2 of pays_long are copied into the runs folder (same seeds, data order, no teacher).
# Resumes; finished runs are skipped.  usage: run.sh ARM SEED...
W=/work/wt-p; T=/work/runs/p32emb/dncnn_nested_qcfs_s25_p32emb/dncnn_nested_qcfs_s25_p32emb.pt
A=$1; shift; D=/work/runs/pays_p32emb; [ "$A" = plain ] && D=/work/runs/pays_amd_plain  # the same-CPU plain run apart from the copied controls
cd $W; export PYTHONPATH=$W OMP_NUM_THREADS=1 WANDB_MODE=disabled
nice /work/main/.venv/bin/python benchmarks/distill_pays.py --runs-dir $D \
  --train /work/shared/data/photos-train --eval /work/shared/data/photos-eval --data-seed seed \
  --nested-teacher $T --seeds "$@" --arms $A \
  --steps 2000 --plain-steps 2700 --twin-steps 1000 --strict-twin-steps 1700 --untrained-twin-steps 2600 \
  --val-every 250 --jobs 2
