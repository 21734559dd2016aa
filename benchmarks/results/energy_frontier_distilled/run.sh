#!/bin/bash
# The distilled quickstart's energy-quality frontier (issue 17): recipes/sweeps/energy_frontier_distilled.yaml
# (recipes/quickstart.yaml, teacher dncnn_nested_qcfs_gray_s25_emb.pt; T in {1, 2, 4} x rate target {none, 0.1, 0.05} x twin hint {1, 0}),
# 800 spiking steps each, no twin training, photos-train / photos-eval, two runs at a time on one thread each.
# Resumes; finished runs are skipped.
W=${W:-/work/wt-f}; cd $W; export PYTHONPATH=$W WANDB_MODE=disabled
nice /work/main/.venv/bin/python benchmarks/energy_frontier.py --sweep recipes/sweeps/energy_frontier_distilled.yaml \
  --runs-dir /work/runs/energy_frontier_distilled --train /work/shared/data/photos-train \
  --eval /work/shared/data/photos-eval --twin-steps 0 --steps 800 --val-every 200 --jobs 2 --threads 1
