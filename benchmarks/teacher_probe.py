#!/usr/bin/env python
"""A short teacher-training probe: a network built from a Python expression trains ``--steps`` steps of L1 on
photos-train crops (gray, sigma 25, 16 crops of 64x64, Adam at ``--lr``) and is scored on 256x256 centre crops
of photos-eval, so a recipe's architecture and learning rate can be screened in minutes before an hour-long run.
It printed the numbers in the header of ``recipes/teachers/ffdnet_photos_s25.yaml``.

Example::

    python benchmarks/teacher_probe.py "FFDNet(in_channels=1, features=64, depth=15, residual=True)" --lr 3e-4
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from benchmarks.common import SHARED  # noqa: E402
from distill.data import DenoisingDataModule  # noqa: E402
from distill.modeling import run_model  # noqa: E402
from teachers.dncnn import DnCNN  # noqa: E402,F401 (names for the expression)
from teachers.ffdnet import FFDNet  # noqa: E402,F401


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("network", help="a Python expression over DnCNN and FFDNet")
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--train", default=str(SHARED / "data" / "photos-train"))
    parser.add_argument("--eval", default=str(SHARED / "data" / "photos-eval"))
    args = parser.parse_args()
    torch.manual_seed(0)
    net = eval(args.network, {"DnCNN": DnCNN, "FFDNet": FFDNet})  # noqa: S307 (a developer's own expression)
    data = DenoisingDataModule(train=[args.train], val=[args.eval], channels=1, sigma=25, eval_size=256,
                               patch_size=64, batch_size=16, patches_per_epoch=16 * args.steps)
    data.setup("fit")
    optimizer = torch.optim.Adam(net.parameters(), args.lr)
    start, losses = time.perf_counter(), []
    for batch in data.train_dataloader():
        net.train()
        loss = (run_model(net, batch["input"], batch["sigma"]) - batch["target"]).abs().mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    net.eval()
    scores = []
    with torch.no_grad():
        for batch in data.val_dataloader():
            out = run_model(net, batch["input"], batch["sigma"]).clamp(0, 1)
            scores += (-10 * torch.log10((out - batch["target"]).pow(2).flatten(1).mean(1))).tolist()
    curve = [round(sum(losses[i:i + 25]) / len(losses[i:i + 25]), 4) for i in range(0, len(losses), 25)]
    print(f"{args.network} lr {args.lr}: L1 every 25 steps {curve}; photos-eval crops "
          f"{sum(scores) / len(scores):.2f} dB; {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
