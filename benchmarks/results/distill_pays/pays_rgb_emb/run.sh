#!/bin/bash
# Issue 14, the RGB system at the 2000-step budget from the embedded-photos RGB teacher
# (teachers/pretrained/dncnn_nested_qcfs_rgb_s25_emb.pt: 31.17 dB, nested network 28.06), paired seeds (init N, data N),
# one thread per run, two runs at a time. plain/ and strict+twin_hint/ of pays_rgb (no teacher, same seeds and data
# order) are copied into the runs folder first; `run.sh plain 0` re-runs plain seed 0 on this CPU for a same-CPU clock
# (into a separate folder). Resumes; finished runs are skipped.  usage: run.sh ARM SEED...
W=${W:-/work/wt-r}; T=$W/teachers/pretrained/dncnn_nested_qcfs_rgb_s25_emb.pt
A=$1; shift; D=/work/runs/pays_rgb_emb; [ "$A" = plain ] && D=/work/runs/pays_rgb_emb_amd_plain
cd $W; export PYTHONPATH=$W OMP_NUM_THREADS=1 WANDB_MODE=disabled
nice /work/main/.venv/bin/python benchmarks/distill_pays.py --system rgb --runs-dir $D \
  --train /work/shared/data/photos-train --eval /work/shared/data/photos-eval --data-seed seed \
  --nested-teacher $T --seeds "$@" --arms $A \
  --steps 2000 --plain-steps 2700 --twin-steps 1000 --strict-twin-steps 1700 --untrained-twin-steps 2600 \
  --val-every 250 --jobs 2
