#!/bin/bash
# Issue 14: recipes/distill/spiden_rgb.yaml as shipped since it names the embedded-photos RGB teacher
# (dncnn_nested_qcfs_rgb_s25_emb.pt), at its own 400-step budget, exactly as a user runs it (embedded photos), seeds
# 0-2; each student is then scored with the anchor protocol on the 6 RGB photos-eval images. The controls use no
# teacher, so ../rgb_recipe/alone and ../rgb_recipe/scratch are theirs (same recipes, seeds, crops and noise).
# Resumes (--ckpt_path=last) and skips finished runs.
W=${W:-/work/wt-r2}; PY=/work/main/.venv/bin; R=/work/runs/rgb_recipe_emb
cd $W; export PYTHONPATH=$W OMP_NUM_THREADS=1 WANDB_MODE=disabled
for s in ${@:-0 1 2}; do
  D=$R/distilled/s$s; mkdir -p $D
  [ -f $D/results.json ] || $PY/spikedistill fit --config recipes/distill/spiden_rgb.yaml --seed_everything=$s \
     --data.init_args.seed=$s --trainer.enable_progress_bar=false --trainer.default_root_dir=$D --ckpt_path=last > $D/fit.log 2>&1
  [ -f $D/anchor.json ] || $PY/python -c "
from pathlib import Path
from benchmarks.distill_pays import anchor_score
from distill.io import atomic_write_json
d = Path('$D'); atomic_write_json(d / 'anchor.json', anchor_score(d, Path('/work/shared/data/photos-eval'), 'rgb'))"
done
