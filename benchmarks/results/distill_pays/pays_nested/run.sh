#!/bin/bash
# Issue 14 screen of the nested teacher (400 spiking steps, the pays_gray budget), 2 paired seeds, this machine.
cd /work/wt-nested2
PYTHONPATH=/work/wt-nested2 nice /work/main/.venv/bin/python benchmarks/distill_pays.py --runs-dir /work/runs/pays_nested \
  --train /work/shared/data/photos-train --eval /work/shared/data/photos-eval \
  --nested-teacher /work/runs/nested/dncnn_nested_gray_s25.pt \
  --seeds 0 1 --arms distilled_nested+twin_hint strict+twin_hint strict+select_nested+twin_hint --jobs ${JOBS:-2}
