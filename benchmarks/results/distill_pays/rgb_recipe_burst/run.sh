#!/bin/bash
# Issue 14: recipes/distill/spiden_rgb.yaml with burst neurons (its default since 2026-12-04), and its two controls
# (spiden_rgb_alone.yaml strict, spiden_rgb_scratch.yaml plain, both burst), at the recipes' own 400-step budget,
# exactly as a user runs them (embedded photos), seeds 0-2; each student is then scored with the anchor protocol on the
# 6 RGB photos-eval images. W is a worktree pinned to the commit. Resumes (--ckpt_path=last), skips finished runs.
# usage: run.sh [SEED...]
W=${W:-/work/wt-c}; PY=/work/main/.venv/bin; R=/work/runs/rgb_recipe_burst
cd $W; export PYTHONPATH=$W OMP_NUM_THREADS=1 WANDB_MODE=disabled
for s in ${@:-0 1 2}; do
  for arm in distilled alone scratch; do
    D=$R/$arm/s$s; mkdir -p $D; extra=(); [ $arm = distilled ] || extra=(--config recipes/distill/spiden_rgb_$arm.yaml)
    [ -f $D/results.json ] || $PY/spikedistill fit --config recipes/distill/spiden_rgb.yaml "${extra[@]}" --seed_everything=$s \
       --data.init_args.seed=$s --trainer.enable_progress_bar=false --trainer.default_root_dir=$D --ckpt_path=last > $D/fit.log 2>&1
    [ -f $D/anchor.json ] || $PY/python -c "
from pathlib import Path
from benchmarks.distill_pays import anchor_score
from distill.io import atomic_write_json
d = Path('$D'); atomic_write_json(d / 'anchor.json', anchor_score(d, Path('/work/shared/data/photos-eval'), 'rgb'))"
  done
done
