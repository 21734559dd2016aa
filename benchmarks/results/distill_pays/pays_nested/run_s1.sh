#!/bin/bash
# strict+twin_hint seed 1 on this machine (does it reproduce pays_gray's 27.66 dB as seed 0 reproduced 27.89?)
cd /work/wt-nested2
PYTHONPATH=/work/wt-nested2 nice /work/main/.venv/bin/python benchmarks/distill_pays.py --runs-dir /work/runs/pays_nested \
  --train /work/shared/data/photos-train --eval /work/shared/data/photos-eval \
  --nested-teacher /work/runs/nested/dncnn_nested_gray_s25.pt --seeds 1 --arms strict+twin_hint --jobs 1
