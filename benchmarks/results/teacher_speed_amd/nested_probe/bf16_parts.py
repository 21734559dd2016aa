import sys, time, torch
sys.path.insert(0, "/work/main")
from teachers.dncnn import DnCNN
torch.set_num_threads(2)
def rate(net, fn, bf16, steps=10):
    opt = torch.optim.Adam(net.parameters(), 1e-3)
    x = torch.rand(16, 1, 32, 32); y = x + 0.1 * torch.randn_like(x)
    def step():
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = (fn(net, y) - x).abs().mean()
        opt.zero_grad(); loss.backward(); opt.step()
    for _ in range(3): step()
    t = time.perf_counter()
    for _ in range(steps): step()
    return (time.perf_counter() - t) / steps
for feats in (48, 64):
    plain = DnCNN(in_channels=1, features=feats, depth=8, bn=False)
    print(feats, "wide only fp32 %.4f bf16 %.4f" % (rate(plain, lambda n, y: n(y), False), rate(plain, lambda n, y: n(y), True)), flush=True)
nest = DnCNN(in_channels=1, features=48, depth=8, bn=False, nested_features=24, nested_levels=4)
print("nested-only fp32 %.4f bf16 %.4f" % (rate(nest, lambda n, y: n.nested_output(y), False), rate(nest, lambda n, y: n.nested_output(y), True)), flush=True)
nest2 = DnCNN(in_channels=1, features=48, depth=8, bn=False, nested_features=24)
print("nested relu fp32 %.4f bf16 %.4f" % (rate(nest2, lambda n, y: n.nested_output(y), False), rate(nest2, lambda n, y: n.nested_output(y), True)), flush=True)
