"""Step rate of the gray QCFS-nested teacher, batch 16 x 32^2, 2 threads: fp32, channels_last, torch.compile."""
import sys, time, torch
sys.path.insert(0, "/work/main")
from teachers.dncnn import DnCNN
torch.set_num_threads(2)
def rate(mode, steps=40):
    torch.manual_seed(0)
    net = DnCNN(in_channels=1, features=48, depth=8, bn=False, nested_features=24, nested_levels=4)
    x = torch.rand(16, 1, 32, 32); y = x + 0.1 * torch.randn_like(x)
    if mode == "cl":
        net = net.to(memory_format=torch.channels_last); x = x.to(memory_format=torch.channels_last); y = y.to(memory_format=torch.channels_last)
    opt = torch.optim.Adam(net.parameters(), 1e-3)
    def loss_fn(y, x):
        return (net(y) - x).abs().mean() + (net.nested_output(y) - x).abs().mean()
    f = torch.compile(loss_fn) if mode == "compile" else loss_fn
    def step():
        loss = f(y, x); opt.zero_grad(); loss.backward(); opt.step()
    t0 = time.perf_counter(); step(); first = time.perf_counter() - t0
    for _ in range(4): step()
    t = time.perf_counter()
    for _ in range(steps): step()
    return (time.perf_counter() - t) / steps, first
for m in ("fp32", "cl", "compile", "fp32"):
    s, first = rate(m)
    print(f"{m}: {s:.4f} s/step (first step {first:.1f} s)", flush=True)
