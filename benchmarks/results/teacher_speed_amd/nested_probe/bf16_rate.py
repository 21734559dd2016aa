"""Step rate of the gray QCFS-nested teacher (8x48, nested 24, 4 levels), batch 16 x 32^2, fp32 against bf16 autocast."""
import sys, time, torch
sys.path.insert(0, "/work/main")
from teachers.dncnn import DnCNN
torch.set_num_threads(int(sys.argv[1]) if len(sys.argv) > 1 else 2)
torch.manual_seed(0)
def rate(bf16, steps=40):
    net = DnCNN(in_channels=1, features=48, depth=8, bn=False, nested_features=24, nested_levels=4)
    opt = torch.optim.Adam(net.parameters(), 1e-3)
    x = torch.rand(16, 1, 32, 32); y = x + 0.1 * torch.randn_like(x)
    def step():
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = (net(y) - x).abs().mean() + (net.nested_output(y) - x).abs().mean()
        opt.zero_grad(); loss.backward(); opt.step()
    for _ in range(5): step()
    t = time.perf_counter()
    for _ in range(steps): step()
    return (time.perf_counter() - t) / steps
for r in range(2):
    print(f"round {r}: fp32 {rate(False):.4f} s/step, bf16 {rate(True):.4f} s/step", flush=True)
