"""One-time cost of the compiled multi-threshold backward, and its speed against the eager ops, in a fresh process.

    python benchmarks/results/train_speed_compiled/compile_time.py                      # warm inductor cache
    TORCHINDUCTOR_CACHE_DIR=$(mktemp -d) python benchmarks/results/train_speed_compiled/compile_time.py  # cold
"""
import time

import torch

from students import engine
from students.surrogates import ATan

torch.set_num_threads(1)
torch.manual_seed(0)
x = (torch.randn(4, 16, 16, 40, 40) * 0.8 + 0.3).requires_grad_()  # one SpikingUNet-tiny layer at T = 4, B = 16
threshold = torch.tensor(0.9, requires_grad=True)
weights = torch.randn(x.shape, generator=torch.Generator().manual_seed(1))


def step(compiled: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Forward and backward of one fused multi-threshold layer; its input and threshold gradients."""
    engine._compile_enabled = compiled
    x.grad = threshold.grad = None
    out, _ = engine.multithreshold_recurrence(x, threshold, ATan())
    (out * weights).sum().backward()
    return x.grad.clone(), threshold.grad.clone()


started = time.perf_counter()
compiled_grads = step(True)
print(f"first compiled step (compile included): {time.perf_counter() - started:.1f} s")
eager_grads = step(False)
print(f"max |compiled - eager| input grad: {float((compiled_grads[0] - eager_grads[0]).abs().max()):.2e}; "
      f"threshold grads {float(compiled_grads[1]):.4f} / {float(eager_grads[1]):.4f}")
for compiled in (True, False):
    started = time.perf_counter()
    for _ in range(5):
        step(compiled)
    print(f"{'compiled' if compiled else 'eager'}: {(time.perf_counter() - started) / 5 * 1e3:.1f} ms per step")
