#!/bin/bash
# Issue 15, RGB: the QCFS-nested RGB teacher with the gray recipe that reached 30.27 dB (../p32emb/run.sh, which this
# runs with the RGB recipe): 32x32 crops, gradient clip 0.5, the embedded photos beside photos-train (their gray
# photos replicated over the three channels), alone on both threads, cosine over STEPS. Resumes.  usage: run.sh STEPS
Y=dncnn_nested_qcfs_rgb_s25 R=/work/runs/p32emb_rgb/dncnn_nested_qcfs_rgb_s25_p32emb W=${W:-/work/wt-f} \
  exec bash "$(dirname "$0")/../p32emb/run.sh" "$@"
