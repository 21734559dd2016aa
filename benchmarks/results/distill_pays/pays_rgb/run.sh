#!/bin/bash
# Issue 14, the RGB system: after the RGB QCFS-nested teacher is exported, its anchor scores (whole network and the
# nested 24-channel one), then the RGB arms at the 2000-step budget, paired seeds (init N, data N), one thread.
# usage: rgb_chain.sh WAIT_FILE ARM:SEED ...
W=$1; shift
T=/work/runs/nested_qcfs/dncnn_nested_qcfs_rgb_s25.pt; R=/work/runs/dncnn_nested_qcfs_rgb_s25
while [ ! -f "$W" ]; do sleep 20; done
while [ ! -f $T ]; do sleep 20; done
cd /work/wt-rgb
export PYTHONPATH=/work/wt-rgb OMP_NUM_THREADS=1 WANDB_MODE=disabled
if [ ! -f $R/anchor.json ] && mkdir $R/anchor.lock 2>/dev/null; then
/work/main/.venv/bin/python - <<PY
import sys
from pathlib import Path
import torch
sys.path.insert(0, ".")
from benchmarks.common import anchor_psnr
from distill.export import load_network
from distill.io import atomic_write_json
net = load_network("$T")
class Nested(torch.nn.Module):
    in_channels = 3
    def forward(self, x):
        return net.nested_output(x)
ev = Path("/work/shared/data/photos-eval")
atomic_write_json(Path("$R/anchor.json"), {"full": anchor_psnr(net, ev, "rgb"), "nested_24": anchor_psnr(Nested(), ev, "rgb")})
PY
cat $R/anchor.json
fi
for job in "$@"; do
nice /work/main/.venv/bin/python benchmarks/distill_pays.py --system rgb --runs-dir /work/runs/pays_rgb \
  --train /work/shared/data/photos-train --eval /work/shared/data/photos-eval --data-seed seed \
  --nested-teacher $T --seeds ${job#*:} --arms ${job%:*} \
  --steps 2000 --plain-steps 2700 --twin-steps 1000 --strict-twin-steps 1700 --untrained-twin-steps 2600 --val-every 250 --jobs 1
done
