#!/bin/bash
# Issue 14, the RGB system with burst neurons (multi-threshold IF, levels [0.5, 0.5]: up to 2 spikes a step, an
# 8-level QCFS twin at T = 4) in every arm, at the 2000-step budget of pays_rgb_emb, paired seeds (init N, data N),
# the embedded-photos RGB teacher dncnn_nested_qcfs_rgb_s25_emb.pt (trained with 4 levels; weight selection keeps its
# clips). The recorded runs ran at e92fc4f, before --warm-student: ../pays_burst/rescore.py re-scored their
# warm-started students at the copy's 0.25 start (README). One thread a run, two at a time. Resumes; finished runs are skipped.  usage: run.sh SEED... [-- ARM...]
W=${W:-/work/wt-b}; T=$W/teachers/pretrained/dncnn_nested_qcfs_rgb_s25_emb.pt
SEEDS=(); while [ $# -gt 0 ] && [ "$1" != -- ]; do SEEDS+=("$1"); shift; done; shift
ARMS=("${@:-select_nested+lowlr plain strict+twin_hint}")
cd $W; export PYTHONPATH=$W OMP_NUM_THREADS=1 WANDB_MODE=disabled
nice /work/main/.venv/bin/python benchmarks/distill_pays.py --system rgb --runs-dir /work/runs/pays_burst_rgb \
  --train /work/shared/data/photos-train --eval /work/shared/data/photos-eval --data-seed seed \
  --nested-teacher $T --seeds "${SEEDS[@]}" --arms ${ARMS[@]} \
  --student neuron=multi_threshold 'neuron_levels=[0.5,0.5]' --warm-student init_membrane=0.25 \
  --steps 2000 --plain-steps 2700 --twin-steps 1000 --strict-twin-steps 1700 --untrained-twin-steps 2600 \
  --val-every 250 --jobs 2
