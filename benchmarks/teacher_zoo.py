#!/usr/bin/env python
"""The teacher zoo table: every file in ``teachers/pretrained/`` rebuilt with ``load_network`` and scored on the
full ``../shared/data/photos-eval`` images with ``../shared/anchors/protocol.py`` (denoisers; deraining teachers
have no anchor), beside the project's own split (the embedded check recorded in the file), its size, training
minutes, recipe and SHA-256.

Example::

    python benchmarks/teacher_zoo.py --out benchmarks/results/teacher_zoo
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import REPO, SHARED, anchor_psnr, machine_info, machine_line, md_table  # noqa: E402
from distill.io import atomic_write_json, atomic_write_text  # noqa: E402

TEACHERS = REPO / "teachers" / "pretrained"


def describe(path: Path, eval_dir: Path) -> dict[str, Any]:
    """One zoo row: the file's own record plus its anchor-protocol PSNR."""
    import torch

    from distill.export import load_network
    from teachers.weights import sha256_file

    net = load_network(path)
    record = torch.load(path, map_location="cpu", weights_only=True)
    prov, check = record["provenance"], record["provenance"].get("embedded_check") or {}
    seconds = prov.get("train_seconds")
    row = {"file": path.name, "class_path": record["class_path"], "init_args": record["init_args"],
           "params": sum(p.numel() for p in net.parameters()), "bytes": path.stat().st_size,
           "sha256": sha256_file(path), "recipe": prov.get("recipe"), "train_minutes":
           None if seconds is None else round(seconds / 60, 1), "embedded": check, "anchor": None}
    if check.get("rain") is None and eval_dir.is_dir():
        row["anchor"] = anchor_psnr(net, eval_dir, "gray" if net.in_channels == 1 else "rgb", check.get("sigma", 25.0))
    return row


def table(rows: list[dict[str, Any]]) -> str:
    """The zoo as markdown."""
    body = []
    for r in rows:
        check, anchor = r["embedded"], r["anchor"]
        task = f"derain ({check['rain']})" if check.get("rain") else f"denoise σ={check.get('sigma', 25):g}"
        recipe = r["recipe"] if isinstance(r["recipe"], str) else "(run config in the file)"
        body.append([f"`{r['file']}`", r["class_path"].rsplit(".", 1)[-1], task,
                     "–" if anchor is None else f"{anchor['anchor_psnr']:.2f} ({anchor['mode']}, {anchor['images']})",
                     f"{check.get('psnr', float('nan')):.2f}", f"{r['params']:,}", f"{r['bytes'] / 2**20:.2f}",
                     "–" if r["train_minutes"] is None else f"{r['train_minutes']:.0f}", f"`{recipe}`",
                     f"`{r['sha256'][:8]}…{r['sha256'][-6:]}`"])
    head = ["file", "model", "task", "anchor PSNR, photos-eval (dB)", "embedded split PSNR (dB)", "params", "MiB",
            "train min", "recipe", "SHA-256"]
    return md_table(head, body)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--eval", type=Path, default=SHARED / "data" / "photos-eval")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "teacher_zoo")
    args = parser.parse_args()
    rows = [describe(p, args.eval) for p in sorted(TEACHERS.glob("*.pt"))]
    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(args.out / "zoo.json", rows)
    text = f"{machine_line(machine_info())}\n\n{table(rows)}\n"
    atomic_write_text(args.out / "zoo.md", text)
    print(text)


if __name__ == "__main__":
    main()
