#!/usr/bin/env bash
# Does a twin learn faster from the teacher's output than from the clean image? Twin-only probes (1 spiking step)
# of the quickstart student's twin on photos-train, 1700 twin steps, seed 0; twin PSNR (4 photos-eval 256² crops)
# and twin seconds from results.json. Run from a git worktree of commit 711b2a7 at /work/wt_tt, two at a time.
cd /work/wt_tt
export PYTHONPATH=/work/wt_tt OMP_NUM_THREADS=1 WANDB_MODE=disabled
S=/work/shared/data
FF=$(/work/main/.venv/bin/python -c "import sys; sys.path.insert(0,'.'); from benchmarks.distill_pays import ffdnet_teacher; print(ffdnet_teacher('ipol_gray')[0])")
W=--model.init_args.warm_start
run() { name=$1; shift
  [ -f /work/main/runs/twintarget/$name/results.json ] || nice /work/main/.venv/bin/spikedistill fit --config recipes/quickstart.yaml \
    --config recipes/quickstart_alone.yaml --trainer.max_steps=1 --trainer.enable_progress_bar=false \
    "--data.init_args.train=[$S/photos-train]" "--data.init_args.val=[$S/photos-eval]" --data.init_args.eval_size=256 \
    --trainer.default_root_dir=/work/main/runs/twintarget/$name $W.twin_steps=${STEPS:-1700} "$@" > /work/main/runs/twintarget/$name.log 2>&1
  python3 -c "import json;w=json.load(open('/work/main/runs/twintarget/$name/results.json'))['warm_start'];print('$name',w['twin_psnr'],w['calibrated_psnr'],w['twin_seconds'])"
}
case $1 in
a) run clean; run ffdnet_only "$FF" $W.teacher_output_weight=1.0 $W.clean_weight=0.0 ;;
b) run ffdnet_mix "$FF" $W.teacher_output_weight=1.0; run dncnn_only $W.teacher_output_weight=1.0 $W.clean_weight=0.0 ;;
esac
