"""LightningCLI for fit/validate/test/predict; the `spikedistill` entry point (`distill.entry`) loads it to train."""
from __future__ import annotations

import importlib
import re
import sys
from pathlib import Path
from typing import Any, Literal, Optional

import yaml
from lightning.pytorch import Trainer
from lightning.pytorch.callbacks import BasePredictionWriter, ModelCheckpoint, ProgressBar
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI
from lightning.pytorch.plugins.io import CheckpointIO

from distill.callbacks import RunReport, run_callbacks
from distill.checkpointing import AtomicCheckpointIO, LatestCheckpoint
# the entry point's names (`spikedistill` itself is distill.entry:main, which loads this module only to train)
from distill.entry import EXTRA_COMMANDS, LIGHTNING_COMMANDS, main, user_error  # noqa: F401
from distill.indexed_keys import apply_indexed, split_indexed
from distill.prediction import PNGWriter
from distill.progress import progress_bar
from distill.tracking import WANDB_MODES, WandbConfig, default_loggers, finish_wandb, wandb_mode


def default_run_dir(config_paths: list[Any] | None) -> str:
    """`runs/<recipe>`; layered recipes join their names (`runs/quickstart_hint+quickstart_hint_nohint`)."""
    if config_paths:
        return str(Path("runs") / "+".join(Path(str(p)).stem for p in config_paths))
    return str(Path("runs") / "default")


def find_last_checkpoint(trainer: Trainer) -> str | None:
    """The newest of the run's `last*.ckpt` (every ModelCheckpoint folder) and SLURM `hpc_ckpt_*.ckpt` files."""
    found: list[Path] = []
    for callback in trainer.checkpoint_callbacks:
        if isinstance(callback, ModelCheckpoint) and callback.dirpath:
            found += Path(callback.dirpath).glob("last*.ckpt")
    found += Path(trainer.default_root_dir).glob("hpc_ckpt_*.ckpt")
    found = [p for p in found if p.is_file()]
    return str(max(found, key=lambda p: p.stat().st_mtime)) if found else None


#: Lines of jsonargparse's nested errors that say nothing to a recipe author (the `null` alternative of
#: optional arguments, the union bookkeeping and the echo of the whole given value).
_NOISE = re.compile(
    r"^\s*(- )?(Expected a <class 'NoneType'>|Does not validate against any of the Union subtypes|"
    r"Subtypes: |Errors:$|Given value type: |Given value: )"
)


def _accepted_names(class_path: str) -> list[str]:
    """Init argument names of the class at `class_path`, following `**kwargs` into the base classes as
    jsonargparse does (empty when it cannot be imported)."""
    import inspect

    module, _, name = class_path.rpartition(".")
    try:
        cls = getattr(importlib.import_module(module), name)
    except Exception:  # noqa: BLE001 - a suggestion is optional
        return []
    names: list[str] = []
    for klass in cls.__mro__:
        if "__init__" not in vars(klass):
            continue
        params = list(inspect.signature(klass.__init__).parameters.values())
        names += [p.name for p in params
                  if p.name != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD) and p.name not in names]
        if not any(p.kind is p.VAR_KEYWORD for p in params):
            break
    return names


def _suggest(word: str, names: list[str]) -> str:
    import difflib

    close = difflib.get_close_matches(word, names, n=3, cutoff=0.6)
    return f" (did you mean {' or '.join(repr(c) for c in close)}?)" if close else ""


def tidy_parse_error(message: str) -> str:
    """jsonargparse's error message without the lines in `_NOISE`; what names the key and value stays.

    An unknown option of an injected class or of the trainer gets the closest accepted names.
    """
    lines = [line for line in message.splitlines() if not _NOISE.match(line)]
    class_path = None
    for i, line in enumerate(lines):
        found = re.search(r"class_path '([\w.]+)'", line)
        if found:
            class_path = found.group(1)
        if "(did you mean" in line:  # nested parsers report the same message again
            continue
        unknown = re.search(r"Option '(\w+)' is not accepted", line)
        inline = re.search(r"class_path='([\w.]+)'", line)  # callables (optimizer, scheduler) echo theirs
        owner = inline.group(1) if inline else class_path
        if unknown and owner:
            lines[i] = line + _suggest(unknown.group(1), _accepted_names(owner))
        unknown = re.search(r"does not accept option '(trainer|data|model)\.(\w+)'", line)
        if unknown and unknown.group(1) == "trainer":
            lines[i] = line + _suggest(unknown.group(2), _accepted_names("lightning.pytorch.Trainer"))
    return "\n".join(lines) if lines else message


class SpikeDistillParser(LightningArgumentParser):
    """The CLI parser: named `spikedistill`, a one-line usage and a tidied message on errors."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("prog", "spikedistill")
        super().__init__(*args, **kwargs)

    def print_usage(self, file: Any = None) -> None:
        prog = self.prog.replace(" [options]", "")
        (file or sys.stderr).write(f"usage: {prog} [--config RECIPE.yaml ...] [--KEY VALUE ...]\n")

    def error(self, message: str, ex: Exception | None = None) -> Any:
        return super().error(tidy_parse_error(message), ex)


class SpikeDistillCLI(LightningCLI):
    """LightningCLI with omegaconf interpolation, per-run directories, default loggers, atomic checkpoints and
    the run's callbacks (energy, convergence, report: `distill.callbacks.run_callbacks`)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("parser_class", SpikeDistillParser)
        kwargs.setdefault("subclass_mode_model", True)
        kwargs.setdefault("subclass_mode_data", True)
        kwargs.setdefault("auto_configure_optimizers", False)
        kwargs.setdefault("save_config_kwargs", {"overwrite": True})
        kwargs.setdefault("parser_kwargs", {"parser_mode": "omegaconf"})
        kwargs.setdefault("trainer_defaults", {"callbacks": run_callbacks()})
        super().__init__(*args, **kwargs)

    def parse_arguments(self, parser: LightningArgumentParser, args: Any) -> None:
        """Also accept keys that address a list entry by index (`--model.init_args.hints.0.weight=0.5`):
        the list is resolved from the rest of the command line, edited and passed back whole."""
        if not (args is None or isinstance(args, (list, tuple))):  # a dict or Namespace config
            return super().parse_arguments(parser, args)
        words, indexed = split_indexed(list(sys.argv[1:] if args is None else args))
        if indexed and not {"-h", "--help"} & set(words):
            resolved = parser.parse_args([w for w in words if not w.startswith("--print_config")])
            prefix = f"{resolved.subcommand}." if resolved.get("subcommand") else ""
            words += apply_indexed(indexed, lambda key: resolved.get(prefix + key))
        self.config = parser.parse_args(words)  # what LightningCLI does, without its warning on argv

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        """`wandb_mode` and `tensorboard`: what the default loggers do (a recipe may set them too)."""
        mode = Optional[Literal[WANDB_MODES]]  # type: ignore[valid-type]
        parser.add_argument("--wandb_mode", type=mode, default=None,
                            help="wandb for the default loggers: online, offline or disabled (null: WANDB_MODE, "
                                 "else online under `wandb agent`, else offline)")
        parser.add_argument("--tensorboard", type=bool, default=False,
                            help="also log to TensorBoard in <run>/tensorboard (needs the tensorboard package)")

    def _section(self, config: Any) -> Any:
        """The part of a (parsed or instantiated) config that belongs to the subcommand being run."""
        return config[self.subcommand] if self.subcommand else config

    def before_instantiate_classes(self) -> None:
        config = self._section(self.config)
        if not config.trainer.default_root_dir:
            config.trainer.default_root_dir = default_run_dir(config.get("config"))
        if self.subcommand == "predict" and config.get("return_predictions") is None:
            config.return_predictions = False  # images are written by PNGWriter, not kept in memory

    def instantiate_trainer(self, **kwargs: Any) -> Trainer:
        """Add the defaults a run needs unless the recipe set its own: CSV + wandb loggers (`distill.tracking`;
        predict logs, and writes its config.yaml, only with `--trainer.logger=true`, into `<run>/predict`), a progress
        bar or, when stdout is not a terminal, progress lines (`distill.progress`), a `last.ckpt` in
        `<run>/checkpoints`, checkpoints written atomically (also next to plugins the recipe sets, unless one of them
        is a CheckpointIO), and for predict a PNGWriter that tiles as the datamodule's `tile_size` and
        `tile_overlap` say."""
        section = self._section(self.config_init)
        config = section.trainer
        root = Path(config.default_root_dir)
        predict = self.subcommand == "predict"
        if predict and config.get("logger") is not True:
            self.save_config_callback = None  # predict writes only its images unless asked for logs
        if config.get("logger") is True or (config.get("logger") is None and not predict):
            kwargs["logger"] = default_loggers(root / "predict" if predict else root,
                                               wandb_mode(section.get("wandb_mode")), section.get("tensorboard"))
        elif config.get("logger") is None:
            kwargs["logger"] = False
        given = config.get("callbacks") or []
        callbacks = list(given) if isinstance(given, (list, tuple)) else [given]
        if config.get("enable_progress_bar") is not False and not any(isinstance(c, ProgressBar) for c in callbacks):
            callbacks.append(progress_bar())
        callbacks.append(WandbConfig())
        if config.get("enable_checkpointing", True) is not False and not any(
            isinstance(c, ModelCheckpoint) for c in callbacks
        ):
            callbacks += [ModelCheckpoint(dirpath=root / "checkpoints", filename="best-{step}", monitor="val/psnr",
                                          mode="max", save_top_k=1),
                          LatestCheckpoint(root / "checkpoints")]
        if self.subcommand == "predict" and not any(isinstance(c, BasePredictionWriter) for c in callbacks):
            callbacks.append(PNGWriter(tile_size=getattr(self.datamodule, "tile_size", None),
                                       tile_overlap=getattr(self.datamodule, "tile_overlap", 0)))
        kwargs["callbacks"] = callbacks
        plugins = config.get("plugins") or []
        plugins = list(plugins) if isinstance(plugins, (list, tuple)) else [plugins]
        if not any(isinstance(p, CheckpointIO) for p in plugins):
            kwargs["plugins"] = plugins + [AtomicCheckpointIO()]
        return super().instantiate_trainer(**kwargs)

    def after_instantiate_classes(self) -> None:
        """Hand the run's whole config (as `config.yaml` records it) to the run report, for results.json, and to
        wandb's run config."""
        dump = yaml.safe_load(self.parser.dump(self.config, skip_link_targets=False, skip_none=False, format="yaml"))
        for callback in self.trainer.callbacks:
            if isinstance(callback, (RunReport, WandbConfig)):
                callback.config = self._section(dump)

    def resolve_last_checkpoint(self) -> None:
        """`--ckpt_path last` resumes from the newest `last.ckpt` or SLURM `hpc_ckpt_N.ckpt` of the run
        (Lightning alone ignores the SLURM ones); with neither, training starts from scratch."""
        config = self._section(self.config_init)
        if config.get("ckpt_path") == "last":
            config.ckpt_path = find_last_checkpoint(self.trainer) or "last"

    # run before each subcommand, which takes its ckpt_path from `config_init`
    before_fit = before_validate = before_test = before_predict = resolve_last_checkpoint

    def after_fit(self) -> None:
        """Score the fitted model on the held-out split, write results.json, print the table."""
        if self.trainer.interrupted:
            return
        self.trainer.test(self.model, datamodule=self.datamodule, verbose=False)
        self._report()

    def after_test(self) -> None:
        self._report()

    def _report(self) -> None:
        if self.trainer.is_global_zero:
            from distill.report import print_results

            print_results(Path(self.trainer.default_root_dir))


def run_lightning(argv: list[str] | None) -> None:
    """fit / validate / test / predict through LightningCLI (`None` reads sys.argv); the wandb run it started ends
    with it."""
    failed = True
    try:
        SpikeDistillCLI(args=argv)
        failed = False
    finally:
        finish_wandb(exit_code=int(failed))


if __name__ == "__main__":
    main()
