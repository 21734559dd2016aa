#!/bin/bash
# probe: teacher_levers baseline / patch32 with the 13 embedded training photos added to photos-train
L=$1; cd /work/wt-p; export PYTHONPATH=/work/wt-p OMP_NUM_THREADS=1 WANDB_MODE=disabled
case $L in emb) S=1500; P=48;; p32emb) S=3375; P=32;; esac
R=/work/runs/probe/$L
/work/main/.venv/bin/spikedistill fit --config recipes/teachers/dncnn_quickstart.yaml --seed_everything=0 \
 "--data.init_args.train=[/work/shared/data/photos-train,/work/runs/embedded_train]" "--data.init_args.val=[/work/shared/data/photos-eval]" \
 --data.init_args.eval_size=256 --data.init_args.patch_size=$P --data.init_args.batch_size=16 --data.init_args.patches_per_epoch=$((16*S)) \
 --model.init_args.optimizer.init_args.lr=0.001 --trainer.max_steps=$S --model.init_args.scheduler.init_args.T_max=$S \
 --trainer.val_check_interval=250 --trainer.enable_progress_bar=false --wandb_mode=disabled --trainer.default_root_dir=$R > $R.log 2>&1
