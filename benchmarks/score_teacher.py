#!/usr/bin/env python
"""Score one exported denoiser on the full ``../shared/data/photos-eval`` images by ``../shared/anchors/protocol.py``
at one or more noise levels (a blind teacher at each level it must serve), and its nested network too when it has
one; the scores go to a JSON file, written atomically.

Example::

    python benchmarks/score_teacher.py dncnn_nested_gray_blind.pt --sigmas 15 25 50 --out anchor.json
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import SHARED, anchor_psnr  # noqa: E402
from distill.io import atomic_write_json  # noqa: E402


class Nested(nn.Module):
    """A nested DnCNN's narrow network as a denoiser of its own, taking the level as the wide one does; a module, so
    the energy counter can measure it too."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net, self.needs_sigma = net, getattr(net, "needs_sigma", False)

    def forward(self, x: torch.Tensor, sigma: torch.Tensor | None = None) -> torch.Tensor:
        return self.net.nested_output(x, sigma)


def score(path: Path, sigmas: list[float], eval_dir: Path) -> dict[str, Any]:
    """``{"full": {sigma: anchor}, "nested_K": {...}}`` for the file at ``path``."""
    from distill.export import load_network

    net = load_network(path)
    mode = "gray" if net.in_channels == 1 else "rgb"
    nets = {"full": net}
    if getattr(net, "nested_features", None):
        nets[f"nested_{net.nested_features}"] = Nested(net)
    return {name: {f"{s:g}": anchor_psnr(n, eval_dir, mode, s) for s in sigmas} for name, n in nets.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("file", type=Path)
    parser.add_argument("--sigmas", type=float, nargs="+", default=[25.0])
    parser.add_argument("--eval", type=Path, default=SHARED / "data" / "photos-eval")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    if not args.eval.is_dir():
        parser.error(f"--eval {args.eval} is not a folder: point it at photos-eval (../shared/data/photos-eval)")
    result = score(args.file, args.sigmas, args.eval)
    atomic_write_json(args.out, result)
    for name, by_sigma in result.items():
        print(name, {s: a["anchor_psnr"] for s, a in by_sigma.items()})


if __name__ == "__main__":
    main()
