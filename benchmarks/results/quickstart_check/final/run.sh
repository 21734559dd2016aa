#!/bin/bash
# `make quickstart` (recipes/quickstart.yaml) and its strict and plain controls, exactly as shipped, one thread each.
cd /work/wt-qs2
export PYTHONPATH=/work/wt-qs2 OMP_NUM_THREADS=1 WANDB_MODE=disabled
SD=/work/main/.venv/bin/spikedistill
nice $SD fit --config recipes/quickstart.yaml --trainer.default_root_dir=/work/runs/qs_final/distilled --trainer.enable_progress_bar=false > /work/runs/qs_final_distilled.log 2>&1
nice $SD fit --config recipes/quickstart.yaml --config recipes/quickstart_alone.yaml --trainer.default_root_dir=/work/runs/qs_final/alone --trainer.enable_progress_bar=false > /work/runs/qs_final_alone.log 2>&1
nice $SD fit --config recipes/quickstart.yaml --config recipes/quickstart_scratch.yaml --trainer.max_steps=440 --model.init_args.scheduler.init_args.T_max=440 --trainer.default_root_dir=/work/runs/qs_final/scratch --trainer.enable_progress_bar=false > /work/runs/qs_final_scratch.log 2>&1
