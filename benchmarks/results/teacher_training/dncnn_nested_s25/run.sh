#!/bin/bash
# Probe of the nested teacher (one thread, beside the long distill_pays run); resumes from last.ckpt.
cd /work/wt-nested
CK=""; [ -f /work/runs/nested/dncnn_nested_s25/checkpoints/last.ckpt ] && CK="--ckpt_path=/work/runs/nested/dncnn_nested_s25/checkpoints/last.ckpt"
OMP_NUM_THREADS=1 PYTHONPATH=/work/wt-nested nice /work/main/.venv/bin/spikedistill fit --config recipes/teachers/dncnn_nested_s25.yaml \
  --data.init_args.train=[/work/shared/data/photos-train] --data.init_args.val=[/work/shared/data/photos-eval] \
  --trainer.max_steps=4000 --model.init_args.scheduler.init_args.T_max=4000 --trainer.max_time=00:00:45:00 \
  --trainer.val_check_interval=1000 --trainer.enable_progress_bar=false \
  --trainer.default_root_dir=/work/runs/nested/dncnn_nested_s25 --wandb_mode=disabled $CK
