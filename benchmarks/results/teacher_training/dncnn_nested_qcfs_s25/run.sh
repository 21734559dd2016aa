#!/bin/bash
# Issue 14: the nested teacher with QCFS T=4 nested activations (recipes/teachers/dncnn_nested_qcfs_s25.yaml), one thread.
cd /work/wt-qcfs
export PYTHONPATH=/work/wt-qcfs OMP_NUM_THREADS=1 WANDB_MODE=disabled
nice /work/main/.venv/bin/spikedistill fit --config recipes/teachers/dncnn_nested_qcfs_s25.yaml \
  --data.init_args.train=[/work/shared/data/photos-train] --data.init_args.val=[/work/shared/data/photos-eval] \
  --trainer.default_root_dir=/work/runs/dncnn_nested_qcfs_s25 --trainer.enable_progress_bar=false --ckpt_path=last
