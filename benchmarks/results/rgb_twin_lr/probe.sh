#!/usr/bin/env bash
# Why does the RGB twin barely learn? twin-only probes (1 spiking step), twin PSNR from results.json
# Run from a git worktree of commit 24abb93 at /work/wt15 (the RGB recipes then used the default twin lr 2e-3);
# gray_lr5e-4 was stopped before it finished, so probe.log has no line for it.
cd /work/wt15
export PYTHONPATH=/work/wt15 OMP_NUM_THREADS=1 WANDB_MODE=disabled
run() { name=$1; shift
  [ -f /work/main/runs/rgbtwin/$name/results.json ] || /work/main/.venv/bin/spikedistill fit --config recipes/distill/spiden_rgb.yaml --config recipes/distill/spiden_rgb_alone.yaml \
    --trainer.max_steps=1 --trainer.enable_progress_bar=false --trainer.default_root_dir=/work/main/runs/rgbtwin/$name "$@" > /work/main/runs/rgbtwin/$name.log 2>&1
  python3 -c "import json;w=json.load(open('/work/main/runs/rgbtwin/$name/results.json'))['warm_start'];print('$name',w['twin_psnr'],w['calibrated_psnr'],w['seconds'])"
}
run base --model.init_args.warm_start.twin_steps=1000
run lr5e-4 --model.init_args.warm_start.twin_steps=1000 --model.init_args.warm_start.lr=5e-4
run b16p40 --model.init_args.warm_start.twin_steps=1000 --data.init_args.batch_size=16 --data.init_args.patch_size=40
run gray --model.init_args.warm_start.twin_steps=1000 --data.init_args.channels=1 --model.init_args.student.init_args.in_channels=1 --model.init_args.teacher=recipes/models/pretrained/dncnn_quickstart_gray_s25.yaml
G="--data.init_args.channels=1 --model.init_args.student.init_args.in_channels=1 --model.init_args.teacher=recipes/models/pretrained/dncnn_quickstart_gray_s25.yaml"
run lr1e-3 --model.init_args.warm_start.twin_steps=1000 --model.init_args.warm_start.lr=1e-3
run gray_lr1e-3 --model.init_args.warm_start.twin_steps=1000 --model.init_args.warm_start.lr=1e-3 $G
run gray_lr5e-4 --model.init_args.warm_start.twin_steps=1000 --model.init_args.warm_start.lr=5e-4 $G
