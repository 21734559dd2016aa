#!/bin/bash
# Issue 14: the gray quickstart student with burst neurons (multi-threshold IF, levels [0.5, 0.5]: up to 2 spikes a
# step, so its QCFS twin has 8 levels at T = 4) in every arm, at the 2000-step budget of pays_p32emb, paired seeds
# (init N, data N), the embedded-photos gray teacher dncnn_nested_qcfs_gray_s25_emb.pt (trained with 4 levels; weight
# selection keeps its clips). The recorded runs ran at e92fc4f, before --warm-student: rescore.py (in pays_burst/)
# re-scored their warm-started students at the copy's 0.25 start (README). Resumes; finished runs are skipped.  usage: run.sh SEED... [-- ARM...]
W=${W:-/work/wt-b}; T=$W/teachers/pretrained/dncnn_nested_qcfs_gray_s25_emb.pt
SEEDS=(); while [ $# -gt 0 ] && [ "$1" != -- ]; do SEEDS+=("$1"); shift; done; shift
ARMS=("${@:-select_nested+lowlr plain strict+twin_hint+lowlr}")
cd $W; export PYTHONPATH=$W OMP_NUM_THREADS=1 WANDB_MODE=disabled
nice /work/main/.venv/bin/python benchmarks/distill_pays.py --runs-dir /work/runs/pays_burst \
  --train /work/shared/data/photos-train --eval /work/shared/data/photos-eval --data-seed seed \
  --nested-teacher $T --seeds "${SEEDS[@]}" --arms ${ARMS[@]} \
  --student neuron=multi_threshold 'neuron_levels=[0.5,0.5]' --warm-student init_membrane=0.25 \
  --steps 2000 --plain-steps 2700 --twin-steps 1000 --strict-twin-steps 1700 --untrained-twin-steps 2600 \
  --val-every 250 --jobs 2
