#!/bin/bash
# Issues 14/15: the QCFS-nested teachers (gray and RGB recipes) with the two levers that helped
# (benchmarks/results/teacher_levers/): 32x32 crops (7000 steps, about the 4000-step recipe's minutes here) and
# gradient clipping at 0.5, cosine over 7000 steps, one thread each, resumes from last.ckpt.
# usage: run.sh gray|rgb
set -e
C=$1; W=/work/wt-t; PY=/work/main/.venv/bin
case $C in gray) Y=dncnn_nested_qcfs_s25;; rgb) Y=dncnn_nested_qcfs_rgb_s25;; *) echo "usage: run.sh gray|rgb"; exit 2;; esac
R=/work/runs/p32/${Y}_p32
cd $W; export PYTHONPATH=$W OMP_NUM_THREADS=1 WANDB_MODE=disabled
[ -f $R/results.json ] || $PY/spikedistill fit --config recipes/teachers/$Y.yaml \
  --data.init_args.train=[/work/shared/data/photos-train] --data.init_args.val=[/work/shared/data/photos-eval] \
  --data.init_args.patch_size=32 --trainer.gradient_clip_val=0.5 \
  --trainer.max_steps=7000 --model.init_args.scheduler.init_args.T_max=7000 --trainer.val_check_interval=1750 \
  --trainer.enable_progress_bar=false --trainer.default_root_dir=$R --ckpt_path=last
F=$R/${Y}_p32.pt
[ -f $F ] || $PY/spikedistill export $R/checkpoints/last.ckpt $F --check-sigma 25
$PY/python benchmarks/score_teacher.py $F --sigmas 25 --out $R/anchor.json
