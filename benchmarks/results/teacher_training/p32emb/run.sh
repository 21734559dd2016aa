#!/bin/bash
# Issues 14/15: the QCFS-nested gray teacher with both helping levers (32x32 crops, gradient clip 0.5) and the
# embedded scikit-image training photos beside photos-train (`skimage-samples`; teacher_levers probe p32emb),
# trained alone on both threads, cosine over STEPS. Resumes from last.ckpt; W is a worktree pinned to the commit.
# usage: run.sh STEPS
set -e
S=$1; W=${W:-/work/wt-p}; PY=/work/main/.venv/bin; Y=${Y:-dncnn_nested_qcfs_s25}  # Y, R: the RGB run sets them
R=${R:-/work/runs/p32emb/${Y}_p32emb}
cd $W; export PYTHONPATH=$W OMP_NUM_THREADS=2 WANDB_MODE=disabled
[ -f $R/results.json ] || $PY/spikedistill fit --config recipes/teachers/$Y.yaml \
  "--data.init_args.train=[/work/shared/data/photos-train,skimage-samples]" --data.init_args.val=[/work/shared/data/photos-eval] \
  --data.init_args.patch_size=32 --trainer.gradient_clip_val=0.5 \
  --trainer.max_steps=$S --model.init_args.scheduler.init_args.T_max=$S --trainer.val_check_interval=$((S/4)) \
  --trainer.enable_progress_bar=false --trainer.default_root_dir=$R --ckpt_path=last
F=$R/${Y}_p32emb.pt
[ -f $F ] || $PY/spikedistill export $R/checkpoints/last.ckpt $F --check-sigma 25
$PY/python benchmarks/score_teacher.py $F --sigmas 25 --out $R/anchor.json
