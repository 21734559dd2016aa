#!/bin/bash
# Issue 14: the shipped RGB recipe family at its own 400-step budget, exactly as a user runs it (embedded photos),
# three seeds; each student is then scored with the anchor protocol on the 6 RGB photos-eval images.
# Resumes (--ckpt_path=last) and skips finished runs.
W=/work/wt-blind; PY=/work/main/.venv/bin; R=/work/runs/rgb_recipe
cd $W; export PYTHONPATH=$W OMP_NUM_THREADS=1 WANDB_MODE=disabled
for s in 0 1 2; do for arm in distilled alone scratch; do
  D=$R/$arm/s$s; mkdir -p $D
  case $arm in distilled) OV="";; alone) OV="--config recipes/distill/spiden_rgb_alone.yaml";; scratch) OV="--config recipes/distill/spiden_rgb_scratch.yaml";; esac
  [ -f $D/results.json ] || $PY/spikedistill fit --config recipes/distill/spiden_rgb.yaml $OV --seed_everything=$s \
     --data.init_args.seed=$s --trainer.enable_progress_bar=false --trainer.default_root_dir=$D --ckpt_path=last > $D/fit.log 2>&1
  [ -f $D/anchor.json ] || $PY/python -c "
import json, sys; from pathlib import Path
from benchmarks.distill_pays import anchor_score
from distill.io import atomic_write_json
d = Path('$D'); atomic_write_json(d / 'anchor.json', anchor_score(d, Path('/work/shared/data/photos-eval'), 'rgb'))"
done; done
