#!/bin/bash
# `make quickstart` (recipes/quickstart.yaml) with the teacher trained with the embedded photos beside photos-train
# (teachers/pretrained/dncnn_nested_qcfs_gray_s25_emb.pt), one thread; its strict and plain controls use no teacher,
# so final/ holds theirs.
W=${W:-/work/wt-q}; cd $W
export PYTHONPATH=$W OMP_NUM_THREADS=1 WANDB_MODE=disabled
nice /work/main/.venv/bin/spikedistill fit --config recipes/quickstart.yaml \
  --model.init_args.teacher.init_args.checkpoint=teachers/pretrained/dncnn_nested_qcfs_gray_s25_emb.pt \
  --trainer.default_root_dir=/work/runs/qs_emb/distilled --trainer.enable_progress_bar=false > /work/runs/qs_emb_distilled.log 2>&1
