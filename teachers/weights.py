"""Load teacher weights from the project's checkpoints, plain state dicts and KAIR/BasicSR releases.

Accepted file contents (the layout is detected, never named by the caller):

* a plain state dict, ``torch.save(model.state_dict(), path)``;
* a Lightning checkpoint of this project (``.ckpt``): a dict whose ``state_dict`` keys carry the
  attribute path of the model inside the LightningModule, e.g. ``model.`` (``RestorationModule``)
  or ``teacher.`` (``DistillationModule``). The prefix is found automatically: the one under which
  the keys fit the model best is stripped, and keys outside it (a student, adapters) are ignored.
  When two prefixes fit equally well pass ``prefix=`` (e.g. ``prefix="teacher."``);
* a BasicSR/Restormer release, a dict with ``params`` (or ``params_ema``);
* a KAIR release (``dncnn_15.pth``, ``ffdnet_gray.pth`` ...), whose keys follow KAIR's flat
  ``model.N.*`` layout. A model that can read such a file provides ``kair_key_map()``, a dict
  ``{KAIR key: own key}``; the KAIR names are translated when they fit better than the raw ones.

Files are read with ``torch.load(weights_only=True)``. Only a ``.ckpt`` that this restricted
unpickler refuses is read again with ``weights_only=False``: Lightning pickles the module's
hyperparameters (jsonargparse ``Namespace`` objects, ``AttributeDict``, loop and callback state)
into it, which the restricted unpickler cannot rebuild. ``.ckpt`` files are produced by this
project's own runs, so they are trusted; downloaded ``.pth``/``.pt`` files never are.
"""
from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from spikedistill_core.errors import CheckpointError

__all__ = ["REPO_ROOT", "load_weights", "load_file", "resolve_checkpoint", "sha256_file", "read_state_dict"]

#: Repository root (the parent of the ``teachers`` package); relative paths fall back to it.
REPO_ROOT: Path = Path(__file__).resolve().parent.parent

#: Prefixes preferred, in this order, when several fit a model equally well.
PREFERRED_PREFIXES: tuple[str, ...] = ("", "teacher.", "model.", "net.", "module.")

#: How many names of each kind a mismatch error lists before "... and N more".
MAX_LISTED = 10


def resolve_checkpoint(path: str | os.PathLike) -> Path:
    """Return the absolute path of `path`: as given, else relative to the cwd, else to the repo root."""
    given = Path(path).expanduser()
    if given.is_absolute():
        candidates = [given]
    else:
        candidates = [Path.cwd() / given, REPO_ROOT / given]
    for candidate in candidates:
        if candidate.is_file():
            return candidate.resolve()
    for candidate in candidates:
        if candidate.exists():
            raise CheckpointError(f"checkpoint {str(path)!r} is not a file: {candidate}")
    tried = ", ".join(str(c) for c in candidates)
    raise CheckpointError(f"checkpoint file not found: {str(path)!r} (tried {tried})")


def sha256_file(path: str | os.PathLike, chunk_size: int = 1 << 20) -> str:
    """Return the hex SHA-256 of the file at `path`, read in chunks."""
    file = Path(path)
    digest = hashlib.sha256()
    try:
        with open(file, "rb") as fh:
            for chunk in iter(lambda: fh.read(chunk_size), b""):
                digest.update(chunk)
    except FileNotFoundError:
        raise CheckpointError(f"cannot hash {str(file)!r}: file not found") from None
    except OSError as exc:
        raise CheckpointError(f"cannot hash {str(file)!r}: {exc}") from exc
    return digest.hexdigest()


def load_file(file: Path) -> Any:
    """torch.load on CPU; weights_only=True except for a refused project `.ckpt` (see module doc)."""
    try:
        return torch.load(file, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises UnpicklingError, RuntimeError, EOFError, ValueError ...
        text = str(exc).lower()  # a refused global (a pickled object), not bytes that are no pickle at all
        restricted = "weights only load failed" in text and ("global" in text or "unsupported class" in text)
        if file.suffix == ".ckpt":
            try:
                return torch.load(file, map_location="cpu", weights_only=False)
            except Exception as exc2:
                raise CheckpointError(
                    f"cannot read checkpoint {str(file)!r}: corrupt or not a PyTorch file "
                    f"({type(exc2).__name__}: {_first_line(exc2)})"
                ) from exc2
        if restricted:
            raise CheckpointError(
                f"checkpoint {str(file)!r} holds pickled objects besides tensors, which are not "
                "loaded from untrusted files; re-save it as torch.save(model.state_dict(), path) "
                f"({_first_line(exc)})"
            ) from exc
        raise CheckpointError(
            f"cannot read checkpoint {str(file)!r}: corrupt or not a PyTorch file "
            f"({type(exc).__name__}: {_first_line(exc)})"
        ) from exc


def _first_line(exc: BaseException) -> str:
    """The gist of a torch.load error: its first line, or the unpickler's reason after torch's boilerplate."""
    text = str(exc).strip()
    reason = text.partition("WeightsUnpickler error:")[2].strip()
    return (reason or text).splitlines()[0][:200] if text else type(exc).__name__


def read_state_dict(path: str | os.PathLike) -> tuple[dict[str, Any], Path]:
    """Read the raw state dict held by a checkpoint file; returns it with the resolved path."""
    file = resolve_checkpoint(path)
    obj = load_file(file)
    if isinstance(obj, Mapping):
        for key in ("state_dict", "params_ema", "params", "model_state_dict"):  # BasicSR tests with EMA
            inner = obj.get(key)
            if isinstance(inner, Mapping):
                obj = inner
                break
    if not isinstance(obj, Mapping):
        raise CheckpointError(
            f"checkpoint {str(file)!r} holds a {type(obj).__name__}, not a state dict "
            "(expected a dict of tensors or a Lightning checkpoint with 'state_dict')"
        )
    state = {str(k): v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    if not state:
        raise CheckpointError(f"checkpoint {str(file)!r} holds no tensors")
    return state, file


def _prefix_order(p: str) -> tuple:
    return (0, PREFERRED_PREFIXES.index(p)) if p in PREFERRED_PREFIXES else (1, len(p), p)


def _relevant_prefixes(keys: list[str], known: set[str]) -> list[str]:
    """Dot-boundary prefixes under which at least one key names a known parameter."""
    found = {""}
    for key in keys:
        parts = key.split(".")
        for i in range(1, len(parts)):
            if ".".join(parts[i:]) in known:
                found.add(".".join(parts[:i]) + ".")
    return sorted(found, key=_prefix_order)


def _candidates(state: dict[str, Any], model: nn.Module, prefix: str | None):
    """Yield (prefix, description, translated state dict) for each reading of `state`."""
    kair_map: dict[str, str] = {}
    if callable(getattr(model, "kair_key_map", None)):
        kair_map = dict(model.kair_key_map())
    known = set(model.state_dict()) | set(kair_map)
    prefixes = [prefix] if prefix is not None else _relevant_prefixes(list(state), known)
    for p in prefixes:
        sub = {k[len(p):]: v for k, v in state.items() if k.startswith(p)}
        if not sub:
            continue
        label = f"prefix {p!r}" if p else "no prefix"
        yield p, label, sub
        if kair_map and any(k in kair_map for k in sub):
            yield p, f"{label}, KAIR layout", {kair_map.get(k, k): v for k, v in sub.items()}


def _choose(state: dict[str, Any], model: nn.Module, prefix: str | None, file: Path):
    own_keys = set(model.state_dict())
    best: tuple[int, str, dict[str, Any]] | None = None
    exact: list[tuple[str, str, dict[str, Any]]] = []
    for p, label, cand in _candidates(state, model, prefix):
        keys = set(cand)
        if keys <= own_keys and _only_bn_counters_missing(own_keys - keys):
            exact.append((p, label, cand))
        score = len(keys & own_keys)
        if best is None or score > best[0]:
            best = (score, label, cand)
    if best is None:
        raise CheckpointError(f"checkpoint {str(file)!r} has no keys starting with prefix {prefix!r}")
    if exact:
        fitting = sorted({p for p, _, _ in exact}, key=_prefix_order)
        if len(fitting) > 1 and fitting[0] not in PREFERRED_PREFIXES:
            raise CheckpointError(
                f"checkpoint {str(file)!r} holds several models that fit {type(model).__name__} "
                f"(prefixes {fitting}); choose one with prefix="
            )
        return next((label, cand) for p, label, cand in exact if p == fitting[0])
    return best[1], best[2]


def _only_bn_counters_missing(missing: set[str]) -> bool:
    return all(k.endswith("num_batches_tracked") for k in missing)


def _listed(items: list[str]) -> str:
    shown = items[:MAX_LISTED]
    more = len(items) - len(shown)
    return ", ".join(shown) + (f" ... and {more} more" if more > 0 else "")


def load_weights(model: nn.Module, path: str | os.PathLike, *, prefix: str | None = None) -> Path:
    """Load the weights in `path` into `model` (strict); return and store the resolved path.

    Raises ``CheckpointError`` (naming the file) when the file is missing or unreadable, or when
    its keys or shapes do not match `model`: the message lists missing keys, unexpected keys and
    mis-shaped keys (name, expected shape, found shape), each truncated to ``MAX_LISTED``.
    After success ``model.checkpoint_path`` is the resolved absolute path.
    """
    state, file = read_state_dict(path)
    label, cand = _choose(state, model, prefix, file)
    own = model.state_dict()
    # listed in the model's (or the file's) own order, so body.2 comes before body.10
    missing = [k for k in own if k not in cand and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in cand if k not in own]
    misshaped = [
        f"{k} (expected {tuple(own[k].shape)}, found {tuple(cand[k].shape)})"
        for k in own
        if k in cand and tuple(own[k].shape) != tuple(cand[k].shape)
    ]
    if missing or unexpected or misshaped:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing keys: {_listed(missing)}")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected keys: {_listed(unexpected)}")
        if misshaped:
            parts.append(f"{len(misshaped)} mis-shaped keys: {_listed(misshaped)}")
        raise CheckpointError(
            f"checkpoint {str(file)!r} does not fit {type(model).__name__} (read with {label}): "
            + "; ".join(parts)
        )
    for key, value in own.items():  # BN counters absent from old files keep the model's own value
        cand.setdefault(key, value)
    model.load_state_dict(cand, strict=True)
    model.checkpoint_path = file
    return file
