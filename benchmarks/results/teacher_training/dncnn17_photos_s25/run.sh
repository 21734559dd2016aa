cd /work/wt-t17
CK=""; [ -f /work/runs/dncnn17_photos_s25/checkpoints/last.ckpt ] && CK="--ckpt_path=/work/runs/dncnn17_photos_s25/checkpoints/last.ckpt"
PYTHONPATH=/work/wt-t17 nice /work/main/.venv/bin/spikedistill fit --config recipes/teachers/dncnn17_photos_s25.yaml \
  --data.init_args.train=[/work/shared/data/photos-train] --data.init_args.val=[/work/shared/data/photos-eval] \
  --trainer.default_root_dir=/work/runs/dncnn17_photos_s25 --wandb_mode=disabled $CK
