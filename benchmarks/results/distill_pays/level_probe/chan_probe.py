"""Probe: does a per-channel QCFS threshold lift the teacher's nested 24x8 network? Only thresholds (and optionally
weights) fine-tuned, photos-train + embedded crops; scored on the embedded held-out split (not photos-eval)."""
import sys, time, json, copy, torch, torch.nn.functional as F
from pathlib import Path
ROOT = Path(__file__).resolve().parents[4]
sys.path.insert(0, str(ROOT))
from benchmarks.common import SHARED, held_out_psnr
from distill.export import load_network
from distill.data.denoising import DenoisingDataModule
from students.neurons import QCFS
torch.manual_seed(0)
mode, steps, lr = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])   # mode: layer | channel | channel_w | layer_w
torch.set_num_threads(1)
t = load_network(ROOT / "teachers/pretrained/dncnn_nested_qcfs_gray_s25_emb.pt").train()
convs = [m for m in t.body if isinstance(m, torch.nn.Conv2d)]
k = t.nested_features
W = [c.weight.detach()[:k] if i == 0 else (c.weight.detach()[:, :k] if i == len(convs) - 1 else c.weight.detach()[:k, :k]) for i, c in enumerate(convs)]
B = [c.bias.detach() if i == len(convs) - 1 else c.bias.detach()[:k] for i, c in enumerate(convs)]
W = [torch.nn.Parameter(w.clone()) for w in W]; B = [torch.nn.Parameter(b.clone()) for b in B]
import os; L = int(os.environ.get("LEVELS", t.nested_levels))
lam0 = [float(a.threshold) for a in t.nested_acts]
per = mode.startswith("channel")
lam = [torch.nn.Parameter(torch.full((k,) if per else (), l).log()) for l in lam0]
def act(h, ll):
    th = ll.exp().reshape(-1, 1, 1) if per else ll.exp()
    u = h / th; c = u.clamp(0, 1); soft = c + 0.01 * (u - c)
    hard = torch.floor(c.detach() * L + 0.5) / L
    return (soft + (hard - soft).detach()) * th
def net(x):
    h = x
    for i in range(len(W)):
        h = F.conv2d(h, W[i], B[i], padding=1)
        if i < len(W) - 1: h = (act(h, lam[i]) if L > 0 else F.relu(h))
    return x - h
dm = DenoisingDataModule(train=[str(SHARED / "data/photos-train"), "skimage-samples"], patch_size=32, batch_size=16,
                         patches_per_epoch=16 * 10000, eval_size=192, seed=0)
dm.setup("fit")
def score():
    return held_out_psnr(net, dm.val_dataloader())
s0 = score(); print("start", mode, round(s0, 3), flush=True)
params = lam + (W + B if mode.endswith("_w") else [])
opt = torch.optim.Adam([{"params": lam, "lr": lr}] + ([{"params": W + B, "lr": lr * 0.1}] if mode.endswith("_w") else []))
sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
dm.set_epoch(0); it = iter(dm.train_dataloader()); t0 = time.time()
for s in range(steps):
    b = next(it)
    loss = F.l1_loss(net(b["input"]), b["target"])
    opt.zero_grad(); loss.backward(); opt.step(); sched.step()
    if (s + 1) % max(1, steps // 4) == 0: print(s + 1, round(score(), 3), round(time.time() - t0), flush=True)
s1 = score()
print(json.dumps({"mode": mode, "steps": steps, "lr": lr, "start": s0, "end": s1, "seconds": time.time() - t0}))
torch.save({"W": [w.detach() for w in W], "B": [b.detach() for b in B], "lam": [l.detach().exp() for l in lam]}, f"/tmp/{mode}_{steps}_{lr}_L{L}.pt")
