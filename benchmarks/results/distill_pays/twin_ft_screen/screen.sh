#!/bin/bash
# Screen: does training the teacher-selected twin further (low lr, cosine) lift it before the copy? gray quickstart.
# usage: screen.sh NAME TWIN_STEPS LR [extra overrides...]
N=$1; K=$2; LR=$3; shift 3; D=/work/runs/twinft/$N; mkdir -p $D
cd /work/wt-r; export PYTHONPATH=/work/wt-r OMP_NUM_THREADS=1 WANDB_MODE=disabled
[ -f $D/results.json ] || nice /work/main/.venv/bin/spikedistill fit --config recipes/quickstart.yaml \
  --data.init_args.train=[/work/shared/data/photos-train] \
  --model.init_args.warm_start.twin_steps=$K --model.init_args.warm_start.lr=$LR --model.init_args.warm_start.eval_images=7 \
  --trainer.max_steps=1 --trainer.val_check_interval=1 --trainer.enable_progress_bar=false --trainer.default_root_dir=$D "$@" > $D/fit.log 2>&1
python3 -c "import json; r=json.load(open('$D/results.json')); print('$N', {k: v for k, v in r.get('warm_start', r).items() if 'psnr' in k or 'seconds' in k} if isinstance(r.get('warm_start'), dict) else list(r))"
