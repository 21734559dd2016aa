#!/bin/bash
# Blind gray teacher and its sigma-specific references (issue "Teachers worth distilling from"): one thread each,
# two beside each other; resumes from last.ckpt; then exports and scores on the full photos-eval images.
#   run.sh blind | s15 | s50
set -e
N=$1; R=/work/runs/blind/$N; W=/work/wt-blind; PY=/work/main/.venv/bin
cd $W
case $N in
  blind) CFG=recipes/teachers/dncnn_nested_blind.yaml; EXTRA=""; SIG="15 25 50"; CS=25;;
  s15) CFG=recipes/teachers/dncnn_nested_s25.yaml; EXTRA="--data.init_args.sigma=15"; SIG=15; CS=15;;
  s50) CFG=recipes/teachers/dncnn_nested_s25.yaml; EXTRA="--data.init_args.sigma=50"; SIG=50; CS=50;;
esac
CK=""; [ -f $R/checkpoints/last.ckpt ] && CK="--ckpt_path=$R/checkpoints/last.ckpt"
if [ ! -f $R/results.json ]; then
OMP_NUM_THREADS=1 PYTHONPATH=$W $PY/spikedistill fit --config $CFG $EXTRA \
  --data.init_args.train=[/work/shared/data/photos-train] --data.init_args.val=[/work/shared/data/photos-eval] \
  --trainer.enable_progress_bar=false --trainer.default_root_dir=$R --wandb_mode=disabled $CK
fi
F=$R/dncnn_nested_gray_$N.pt
[ -f $F ] || OMP_NUM_THREADS=1 PYTHONPATH=$W $PY/spikedistill export $R/checkpoints/last.ckpt $F --check-sigma $CS
OMP_NUM_THREADS=1 PYTHONPATH=$W $PY/python benchmarks/score_teacher.py $F --sigmas $SIG --out $R/anchor.json
