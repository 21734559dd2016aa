#!/bin/bash
# Issue 14 at the 2000-step budget: the selected QCFS-nested arm and its low-LR strict control, paired seeds (init N, data N).
# usage: low.sh ARM SEED...
cd /work/wt-low
ARM=$1; shift
for s in "$@"; do
PYTHONPATH=/work/wt-low nice /work/main/.venv/bin/python benchmarks/distill_pays.py --runs-dir /work/runs/pays_long \
  --train /work/shared/data/photos-train --eval /work/shared/data/photos-eval --data-seed seed \
  --nested-teacher /work/wt-low/teachers/pretrained/dncnn_nested_qcfs_gray_s25.pt --seeds $s --arms $ARM \
  --steps 2000 --plain-steps 2700 --twin-steps 1000 --strict-twin-steps 1700 --untrained-twin-steps 2600 --val-every 250 --jobs 1
done
