#!/bin/bash
# Issue 14/15: train the RGB QCFS-nested teacher (one thread, resumes from last.ckpt), export it, score it.
cd /work/wt-rgb
export PYTHONPATH=/work/wt-rgb OMP_NUM_THREADS=1 WANDB_MODE=disabled
R=/work/runs/dncnn_nested_qcfs_rgb_s25; T=/work/runs/nested_qcfs/dncnn_nested_qcfs_rgb_s25.pt
[ -f $R/results.json ] || nice /work/main/.venv/bin/spikedistill fit --config recipes/teachers/dncnn_nested_qcfs_rgb_s25.yaml \
  --data.init_args.train=[/work/shared/data/photos-train] --data.init_args.val=[/work/shared/data/photos-eval] \
  --trainer.default_root_dir=$R --ckpt_path=last
[ -f $T ] || /work/main/.venv/bin/spikedistill export $R/checkpoints/last.ckpt $T --check-sigma 25
