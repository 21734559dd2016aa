#!/bin/bash
# The quickstart budget (embedded photos): the QCFS-nested teacher's network taken whole (twin untrained; its 400 twin
# steps' time as 140 extra spiking steps), against the strict control with the same twin hint; both fine-tuned with
# the one-cycle low-peak schedule. One thread each, one after the other.
cd /work/wt-low
export PYTHONPATH=/work/wt-low OMP_NUM_THREADS=1 WANDB_MODE=disabled
W=--model.init_args.warm_start
SD=/work/main/.venv/bin/spikedistill
oc() { echo "--model.init_args.scheduler={class_path: torch.optim.lr_scheduler.OneCycleLR, init_args: {max_lr: 3.0e-4, total_steps: $(($1 + 1)), pct_start: 0.05, anneal_strategy: cos, div_factor: 25.0, final_div_factor: 4.0, cycle_momentum: false}}"; }
nice $SD fit --config recipes/quickstart.yaml \
  '--model.init_args.teacher={class_path: teachers.dncnn.DnCNN, init_args: {in_channels: 1, features: 48, depth: 8, bn: false, nested_features: 24, nested_levels: 4, checkpoint: teachers/pretrained/dncnn_nested_qcfs_gray_s25.pt}}' \
  --model.init_args.hints=[] $W.twin_hints=false $W.select_from_teacher=true $W.teacher_output_weight=0.0 $W.twin_hint_weight=1.0 \
  $W.twin_steps=0 --trainer.max_steps=440 "$(oc 440)" \
  --trainer.default_root_dir=/work/runs/qs/select_qcfs_lowlr --trainer.enable_progress_bar=false > /work/runs/qs_select2.log 2>&1
nice $SD fit --config recipes/quickstart.yaml --config recipes/quickstart_alone.yaml $W.twin_hint_weight=1.0 "$(oc 300)" \
  --trainer.default_root_dir=/work/runs/qs/alone_twin_hint_lowlr --trainer.enable_progress_bar=false > /work/runs/qs_alone2.log 2>&1
