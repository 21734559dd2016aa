#!/bin/bash
# `make quickstart` (recipes/quickstart.yaml) with the 32-px QCFS-nested teacher (dncnn_nested_qcfs_gray_s25_p32.pt),
# one thread; its strict and plain controls use no teacher, so final/ holds theirs.
cd /work/wt-t
export PYTHONPATH=/work/wt-t OMP_NUM_THREADS=1 WANDB_MODE=disabled
nice /work/main/.venv/bin/spikedistill fit --config recipes/quickstart.yaml \
  --model.init_args.teacher.init_args.checkpoint=/work/runs/p32/dncnn_nested_qcfs_s25_p32/dncnn_nested_qcfs_s25_p32.pt \
  --trainer.default_root_dir=/work/runs/qs_p32/distilled --trainer.enable_progress_bar=false > /work/runs/qs_p32_distilled.log 2>&1
