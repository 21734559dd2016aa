"""`spikedistill export CKPT OUT`: save a run's trained network alone (no teacher, no adapters) as one
self-describing file: class path, init args, state dict and provenance (recipe, teacher SHA-256, versions,
final metrics). :func:`load_network` rebuilds it in one call; ``checkpoint:`` in a recipe reads it too
(its ``state_dict`` entry), as it reads plain state dicts and KAIR/BasicSR releases. ``--model BLOCK`` wraps
such a weight file, not a run, into the same format. ``--format nir`` writes a NIR graph of a spiking student
(:mod:`students.nir_graph`); ``--format torchscript`` / ``export`` a standalone PyTorch module of any network
(:func:`export_torch`), which plain ``torch.jit.load`` / ``torch.export.load`` read without this project."""
from __future__ import annotations

import argparse
import importlib
import json
import platform
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from distill.errors import CheckpointError, ConfigError
from distill.io import atomic_path
from distill.modeling import run_model

if TYPE_CHECKING:
    import nir

ROLE_PREFIXES = ("model.", "student.")
FORMAT = "spikedistill-network/1"
#: constructor arguments that point at weight files: the export holds the weights itself
WEIGHT_ARGS = ("checkpoint",)
#: --format values that write a standalone PyTorch module -> how plain torch reads it back
TORCH_FORMATS = {"torchscript": "torch.jit.load(path)", "export": "torch.export.load(path).module()"}


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


def run_config(checkpoint_path: Path) -> dict[str, Any]:
    """The LightningCLI config saved with the run that wrote ``checkpoint_path`` (``<run>/checkpoints/x.ckpt``)."""
    import yaml

    run = checkpoint_path.resolve().parent.parent
    found = sorted(run.glob("config.yaml")) + sorted(run.glob("*/version_*/config.yaml"))
    if not found:
        raise CheckpointError(
            f"{checkpoint_path}: no config.yaml in its run folder {run} (LightningCLI saves one there), so the "
            "network's class and arguments are unknown; export with --state-dict-only for the weights alone"
        )
    return yaml.safe_load(found[-1].read_text())


def network_spec(config: dict[str, Any]) -> dict[str, Any]:
    """``{class_path, init_args}`` of the trained network (the student, or the model trained alone)."""
    init = (config.get("model") or {}).get("init_args") or {}
    spec = init.get("student") or init.get("model")
    if not isinstance(spec, dict) or "class_path" not in spec:
        raise CheckpointError("the run's config names no student or model with a class_path")
    args = {k: v for k, v in (spec.get("init_args") or {}).items() if k not in WEIGHT_ARGS}
    return {"class_path": spec["class_path"], "init_args": args}


def provenance(checkpoint_path: Path, config: dict[str, Any]) -> dict[str, Any]:
    """Where the network came from: the recipe, the teacher's weight file, versions and the final metrics."""
    run = checkpoint_path.resolve().parent.parent
    results = json.loads((run / "results.json").read_text()) if (run / "results.json").is_file() else {}
    return {
        "checkpoint": checkpoint_path.name,
        "recipe": config,
        "teacher": results.get("teacher_source"),
        "metrics": results.get("metrics"),
        "warm_start": results.get("warm_start"),
        "train_seconds": (results.get("convergence") or {}).get("train_seconds"),
        "versions": versions(),
    }


def versions() -> dict[str, str]:
    """The library versions a file was written with."""
    import lightning
    import snntorch

    return {"torch": str(torch.__version__), "lightning": str(lightning.__version__),
            "snntorch": str(snntorch.__version__), "python": platform.python_version()}


def network_record(checkpoint_path: Path, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """The self-describing record of the network trained by the run of ``checkpoint_path``."""
    config = run_config(checkpoint_path)
    return {"format": FORMAT, **network_spec(config), "state_dict": network_state_dict(checkpoint_path),
            "provenance": {**provenance(checkpoint_path, config), **(extra or {})}}


def export_network(checkpoint_path: Path, output: Path, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """Write the network file of the run of ``checkpoint_path`` (``extra`` joins its provenance); returns it."""
    return save_record(network_record(checkpoint_path, extra), output)


def save_record(record: dict[str, Any], output: Path) -> dict[str, Any]:
    """Write a network record atomically, after checking that it rebuilds; returns it."""
    load_record(record, str(output))  # refuse to write a file that would not rebuild
    with atomic_path(output) as tmp:
        torch.save(record, tmp)
    return record


def wrap_weights(source: Path, block: Path, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """The network record of a weight file that is not a run (a plain state dict, a KAIR/BasicSR release, an
    older shipped file): ``block`` is a model block (``class_path`` and ``init_args``) whose class reads
    ``source`` through its own ``checkpoint:`` loader, so every layout that loads in a recipe converts."""
    import yaml

    from teachers.weights import resolve_checkpoint, sha256_file

    spec = yaml.safe_load(Path(block).read_text())
    if not isinstance(spec, dict) or not isinstance(spec.get("class_path"), str):
        raise CheckpointError(f"{block} is not a model block: it needs a class_path (and init_args)")
    args = {k: v for k, v in (spec.get("init_args") or {}).items() if k not in WEIGHT_ARGS}
    file = resolve_checkpoint(source)
    network = build_network(spec["class_path"], {**args, "checkpoint": str(file)}, str(file))
    origin = {"source": {"file": file.name, "sha256": sha256_file(file)}, "model_block": Path(block).name,
              "versions": versions(), **(extra or {})}
    return {"format": FORMAT, "class_path": spec["class_path"], "init_args": args,
            "state_dict": network.state_dict(), "provenance": origin}


def build_network(class_path: str, init_args: dict[str, Any], name: str) -> nn.Module:
    """``class_path(**init_args)``; a failure is a CheckpointError naming the file ``name`` it was for."""
    module, _, cls = class_path.rpartition(".")
    try:
        return getattr(importlib.import_module(module), cls)(**init_args)
    except (ImportError, AttributeError, TypeError, ValueError) as exc:
        raise CheckpointError(f"{name}: cannot build {class_path}({init_args}): {exc}") from exc


def load_record(record: Any, name: str) -> nn.Module:
    """Build the network a record describes and load its weights (strict)."""
    if not isinstance(record, dict) or record.get("format") != FORMAT:
        found = record.get("format") if isinstance(record, dict) else type(record).__name__
        raise CheckpointError(
            f"{name} is not a spikedistill network file (format {found!r}, expected {FORMAT!r}); plain state dicts "
            "and KAIR/BasicSR files load into a model built by hand, via its `checkpoint:` argument"
        )
    network = build_network(record["class_path"], record["init_args"], name)
    try:
        network.load_state_dict(record["state_dict"])
    except RuntimeError as exc:  # missing, unexpected or mis-shaped keys
        raise CheckpointError(f"{name}: the weights do not fit {record['class_path']}: "
                              f"{' '.join(str(exc).split())[:400]}") from None
    network.checkpoint_path = name
    return network.eval()


@torch.no_grad()
def embedded_check(network: nn.Module, sigma: float = 25.0, eval_size: int = 256,
                   rain: str | None = None) -> dict[str, Any]:
    """Mean PSNR (dB) of a restorer on the embedded held-out photos (fixed noise of ``sigma``, or fixed synthetic
    rain of preset ``rain``), as recorded in a shipped file's provenance so that a test can rebuild the file and
    compare without ``../shared``."""
    from distill.data import DenoisingDataModule, DerainingDataModule

    if rain is None:
        data = DenoisingDataModule(channels=network.in_channels, sigma=sigma, eval_size=eval_size)
    else:
        data, sigma = DerainingDataModule(channels=network.in_channels, synthetic=rain, eval_size=eval_size), 0.0
    data.setup("validate")
    scores = []
    for batch in data.val_dataloader():
        out = run_model(network.eval(), batch["input"], batch["sigma"]).clamp(0, 1)
        scores += (-10 * torch.log10((out - batch["target"]).pow(2).flatten(1).mean(1))).tolist()
    return {"psnr": round(sum(scores) / len(scores), 4), "images": len(scores), "sigma": sigma,
            "eval_size": eval_size, "rain": rain, "data": data.dataset_name}


def load_network(path: str | Path) -> nn.Module:
    """Rebuild a network exported by ``spikedistill export`` (in eval mode); run it with
    ``distill.modeling.run_model(net, x, sigma)``."""
    from teachers.weights import load_file, resolve_checkpoint

    file = resolve_checkpoint(path)
    return load_record(load_file(file), str(file))


def load_source(source: Path) -> nn.Module:
    """The network of a run's .ckpt or of a network file from `spikedistill export`, in eval mode."""
    if source.suffix == ".ckpt":
        return load_record(network_record(source), str(source))
    return load_network(source)


def export_nir(source: Path, output: Path, input_size: tuple[int, int] = (64, 64)) -> nir.NIRGraph:
    """Write the NIR graph (``nir.write``) of the network in ``source``, a run's .ckpt or a network file; returns it."""
    import nir

    from students.nir_graph import to_nir

    graph = to_nir(load_source(source), input_size)
    with atomic_path(output) as tmp:
        nir.write(tmp, graph)
    return graph


class FixedSigma(nn.Module):
    """A network that takes a noise level (``needs_sigma``), run at one fixed level: a module of the image alone."""

    def __init__(self, network: nn.Module, sigma: float):
        super().__init__()
        self.network = network
        self.register_buffer("sigma", torch.tensor([sigma / 255.0]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return run_model(self.network, x, self.sigma.expand(x.shape[0]))


def standalone(network: nn.Module, input_size: tuple[int, int], sigma: float | None = None
               ) -> tuple[nn.Module, torch.Tensor]:
    """The module to record (``network``, or it at the noise level ``sigma`` (0-255) when it takes one) and its
    example input, ``[1, C, H, W]`` uniform in [0, 1] (seeded)."""
    name = type(network).__name__
    takes_sigma = getattr(network, "needs_sigma", False)
    if takes_sigma and sigma is None:
        raise ConfigError(f"{name} takes a noise level: give --sigma S (0-255); the written module keeps it fixed")
    if not takes_sigma and sigma is not None:
        raise ConfigError(f"--sigma {sigma:g} is not allowed: {name} takes no noise level")
    height, width = (int(v) for v in input_size)
    if height < 1 or width < 1:
        raise ConfigError(f"input_size={tuple(input_size)!r} is not allowed; use (H, W) with both >= 1")
    example = torch.rand(1, network.in_channels, height, width, generator=torch.Generator().manual_seed(0))
    return (FixedSigma(network, sigma) if takes_sigma else network).eval(), example


def _record(module: nn.Module, example: torch.Tensor, fmt: str, name: str) -> Any:
    """``torch.jit.trace`` or ``torch.export.export`` of ``module`` on ``example``; a failure names the network."""
    try:
        with warnings.catch_warnings():  # the trace is for this input size: shape-dependent Python is expected
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            if fmt == "torchscript":
                return torch.jit.trace(module, example, check_trace=False)
            return torch.export.export(module, (example,))
    except Exception as exc:  # noqa: BLE001 - tracing and export raise many types; each becomes one message
        how = "torch.jit.trace" if fmt == "torchscript" else "torch.export.export"
        raise ConfigError(f"{name} cannot be written as --format {fmt}: {how} failed: "
                          f"{type(exc).__name__}: {_first_line(exc)}") from exc


def _first_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[0][:300] if lines else "(no message)"


@torch.no_grad()
def export_torch(source: Path | nn.Module, output: Path, fmt: str, input_size: tuple[int, int] = (64, 64),
                 sigma: float | None = None) -> nn.Module:
    """Write the network of ``source`` (a run's .ckpt, a network file, or a network) as a standalone module:
    ``fmt`` ``"torchscript"`` (``torch.jit.trace``, saved by ``torch.jit.save``) or ``"export"``
    (``torch.export``, saved by ``torch.export.save``). Spiking loops over T unroll at the network's T, and
    the module is for images ``[1, C, *input_size]`` (padding and shapes are fixed when recorded); a network
    that takes a noise level runs at ``sigma`` (0-255). The file is read back, and written only if its output
    on the example input equals our forward (``distill.modeling.run_model``). Returns the network."""
    if fmt not in TORCH_FORMATS:
        raise ConfigError(f"fmt={fmt!r} is not allowed; use one of {list(TORCH_FORMATS)}")
    network = source if isinstance(source, nn.Module) else load_source(Path(source))
    name = type(network).__name__
    module, example = standalone(network.eval(), input_size, sigma)
    expected = module(example)
    recorded = _record(module, example, fmt, name)
    with atomic_path(output) as tmp:
        try:
            if fmt == "torchscript":
                torch.jit.save(recorded, str(tmp))
                got = torch.jit.load(str(tmp))(example)
            else:
                torch.export.save(recorded, tmp)
                got = torch.export.load(tmp).module()(example)
        except Exception as exc:  # noqa: BLE001 - e.g. a Python function call that TorchScript cannot save
            raise ConfigError(f"{name} cannot be written as --format {fmt}: saving or loading it failed: "
                              f"{type(exc).__name__}: {_first_line(exc)}") from exc
        if got.shape != expected.shape or not torch.allclose(got, expected, rtol=1e-4, atol=1e-5):
            gap = (got - expected).abs().max().item() if got.shape == expected.shape else f"shape {tuple(got.shape)}"
            raise ConfigError(f"{name} cannot be written as --format {fmt}: the recorded module's output differs "
                              f"from our forward (max |difference| {gap}); nothing was written")
    return network


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="spikedistill export", description=__doc__)
    parser.add_argument("checkpoint", type=Path, help="a run's .ckpt (e.g. runs/NAME/checkpoints/last.ckpt); "
                        "for --format nir, torchscript and export also a network file; with --model any weight file")
    parser.add_argument("output", type=Path, help="where to write the network file (.pt), weights, NIR graph (.nir), "
                                                  "TorchScript module (.pt) or torch.export program (.pt2)")
    parser.add_argument("--format", choices=("network", "nir", "state_dict", *TORCH_FORMATS), default="network",
                        help="network: self-describing file (default); state_dict: the plain weights; "
                             "nir: a NIR graph of a spiking student (see students.nir_graph); torchscript / export: "
                             "a standalone module (torch.jit.trace / torch.export) for torch.jit.load / "
                             "torch.export.load, at a fixed --input-size")
    parser.add_argument("--state-dict-only", dest="format", action="store_const", const="state_dict",
                        help="the same as --format state_dict")
    parser.add_argument("--input-size", type=int, nargs=2, default=(64, 64), metavar=("H", "W"),
                        help="image size of the NIR graph or PyTorch module (their shapes are fixed; default 64 64)")
    parser.add_argument("--sigma", type=float, metavar="S",
                        help="torchscript / export of a network that takes a noise level (FFDNet): the fixed level S "
                             "(0-255) the module runs at")
    parser.add_argument("--model", type=Path, metavar="BLOCK",
                        help="wrap a weight file that is not a run (a plain state dict, a KAIR/BasicSR release): "
                             "the model block (YAML with class_path and init_args) whose class reads it")
    parser.add_argument("--recipe", help="with --model: the recipe that trained the weights, kept in the provenance")
    check = parser.add_mutually_exclusive_group()
    check.add_argument("--check-sigma", type=float, metavar="S",
                       help="record the network's PSNR on the embedded held-out photos at noise level S (0-255)")
    check.add_argument("--check-rain", metavar="PRESET", help="the same, on synthetic rain of PRESET (light, heavy)")
    args = parser.parse_args(argv)
    checking = args.check_sigma is not None or args.check_rain is not None
    if (args.model is not None or checking) and args.format != "network":
        parser.error(f"--model and --check-* make a network file; --format {args.format} is not allowed with them")
    if args.sigma is not None and args.format not in TORCH_FORMATS:
        parser.error(f"--sigma is for --format torchscript or export; --format {args.format} is not allowed with it")
    if args.format in TORCH_FORMATS:
        network = export_torch(args.checkpoint, args.output, args.format, tuple(args.input_size), args.sigma)
        written = (f"a standalone {type(network).__name__} for [1, {network.in_channels}, {args.input_size[0]}, "
                   f"{args.input_size[1]}] images (load it with {TORCH_FORMATS[args.format]})")
    elif args.format == "nir":
        graph = export_nir(args.checkpoint, args.output, tuple(args.input_size))
        written = f"a NIR graph of {len(graph.nodes)} nodes"
    elif args.format == "state_dict":
        weights = network_state_dict(args.checkpoint)
        with atomic_path(args.output) as tmp:
            torch.save(weights, tmp)
        written = f"{len(weights)} tensors"
    else:
        if args.model is None:
            record = network_record(args.checkpoint)
        else:
            record = wrap_weights(args.checkpoint, args.model, {"recipe": args.recipe} if args.recipe else None)
        if checking:
            network = load_record(record, str(args.checkpoint))
            record["provenance"]["embedded_check"] = embedded_check(
                network, args.check_sigma if args.check_sigma is not None else 0.0, rain=args.check_rain)
        written = f"{len(save_record(record, args.output)['state_dict'])} tensors"
    from teachers.weights import sha256_file

    print(f"wrote {written} to {args.output} (sha256 {sha256_file(args.output)})")
