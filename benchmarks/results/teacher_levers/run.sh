#!/bin/bash
# Issue 15: teacher-training levers (the shipped DnCNN 10x32 recipe, photos-train, 1500 baseline steps), one run at
# a time on one thread; finished levers are skipped, unfinished ones resume.  run.sh LEVER [LEVER ...]
cd /work/wt-levers
PYTHONPATH=/work/wt-levers /work/main/.venv/bin/python benchmarks/teacher_levers.py --runs-dir /work/runs/levers \
  --steps 1500 --val-every 250 --train /work/shared/data/photos-train --eval /work/shared/data/photos-eval \
  --jobs 1 --threads 1 --levers "$@"
