#!/bin/bash
# The quickstart budget (embedded photos; twin 400 + spiking 300 steps): selection from the QCFS-nested teacher
# against the strict control with the same twin hint. One thread each, one after the other.
cd /work/wt-qs
export PYTHONPATH=/work/wt-qs OMP_NUM_THREADS=1 WANDB_MODE=disabled
W=--model.init_args.warm_start
SD=/work/main/.venv/bin/spikedistill
nice $SD fit --config recipes/quickstart.yaml \
  '--model.init_args.teacher={class_path: teachers.dncnn.DnCNN, init_args: {in_channels: 1, features: 48, depth: 8, bn: false, nested_features: 24, nested_levels: 4, checkpoint: teachers/pretrained/dncnn_nested_qcfs_gray_s25.pt}}' \
  --model.init_args.hints=[] $W.twin_hints=false $W.select_from_teacher=true $W.teacher_output_weight=0.0 $W.twin_hint_weight=1.0 \
  --trainer.default_root_dir=/work/runs/qs/select_qcfs --trainer.enable_progress_bar=false > /work/runs/qs_select.log 2>&1
nice $SD fit --config recipes/quickstart.yaml --config recipes/quickstart_alone.yaml $W.twin_hint_weight=1.0 \
  --trainer.default_root_dir=/work/runs/qs/alone_twin_hint --trainer.enable_progress_bar=false > /work/runs/qs_alone.log 2>&1
