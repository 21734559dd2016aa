#!/usr/bin/env python
"""Teacher-training step rate against the speed levers that need no quality run: channels_last, bf16 autocast on
CPU, FFDNet's pixel-unshuffle (a 64x15 body at half resolution instead of DnCNN-17 at full) and, with
``--compile``, ``torch.compile`` (its first compile timed apart). Every variant takes L1 + Adam steps on the same
batch (16 crops of 48x48, gray, the ``dncnn17_photos_s25`` recipe's shape); the variants are timed in interleaved
rounds, so the ratios to the fp32 DnCNN-17 step share the machine's state.

Example::

    python benchmarks/teacher_speed.py --rounds 5 --out benchmarks/results/teacher_speed
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Callable

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from benchmarks.common import command_line, machine_info, machine_line, make_step, md_table  # noqa: E402
from distill.io import atomic_write_json, atomic_write_text  # noqa: E402
from teachers.dncnn import DnCNN  # noqa: E402
from teachers.ffdnet import FFDNet  # noqa: E402

VARIANTS = ("dncnn17", "dncnn17_channels_last", "dncnn17_bf16", "ffdnet64x15", "ffdnet64x15_channels_last")


def build_step(variant: str, batch: int, size: int, compiled: bool) -> Callable[[], float]:
    """One training step of `variant` (forward, L1, backward, Adam) on a fixed noisy batch."""
    torch.manual_seed(0)
    net = FFDNet(in_channels=1, features=64, depth=15, residual=True) if variant.startswith("ffdnet") else \
        DnCNN(in_channels=1, features=64, depth=17, bn=True)
    clean = torch.rand(batch, 1, size, size)
    noisy, sigma = clean + 25 / 255 * torch.randn_like(clean), torch.full((batch,), 25 / 255)
    if variant.endswith("channels_last"):
        net, noisy, clean = (t.to(memory_format=torch.channels_last) for t in (net, noisy, clean))
    model = torch.compile(net) if compiled else net
    return make_step(model, noisy, clean, lr=1e-4, sigma=sigma, bf16=variant.endswith("bf16"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds (default 5)")
    parser.add_argument("--steps", type=int, default=5, help="timed steps per variant per round (default 5)")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--size", type=int, default=48)
    parser.add_argument("--compile", action="store_true", help="add torch.compile'd fp32 DnCNN-17")
    parser.add_argument("--out", type=Path, default=Path("runs/teacher_speed"))
    args = parser.parse_args()
    variants = [(v, False) for v in VARIANTS] + ([("dncnn17", True)] if args.compile else [])
    steps, compile_s = {}, None
    for variant, compiled in variants:
        start = time.perf_counter()
        steps[variant + ("_compiled" if compiled else "")] = step = build_step(variant, args.batch, args.size, compiled)
        step()  # first step: warm-up, and the whole compile for the compiled variant
        if compiled:
            compile_s = time.perf_counter() - start
    times: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(args.rounds):
        for name, step in steps.items():
            start = time.perf_counter()
            for _ in range(args.steps):
                step()
            times[name].append((time.perf_counter() - start) / args.steps)
    base = statistics.median(times["dncnn17"])
    rows = [{"variant": name, "median_s": statistics.median(t), "min_s": min(t),
             "steps_per_s": 1 / statistics.median(t), "ratio_to_dncnn17": statistics.median(t) / base}
            for name, t in times.items()]
    info = machine_info()
    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(args.out / "results.json", {"rows": rows, "compile_seconds": compile_s, "machine": info,
                                                  "command": command_line(), "batch": args.batch, "size": args.size})
    table = md_table(["variant", "s / step (median)", "steps / s", "× fp32 DnCNN-17 step"],
                     [[r["variant"], f"{r['median_s']:.3f}", f"{r['steps_per_s']:.2f}", f"{r['ratio_to_dncnn17']:.2f}"]
                      for r in rows])
    note = "" if compile_s is None else f"\nFirst compiled step (compile included): {compile_s:.1f} s\n"
    text = f"{machine_line(info)}\n\n`{command_line()}`\n\n{table}\n{note}"
    atomic_write_text(args.out / "summary.md", text)
    print(text)


if __name__ == "__main__":
    main()
