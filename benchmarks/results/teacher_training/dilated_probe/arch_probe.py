"""Probe: at equal steps/compute, does a dilated 7-layer net (IRCNN's dilations 1,2,3,4,3,2,1) beat DnCNN 8x48?"""
import sys, time, json, torch, torch.nn as nn, torch.nn.functional as F
from pathlib import Path
sys.path.insert(0, str(Path(__file__).resolve().parents[4]))
from benchmarks.common import SHARED, held_out_psnr
from distill.data.denoising import DenoisingDataModule
arch, steps, patch, feats = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
torch.set_num_threads(1); torch.manual_seed(0)
dil = {"dncnn": [1] * 8, "ircnn": [1, 2, 3, 4, 3, 2, 1], "ircnn9": [1, 2, 3, 4, 4, 3, 2, 1, 1]}[arch]
layers = []
for i, d in enumerate(dil):
    cin = 1 if i == 0 else feats; cout = 1 if i == len(dil) - 1 else feats
    c = nn.Conv2d(cin, cout, 3, padding=d, dilation=d); nn.init.kaiming_normal_(c.weight, nonlinearity="relu"); nn.init.zeros_(c.bias)
    layers += [c] + ([nn.ReLU()] if i < len(dil) - 1 else [])
body = nn.Sequential(*layers)
nn.init.zeros_(layers[-1].weight)
net = lambda x: x - body(x)
dm = DenoisingDataModule(train=[str(SHARED / "data/photos-train"), "skimage-samples"], patch_size=patch, batch_size=16,
                         patches_per_epoch=16 * 20000, eval_size=192, seed=0)
dm.setup("fit")
def score():
    return held_out_psnr(net, dm.val_dataloader())
opt = torch.optim.Adam(body.parameters(), 1e-3); sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps, 1e-6)
dm.set_epoch(0); it = iter(dm.train_dataloader()); t0 = time.time()
for s in range(steps):
    b = next(it); loss = F.l1_loss(net(b["input"]), b["target"])
    opt.zero_grad(); loss.backward(); torch.nn.utils.clip_grad_norm_(body.parameters(), 0.5); opt.step(); sched.step()
    if (s + 1) % max(1, steps // 4) == 0: print(s + 1, round(score(), 3), round(time.time() - t0), flush=True)
print(json.dumps({"arch": arch, "steps": steps, "patch": patch, "features": feats, "end": score(), "seconds": time.time() - t0}))
