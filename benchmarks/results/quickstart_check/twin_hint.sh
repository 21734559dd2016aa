#!/usr/bin/env bash
# The quickstart budget (embedded photos, 400 twin + 300 spiking steps), distilled and strict, each without and with
# the twin hint, one after the other on one core, from a worktree pinned to the commit; results.json copied here.
set -euo pipefail
WT=${WT:-/work/wt-pays}
RUNS=${RUNS:-/work/runs/quickstart_check}
OUT=$(cd "$(dirname "$0")" && pwd)
cd "$WT"
export PYTHONPATH=$WT WANDB_MODE=disabled OMP_NUM_THREADS=1
for hint in 0.0 1.0; do
  for arm in distilled alone; do
    extra=()
    [ "$arm" = alone ] && extra=(--config recipes/quickstart_alone.yaml)
    name=${arm}_twin_hint$hint
    dir=$RUNS/$name
    if [ ! -f "$dir/results.json" ]; then
      nice /work/main/.venv/bin/spikedistill fit --config recipes/quickstart.yaml "${extra[@]}" \
        --model.init_args.warm_start.twin_hint_weight=$hint --trainer.default_root_dir="$dir" \
        --trainer.enable_progress_bar=false --ckpt_path=last > "$RUNS/$name.log" 2>&1
    fi
    cp "$dir/results.json" "$OUT/$name.json"
  done
done
