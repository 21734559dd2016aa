"""How often a burst student's neurons fire two spikes in one step: per layer, the share of non-zero outputs that
are a full burst (1.0 = two half-threshold spikes), on the embedded held-out photos at sigma 25. The energy
accounting charges a burst as one graded event; charging each spike would multiply the synaptic ACs by
(1 + that share). RUN is a distill_pays run folder; its recorded runs predate the start check, so their students are
rebuilt at the copy's 0.25 start as rescore.py does (--init-membrane; not for the plain arm).
usage: burst_share.py RUN [gray|rgb] [--init-membrane 0.25]"""
import json, sys
from pathlib import Path
import torch
sys.path.insert(0, str(Path(__file__).resolve().parents[4]))
from distill.data.denoising import DenoisingDataModule
from distill.export import load_record, network_record
from students.neurons import MultiThresholdIF
run = Path(sys.argv[1])
record = network_record(run / "checkpoints" / "last.ckpt")
if "--init-membrane" in sys.argv:
    record["init_args"]["init_membrane"] = float(sys.argv[sys.argv.index("--init-membrane") + 1])
net = load_record(record, str(run))
channels = 1 if sys.argv[2:3] in ([], ["gray"]) else 3
counts = {}
def hook(name):
    def fn(_m, _i, out):
        c = counts.setdefault(name, [0, 0])
        c[0] += int((out > 0).sum())
        c[1] += int((out >= 0.999 * float(_m.threshold)).sum())
    return fn
for name, m in net.named_modules():
    if isinstance(m, MultiThresholdIF):
        m.register_forward_hook(hook(name))
dm = DenoisingDataModule(channels=channels, eval_size=192, seed=0)
dm.setup("validate")
with torch.no_grad():
    for b in dm.val_dataloader():
        net(b["input"])
share = {k: v[1] / max(v[0], 1) for k, v in counts.items()}
total = sum(v[1] for v in counts.values()) / max(sum(v[0] for v in counts.values()), 1)
print(json.dumps({"per_layer": share, "all_layers": total}, indent=1))
