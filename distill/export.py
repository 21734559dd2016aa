"""`spikedistill export CKPT OUT`: save a run's trained network alone (no teacher, no adapters) as a state dict."""
from __future__ import annotations

import argparse
from pathlib import Path

import torch

from distill.errors import CheckpointError
from distill.io import atomic_path

ROLE_PREFIXES = ("model.", "student.")


def network_state_dict(checkpoint_path: Path) -> dict[str, torch.Tensor]:
    """The trained network's weights from a Lightning checkpoint, with the role prefix stripped."""
    from teachers.weights import read_state_dict

    state, _ = read_state_dict(checkpoint_path)
    for prefix in ROLE_PREFIXES:
        weights = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
        if weights:
            return weights
    raise CheckpointError(
        f"{checkpoint_path} holds no trained network: no key starts with {' or '.join(ROLE_PREFIXES)}"
    )


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="spikedistill export", description=__doc__)
    parser.add_argument("checkpoint", type=Path, help="a run's .ckpt (e.g. runs/NAME/checkpoints/last.ckpt)")
    parser.add_argument("output", type=Path, help="where to write the state dict (.pt)")
    args = parser.parse_args(argv)
    weights = network_state_dict(args.checkpoint)
    with atomic_path(args.output) as tmp:
        torch.save(weights, tmp)
    from teachers.weights import sha256_file

    print(f"wrote {len(weights)} tensors to {args.output} (sha256 {sha256_file(args.output)})")
