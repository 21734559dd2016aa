#!/bin/bash
# Issue 14 (new session): strict+twin_hint at seed 2 (wt-ctl, the code of seeds 0-1), then resume the schedule ablation
# select_nested-lowlr at seed 0 from its last checkpoint (wt-abl, the code of its first part).
cd /work/wt-ctl
PYTHONPATH=/work/wt-ctl nice /work/main/.venv/bin/python benchmarks/distill_pays.py --runs-dir /work/runs/pays_long \
  --train /work/shared/data/photos-train --eval /work/shared/data/photos-eval --data-seed seed \
  --seeds 2 --arms strict+twin_hint \
  --steps 2000 --plain-steps 2700 --twin-steps 1000 --strict-twin-steps 1700 --val-every 250 --jobs 1
cd /work/wt-abl
PYTHONPATH=/work/wt-abl nice /work/main/.venv/bin/python benchmarks/distill_pays.py --runs-dir /work/runs/pays_long \
  --train /work/shared/data/photos-train --eval /work/shared/data/photos-eval --data-seed seed \
  --nested-teacher /work/wt-abl/teachers/pretrained/dncnn_nested_qcfs_gray_s25.pt --seeds 0 --arms select_nested-lowlr \
  --steps 2000 --plain-steps 2700 --twin-steps 1000 --strict-twin-steps 1700 --untrained-twin-steps 2600 --val-every 250 --jobs 1
