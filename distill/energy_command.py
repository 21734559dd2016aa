"""`spikedistill energy --config RECIPE`: per-layer energy of teacher and student on validation images."""
from __future__ import annotations

import argparse
from pathlib import Path

import torch

from distill.cli import SpikeDistillCLI


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(
        prog="spikedistill energy",
        description="Print per-layer MACs, input firing rates, ACs and energy for the recipe's teacher and "
        "student, measured on its first validation image, then totals per image and the ratio.",
    )
    parser.add_argument("--config", required=True, action="append", help="recipe YAML (repeatable)")
    parser.add_argument("--csv-dir", type=Path, default=None, help="also write energy_<role>.csv here")
    args, overrides = parser.parse_known_args(argv)
    cli_args = [item for path in args.config for item in ("--config", path)] + overrides
    cli = SpikeDistillCLI(args=cli_args, run=False)
    module, datamodule = cli.model, cli.datamodule
    datamodule.setup("validate")
    batch = next(iter(datamodule.val_dataloader()))
    module._energy_batch = {k: v[:1] for k, v in batch.items() if isinstance(v, torch.Tensor)}
    module.measure_energy()
    reports = module.energy_reports
    if {"teacher", "student"} <= reports.keys():
        from distill.energy import format_comparison

        print(format_comparison(reports["teacher"], reports["student"]))
    else:
        for role, report in reports.items():
            print(f"== {role} ==\n{report.format_table()}")
    if args.csv_dir is not None:
        for role, report in reports.items():
            report.write_csv(args.csv_dir / f"energy_{role}.csv")
        print(f"per-layer tables written to {args.csv_dir}/energy_<role>.csv")
