#!/bin/bash
# Issue 15, gray floor: is the distance a matter of steps? The shipped nested recipe (dncnn_nested_s25.yaml) with
# 2.5x its steps (10000, cosine over 10000) inside the same 58-minute cap, one thread beside another run; resumes.
set -e
R=/work/runs/long/dncnn_nested_s25_long; W=/work/wt-blind; PY=/work/main/.venv/bin
cd $W; export PYTHONPATH=$W OMP_NUM_THREADS=1 WANDB_MODE=disabled
[ -f $R/results.json ] || $PY/spikedistill fit --config recipes/teachers/dncnn_nested_s25.yaml \
  --data.init_args.train=[/work/shared/data/photos-train] --data.init_args.val=[/work/shared/data/photos-eval] \
  --trainer.max_steps=10000 --model.init_args.scheduler.init_args.T_max=10000 --trainer.val_check_interval=2000 \
  --trainer.enable_progress_bar=false --trainer.default_root_dir=$R --ckpt_path=last
F=$R/dncnn_nested_gray_s25_long.pt
[ -f $F ] || $PY/spikedistill export $R/checkpoints/last.ckpt $F --check-sigma 25
$PY/python benchmarks/score_teacher.py $F --sigmas 25 --out $R/anchor.json
