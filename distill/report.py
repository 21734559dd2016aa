"""The result table printed at the end of fit/test: PSNR, SSIM, parameters and energy per role."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from distill.results import RESULTS_NAME


def results_table(results: dict[str, Any]) -> Table:
    """A rich table with one row per scored role (input, teacher, student or model)."""
    protocol = results.get("metric_protocol", {})
    space = "Y" if protocol.get("y_channel") else ("gray" if results.get("channels") == 1 else "RGB")
    table = Table(title=f"{results.get('task')} on {results.get('dataset')} (σ={results.get('sigma')}), "
                        f"PSNR/SSIM per image on {space}, crop {protocol.get('crop_border', 0)}")
    for column in ("", "PSNR (dB)", "SSIM", "params", "energy / image (µJ)"):
        table.add_column(column, justify="left" if not column else "right")
    energy = results.get("energy", {})
    params = results.get("params", {})
    for role, scores in results.get("metrics", {}).items():
        uj = energy.get(f"{role}_uj")
        table.add_row(
            role,
            f"{scores['psnr']:.2f}",
            f"{scores['ssim']:.4f}",
            f"{params[role]:,}" if role in params else "",
            f"{uj:.2f}" if uj is not None else "",
        )
    return table


def print_results(run_dir: Path, console: Console | None = None) -> None:
    """Print the table of `run_dir/results.json` and the ratios, then where the outputs are."""
    console = console or Console()
    path = Path(run_dir) / RESULTS_NAME
    if not path.exists():
        console.print(f"no {RESULTS_NAME} in {run_dir}")
        return
    results = json.loads(path.read_text())
    console.print(results_table(results))
    params, energy = results.get("params", {}), results.get("energy", {})
    if "ratio" in params:
        console.print(f"parameter ratio teacher/student: {params['ratio']:.1f}x")
    if energy.get("ratio") is not None:
        console.print(f"energy ratio teacher/student: {energy['ratio']:.1f}x "
                      f"({energy.get('constants', {}).get('name')})")
    for label, reached in results.get("convergence", {}).get("targets", {}).items():
        if reached.get("step") is not None:
            console.print(f"reached {label} ({reached['target_db']:.2f} dB) at step {reached['step']}, "
                          f"{reached['seconds']:.1f} s of training")
    console.print(f"results: {path}")
