"""Command-line keys that address one list entry by index, such as `--model.init_args.hints.0.weight=0.5`.

jsonargparse accepts only whole lists on the command line, but sweeps (wandb's format, and users) address
one entry. These keys are taken out of argv, applied to the list as the rest of the command line resolves
it, and the whole list goes back to jsonargparse as one ordinary override, so it is validated as usual.
"""
from __future__ import annotations

import copy
import json
import re
from dataclasses import dataclass
from typing import Any, Callable

import yaml

from distill.errors import ConfigError

_INDEXED_KEY = re.compile(r"^--(?P<key>[A-Za-z_][\w]*(?:\.\w+)*\.\d+(?:\.\w+)*)(?:=(?P<value>.*))?$", re.S)


@dataclass(frozen=True)
class IndexedOverride:
    """`list_key`'s entry `index`, at `path` inside that entry (empty: the entry itself), set to `value`."""

    list_key: str
    index: int
    path: tuple[str, ...]
    value: Any

    @property
    def key(self) -> str:
        return ".".join([self.list_key, str(self.index), *self.path])


def split_indexed(words: list[str]) -> tuple[list[str], list[IndexedOverride]]:
    """argv without its indexed keys (`--a.b.0.c=v` or `--a.b.0.c v`), and those keys parsed."""
    rest: list[str] = []
    found: list[IndexedOverride] = []
    i = 0
    while i < len(words):
        match = _INDEXED_KEY.match(words[i])
        if match is None:
            rest.append(words[i])
            i += 1
            continue
        raw = match.group("value")
        if raw is None:
            if i + 1 >= len(words):
                raise ConfigError(f"--{match.group('key')} needs a value")
            raw = words[i + 1]
            i += 1
        i += 1
        parts = match.group("key").split(".")
        at = next(n for n, part in enumerate(parts) if part.isdigit())
        found.append(IndexedOverride(".".join(parts[:at]), int(parts[at]), tuple(parts[at + 1:]), yaml.safe_load(raw)))
    return rest, found


def plain(value: Any) -> Any:
    """A parsed config value as plain dicts and lists (jsonargparse Namespaces become dicts)."""
    if hasattr(value, "as_dict"):
        value = value.as_dict()
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    return value


def apply_indexed(overrides: list[IndexedOverride], lookup: Callable[[str], Any]) -> list[str]:
    """Whole-list overrides (`--a.b=[...]`) for `overrides`; `lookup(key)` gives a list's current value."""
    lists: dict[str, list[Any]] = {}
    for override in overrides:
        if override.list_key not in lists:
            current = plain(lookup(override.list_key))
            if not isinstance(current, list):
                raise ConfigError(f"--{override.key}: {override.list_key} is not a list here (its value is "
                                  f"{current!r}), so it has no entry {override.index}")
            lists[override.list_key] = copy.deepcopy(current)
        _set(lists[override.list_key], override)
    return [f"--{key}={json.dumps(value)}" for key, value in lists.items()]


def _set(entries: list[Any], override: IndexedOverride) -> None:
    if not 0 <= override.index < len(entries):
        valid = f"0..{len(entries) - 1}" if entries else "none, the list is empty"
        raise ConfigError(f"--{override.key}: {override.list_key} has {len(entries)} "
                          f"entr{'y' if len(entries) == 1 else 'ies'}; valid indices: {valid}")
    if not override.path:
        entries[override.index] = override.value
        return
    node: Any = entries[override.index]
    for depth, part in enumerate(override.path):
        where = ".".join([override.list_key, str(override.index), *override.path[:depth]])
        if isinstance(node, dict):
            if part not in node:
                raise ConfigError(f"--{override.key}: {where} has no key {part!r}; valid keys: "
                                  f"{', '.join(sorted(map(str, node)))}")
            key: Any = part
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            key = int(part)
        else:
            raise ConfigError(f"--{override.key}: cannot address {part!r} inside {where} (value {node!r})")
        if depth == len(override.path) - 1:
            node[key] = override.value
        else:
            node = node[key]
