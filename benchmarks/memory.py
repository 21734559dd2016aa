#!/usr/bin/env python
"""Peak memory of one training step (forward, backward, Adam) of a spiking student against T, with
and without the BPTT memory bound (the students' ``checkpoint_segments`` option: T is split into k
chunks run under ``torch.utils.checkpoint``, membranes carried across chunks).

Each figure comes from a fresh subprocess: build the model, one warm-up step (Adam state, allocator),
reset the RSS high-water mark (``/proc/self/clear_refs``), one measured step; the figure is
``VmHWM - VmRSS`` before that step (activations, gradients, workspaces), in MiB. glibc's mmap threshold
is fixed at 64 KiB in the child so freed tensors go back to the OS and RSS follows live memory.
The step time of that one measured step is reported beside it (one sample: indicative only).

``--segments`` takes ``none`` (no bound), integers k (k chunks; skipped when k >= T) and ``T``
(one step per chunk, the tightest bound). ``--ann`` adds the ANN twin on a ``T*B`` batch as a reference.

Caveat (from ``students/engine.py``): with batch norm in training mode each chunk normalises with its
own statistics, so chunked training is not bit-identical to the unchunked run (it is in eval mode).

Example::

    python benchmarks/memory.py --student spiking_dncnn --timesteps 1 2 4 8 16 32 --segments none 2 4 T
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Callable

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from benchmarks.common import (  # noqa: E402
    STUDENTS,
    build_student,
    build_twin,
    command_line,
    load,
    machine_info,
    machine_line,
    make_batch,
    make_step,
    md_table,
    measure_step_memory,
    report_child,
    run_child,
)


def parse_segments(tokens: list[str]) -> list[str | int | None]:
    out: list[str | int | None] = []
    for tok in tokens:
        low = str(tok).lower()
        if low in ("none", "0", "1"):
            out.append(None)
        elif low == "t":
            out.append("T")
        else:
            try:
                k = int(low)
            except ValueError:
                raise SystemExit(f"--segments: {tok!r} is not allowed; use none, an integer >= 2, or T") from None
            if k < 0:
                raise SystemExit(f"--segments: {tok!r} is not allowed; use none, an integer >= 2, or T")
            out.append(k)
    seen, unique = set(), []
    for s in out:
        if s not in seen:
            seen.add(s)
            unique.append(s)
    return unique


def resolve_segments(seg: str | int | None, timesteps: int) -> int | None:
    """The ``checkpoint_segments`` value for T, or None; raises ValueError when the setting does not
    apply (k >= T duplicates ``T``; any bound at T = 1 is no bound)."""
    if seg is None:
        return None
    k = timesteps if seg == "T" else int(seg)
    if timesteps == 1 or (seg != "T" and k >= timesteps):
        raise ValueError("not applicable")
    return k


def seg_label(seg: str | int | None) -> str:
    if seg is None:
        return "no bound"
    return "k = T (1 step/chunk)" if seg == "T" else f"k = {seg}"


def measure(payload: dict[str, Any]) -> dict[str, Any]:
    """One step's memory in this process (the child calls this)."""
    torch.set_num_threads(int(payload.get("threads") or 1))
    key, T = payload["student"], int(payload["T"])
    batch, size = int(payload["batch"]), int(payload["size"])
    x, y = make_batch(STUDENTS[key].channels, batch, size)
    if payload.get("ann"):
        model = build_twin(key, build_student(key, T))
        x, y = x.repeat(T, 1, 1, 1), y.repeat(T, 1, 1, 1)
    else:
        model = build_student(key, T, checkpoint_segments=payload.get("segments"))
    return measure_step_memory(make_step(model, x, y))


def run_memory(student: str, timesteps: list[int], segments: list[str | int | None], batch: int = 16,
               size: int = 40, threads: int = 1, ann: bool = True, isolate: bool = True,
               log: Callable[[str], None] | None = None) -> list[dict[str, Any]]:
    """One row per T: ``{"T", "cells": {label: result}, "load": [..]}``."""
    if not STUDENTS[student].checkpointable and any(s is not None for s in segments):
        if log:
            log(f"note: {student} cannot be checkpointed over time (temporal attention); only 'no bound' is measured")
        segments = [None]
    rows = []
    for T in timesteps:
        row: dict[str, Any] = {"T": T, "cells": {}, "load": [load()]}
        configs: list[tuple[str, dict[str, Any]]] = []
        for seg in segments:
            try:
                k = resolve_segments(seg, T)
            except ValueError:
                continue
            configs.append((seg_label(seg), {"segments": k}))
        if ann:
            configs.append(("ANN twin on T·B", {"ann": True}))
        for label, extra in configs:
            payload = {"student": student, "T": T, "batch": batch, "size": size, "threads": threads, **extra}
            result = run_child(Path(__file__), payload) if isolate else measure(payload)
            row["cells"][label] = result | {"segments": extra.get("segments")}
            if log:
                log(f"T={T:<3d} {label:<22s} step peak {result['step_mib']:8.1f} MiB  "
                    f"(RSS {result['base_mib']:.0f} -> {result['peak_mib']:.0f} MiB)  step {result['step_s']:.2f} s  load {load()}")
        row["load"].append(load())
        rows.append(row)
    return rows


def render(rows: list[dict[str, Any]], segments: list[str | int | None], ann: bool) -> str:
    labels = [seg_label(s) for s in segments] + (["ANN twin on T·B"] if ann else [])
    headers = ["T"] + [f"{lab}: MiB (s/step)" for lab in labels] + ["bound saves (best k)", "load (1 min)"]
    table = []
    for r in rows:
        cells = r["cells"]
        row: list[Any] = [r["T"]]
        for lab in labels:
            c = cells.get(lab)
            row.append(None if c is None else f"{c['step_mib']:.0f} ({c['step_s']:.2f})")
        base = cells.get("no bound")
        bounded = [c for lab, c in cells.items() if lab not in ("no bound", "ANN twin on T·B")]
        if base and bounded and base["step_mib"] > 0:
            best = min(bounded, key=lambda c: c["step_mib"])
            row.append(f"{100 * (1 - best['step_mib'] / base['step_mib']):.0f}% (k={best['segments']})")
        else:
            row.append(None)
        row.append(f"{min(r['load']):.1f}–{max(r['load']):.1f}")
        table.append(row)
    return md_table(headers, table)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description="Peak RSS of one training step against T, with and without checkpoint_segments "
                    "(fresh subprocess per figure).",
        epilog="Example: python benchmarks/memory.py --student spiking_dncnn --timesteps 1 2 4 8 16 32",
    )
    p.add_argument("--student", default="spiking_dncnn", choices=list(STUDENTS), help="default spiking_dncnn")
    p.add_argument("--timesteps", nargs="+", type=int, default=[1, 2, 4, 8, 16, 32], metavar="T")
    p.add_argument("--segments", nargs="+", default=["none", "2", "4", "T"], metavar="K",
                   help="none (no bound), integers k, or T (one step per chunk); default: none 2 4 T")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--size", type=int, default=40)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--no-ann", action="store_true", help="leave out the ANN twin reference column")
    p.add_argument("--in-process", action="store_true",
                   help="measure in this process instead of a fresh subprocess per figure (quicker, less clean)")
    p.add_argument("--json", type=Path, default=None, help="also write the measurements here")
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    return p


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    if args.child:
        report_child(measure(json.loads(args.child)))
        return
    torch.set_num_threads(args.threads)
    info = machine_info()
    print(f"# machine: {machine_line(info)}")
    print(f"# command: {command_line()}")
    segments = parse_segments(args.segments)
    if not STUDENTS[args.student].checkpointable:
        segments = [None]
    rows = run_memory(args.student, args.timesteps, segments, args.batch, args.size, args.threads,
                      ann=not args.no_ann, isolate=not args.in_process, log=lambda s: print(s, flush=True))
    print(f"\n{STUDENTS[args.student].label}, batch {args.batch}, {args.size}×{args.size}: "
          "peak RSS of one training step above the RSS before it, MiB (seconds of that step)\n")
    print(render(rows, segments, not args.no_ann))
    print(f"machine at end: load {machine_info()['load']}")
    if args.json:
        args.json.write_text(json.dumps({"machine": info, "command": command_line(), "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
