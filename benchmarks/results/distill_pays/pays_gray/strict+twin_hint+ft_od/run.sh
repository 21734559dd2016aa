#!/usr/bin/env bash
# fine-tune output-distillation screen (arms strict+twin_hint+ft_od and +ft_od3), seed 0, from a worktree at 3a3ba33
cd /work/wt-pays
export PYTHONPATH=/work/wt-pays OMP_NUM_THREADS=1
nice /work/main/.venv/bin/python benchmarks/distill_pays.py --runs-dir /work/runs/pays_gray --seeds 0 \
  --arms strict+twin_hint+ft_od strict+twin_hint+ft_od3 --jobs 2
