#!/usr/bin/env bash
# Issue 17: train the shipped ESDNet distillation recipe with the paper's analog shortcut and with
# spiking_shortcut: true (400 steps each, seed 0, one run at a time), then compare trained energy and PSNR.
# Run from a worktree pinned to the commit; results.json of each run is copied here.
set -euo pipefail
WT=${WT:-/work/wt-pays}
RUNS=${RUNS:-/work/runs/esdnet_shortcut}
OUT=$(cd "$(dirname "$0")" && pwd)
cd "$WT"
export PYTHONPATH=$WT WANDB_MODE=disabled OMP_NUM_THREADS=1
for variant in paper spiking; do
  extra=()
  [ "$variant" = spiking ] && extra=(--model.init_args.student.init_args.spiking_shortcut=true)
  dir=$RUNS/$variant
  if [ ! -f "$dir/results.json" ]; then
    nice /work/main/.venv/bin/spikedistill fit --config recipes/distill/esdnet.yaml "${extra[@]}" \
      --trainer.default_root_dir="$dir" --trainer.enable_progress_bar=false --ckpt_path=last > "$RUNS/$variant.log" 2>&1
  fi
  mkdir -p "$OUT/$variant" && cp "$dir/results.json" "$OUT/$variant/"
done
