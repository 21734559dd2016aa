"""`spikedistill energy --config RECIPE [--ckpt_path CKPT | --network FILE]`: per-layer energy of teacher and
student on the recipe's first validation image, for trained weights (a fit checkpoint or an exported network)."""
from __future__ import annotations

import argparse
from pathlib import Path

import torch

from distill.callbacks import EnergyMonitor, first_image
from distill.cli import SpikeDistillCLI
from distill.errors import CheckpointError


def load_trained(network: torch.nn.Module, ckpt_path: Path | None, network_file: Path | None) -> str | None:
    """Load trained weights into the recipe's network; returns where they came from (None: untrained)."""
    from distill.export import load_network, network_state_dict

    if ckpt_path is not None and network_file is not None:
        raise CheckpointError("pass --ckpt_path or --network, not both")
    if ckpt_path is None and network_file is None:
        return None
    source = ckpt_path or network_file
    state = network_state_dict(ckpt_path) if ckpt_path is not None else load_network(network_file).state_dict()
    try:
        network.load_state_dict(state)
    except RuntimeError as exc:  # missing, unexpected or mis-shaped keys
        detail = " ".join(str(exc).split())[:400]
        raise CheckpointError(
            f"{source} does not fit the recipe's {type(network).__name__} ({detail}); pass the recipe the network "
            "was trained with"
        ) from None
    return str(source)


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(
        prog="spikedistill energy",
        description="Print per-layer MACs, input firing rates, ACs and energy for the recipe's teacher and "
        "student, measured on its first validation image, then totals per image and the ratio.",
    )
    parser.add_argument("--config", required=True, action="append", help="recipe YAML (repeatable)")
    parser.add_argument("--ckpt_path", type=Path, default=None, help="a fit checkpoint of this recipe (last.ckpt)")
    parser.add_argument("--network", type=Path, default=None, help="a network file from `spikedistill export`")
    parser.add_argument("--json", type=Path, default=None, help="also write the report as JSON here")
    parser.add_argument("--csv-dir", type=Path, default=None, help="also write energy_<role>.csv here")
    args, overrides = parser.parse_known_args(argv)
    cli_args = [item for path in args.config for item in ("--config", path)] + overrides
    cli = SpikeDistillCLI(args=cli_args, run=False)
    module, datamodule = cli.model, cli.datamodule
    source = load_trained(module.network, args.ckpt_path, args.network)
    datamodule.setup("validate")
    batch = next(iter(datamodule.val_dataloader()))
    monitor = EnergyMonitor()
    monitor.measure(module, first_image(batch))
    reports = monitor.reports
    height, width = batch["input"].shape[-2:]
    role = module.network_role
    print(f"energy per {height}x{width} image ({batch['name'][0]}) of the {role} "
          + (f"trained in {source}" if source else
             "UNTRAINED (fresh initialisation: its firing rates and energy mean nothing; pass --ckpt_path or "
             "--network for trained weights)"))
    if {"teacher", "student"} <= reports.keys():
        from distill.energy import format_comparison

        print(format_comparison(reports["teacher"], reports["student"]))
    else:
        for name, report in reports.items():
            print(f"== {name} ==\n{report.format_table()}")
    if args.json is not None:
        from distill.io import atomic_write_json

        atomic_write_json(args.json, {"image": {"name": batch["name"][0], "height": height, "width": width},
                                      "trained": source, **{k: r.to_dict() for k, r in reports.items()},
                                      **monitor.summary()})
        print(f"report written to {args.json}")
    if args.csv_dir is not None:
        for name, report in reports.items():
            report.write_csv(args.csv_dir / f"energy_{name}.csv")
        print(f"per-layer tables written to {args.csv_dir}/energy_<role>.csv")
