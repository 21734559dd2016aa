"""Operation counts and energy per layer: MACs for the ANN teacher, ACs/MACs for the spiking student.

How counting works
------------------
The model runs once per batch (eval mode, ``torch.no_grad()``) under
:class:`torch.utils.flop_counter.FlopCounterMode`. Every operation that mode knows how to count
(convolutions incl. transposed and depthwise, ``mm``/``addmm``/``bmm``/``baddbmm`` -- i.e. linear
layers, ``torch.matmul``/``einsum`` in attention -- and scaled-dot-product attention) is
intercepted with the real tensors, so attention matmuls and other non-convolution work are
included (torch's table lacks the CPU SDPA kernel ``_scaled_dot_product_flash_attention_for_cpu``;
it is added here with torch's own SDPA formula). MACs = FLOPs / 2 (every counted formula counts
2 FLOPs per multiply-accumulate). Element-wise work (residual and bias additions, norms,
activations, softmax, neuron dynamics) is not counted as MACs; neuron dynamics can be charged separately (``count_neuron_updates=True``).

Each counted call is attributed to the innermost module executing it (its ``named_modules`` path;
``(model)`` for work done directly in the model's own ``forward``). A module that issues several
kinds of counted work gets one row per kind, named ``path [op]`` (e.g. ``attn [bmm]``).

Spike or analog input (student only)
------------------------------------
A student layer runs on the folded ``T*B`` batch (or T times on ``B``), so its MACs already cover
all T steps. If its input is spikes it is charged ``MACs x input firing rate`` accumulates (each
incoming spike costs its fan-out); if the input is analog it is charged its MACs. The rule:

    an input tensor counts as **spikes** iff the model is spiking and either
      (a) provenance: it shares storage with the output of a spiking neuron recorded earlier in
          the same forward pass (views, reshapes, the ``[T,B] -> [T*B]`` fold of TimeDistributed)
          and has at most 256 distinct values (guards against analog values written in place;
          allows graded multi-threshold outputs with many levels), or
      (b) values: it has at most 16 distinct values (including 0), all >= 0, and every non-zero
          value is an integer multiple
          ``n * l`` (1 <= n <= 16) of a spike level ``l``, where the levels are 1.0 and the
          distinct non-zero values emitted by the neurons seen so far (thresholds of
          ``MultiThresholdIF``, a learned threshold, ...). This covers concatenated skip
          connections of spikes, sums of spike maps, max-pooled spikes and zero padding.

Everything else is **analog** (the directly encoded first layer fed by the image, ANN heads,
attention over membrane potentials, average-pooled spikes). Model parameters are never spikes.
The input firing rate is the fraction of non-zero input elements; a graded spike (the
``MultiThresholdIF`` output ``theta * sum of fired levels``) costs one AC per synapse like a binary one.
Counts are of the work actually executed: ``TimeDistributed`` runs a time-broadcast input (direct
encoding via ``broadcast_time``) once on B instead of T*B, so that layer's MACs are counted once.
For a matmul with two activation operands: one spike operand -> ``MACs x its rate``; both spike
operands -> the exact number of non-zero products (an accumulate happens only when both are
non-zero). For attention (SDPA) the ``QK^T`` and ``PV`` products are rows of their own; ``PV``
is an AC product only if ``V`` is spikes (``P`` is the analog softmax output).
Neurons are found by ``isinstance(m, students.neurons.SpikingNeuron)``,
``snntorch.SpikingNeuron``, or duck typing: a module with ``threshold``, ``spike_grad`` and
``probe`` attributes.

A caveat of rule (b): in a spiking model an *image* with values only in {0, 1} (a binary test
pattern) counts as spikes -- which is what it is in hardware; real images have many more levels.

Energy model
------------
``energy = MACs x E_MAC + ACs x E_AC (+ neuron updates x E_neuron)``, per image, where MACs are
the MACs charged as multiply-accumulates (analog-input layers). All counts are per image: totals
over the batch divided by the number of images B (not by ``T*B``, so the T scaling shows).

Presets (Horowitz, "Computing's energy problem (and what we can do about it)", ISSCC 2014,
45 nm, 0.9 V; the per-operation table most SNN papers cite):

===============  ========================  ===============  =================
preset           E_MAC (mult + add)        E_AC (add)       note
===============  ========================  ===============  =================
``45nm-fp32``    3.7 + 0.9 = 4.6 pJ        0.9 pJ           the usual SNN-paper numbers
``45nm-fp16``    1.1 + 0.4 = 1.5 pJ        0.4 pJ
``45nm-int32``   3.1 + 0.1 = 3.2 pJ        0.1 pJ
``45nm-int8``    0.2 + 0.03 = 0.23 pJ      0.03 pJ          8-bit accumulate (a 32-bit
                                                            accumulator would be 0.2 + 0.1)
===============  ========================  ===============  =================
"""
from __future__ import annotations

import csv
import math
import weakref
from collections.abc import Iterable, Mapping
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any

import snntorch
import torch
from torch import nn

from distill.errors import ConfigError
from distill.formatting import si
from distill.io import atomic_path
from spikedistill_core.checks import check_number
from students.neurons import SpikingNeuron

__all__ = [
    "EnergyConstants",
    "PRESETS",
    "DEFAULT_PRESET",
    "resolve_constants",
    "LayerEnergy",
    "EnergyReport",
    "measure_energy",
    "energy_ratio",
    "format_comparison",
    "find_spiking_neurons",
    "MAX_SPIKE_LEVELS",
]

MAX_SPIKE_LEVELS = 16  # distinct values (including 0) a spike tensor may have
_MAX_MULTIPLE = 16  # a non-zero spike value may be n * level with 1 <= n <= this
_MAX_NEURON_VALUES = 256  # a recorded neuron output with more distinct values is not spikes
_SAMPLE = 65536  # elements looked at first, to reject analog tensors cheaply
_ROOT_NAME = "(model)"


# --------------------------------------------------------------------------------------------
# constants


@dataclass(frozen=True)
class EnergyConstants:
    """Energy per operation in picojoules. Negative or non-finite values raise ConfigError."""

    e_mac_pj: float
    e_ac_pj: float
    e_neuron_pj: float = 0.0
    name: str = "custom"

    def __post_init__(self) -> None:
        for f in ("e_mac_pj", "e_ac_pj", "e_neuron_pj"):
            object.__setattr__(self, f, check_number(f"energy constant {f}", getattr(self, f), 0, hint=" (picojoules)"))
        if not isinstance(self.name, str) or not self.name:
            raise ConfigError(f"energy constants name must be a non-empty string, got {self.name!r}")

    def describe(self) -> str:
        return (f"{self.name}: E_MAC {self.e_mac_pj:g} pJ, E_AC {self.e_ac_pj:g} pJ, "
                f"E_neuron {self.e_neuron_pj:g} pJ")

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "e_mac_pj": self.e_mac_pj, "e_ac_pj": self.e_ac_pj,
                "e_neuron_pj": self.e_neuron_pj}


#: Horowitz (ISSCC 2014), 45 nm: see the module docstring for the table.
PRESETS: dict[str, EnergyConstants] = {
    "45nm-fp32": EnergyConstants(e_mac_pj=4.6, e_ac_pj=0.9, name="45nm-fp32"),
    "45nm-fp16": EnergyConstants(e_mac_pj=1.5, e_ac_pj=0.4, name="45nm-fp16"),
    "45nm-int32": EnergyConstants(e_mac_pj=3.2, e_ac_pj=0.1, name="45nm-int32"),
    "45nm-int8": EnergyConstants(e_mac_pj=0.23, e_ac_pj=0.03, name="45nm-int8"),
}
DEFAULT_PRESET = "45nm-fp32"

#: the counting rule, written into every report so a cited number says how it was counted
ACCOUNTING = (
    "MACs from FlopCounterMode (flops/2, attention included); a layer whose input is spikes costs "
    "MACs x (fraction of non-zero inputs) accumulates, a graded spike (e.g. multi-threshold) one AC per synapse; "
    "analog inputs cost MACs; elementwise work (norms, residual adds, neuron dynamics) is not counted unless "
    "neuron updates are requested"
)

_CONSTANT_KEYS = ("e_mac_pj", "e_ac_pj", "e_neuron_pj", "name")


def _unknown_preset(name: Any) -> ConfigError:
    return ConfigError(f"unknown energy preset {name!r}; choose one of: {', '.join(PRESETS)} "
                       f"or give {{e_mac_pj, e_ac_pj[, e_neuron_pj, name]}}")


def resolve_constants(spec: str | Mapping[str, Any] | EnergyConstants) -> EnergyConstants:
    """Energy constants from a preset name, a recipe dict, or an EnergyConstants.

    Dict forms: ``{"e_mac_pj": 4.6, "e_ac_pj": 0.9, "e_neuron_pj": 0.0, "name": "mine"}``, or a
    preset with overrides: ``{"preset": "45nm-int8", "e_neuron_pj": 0.05}``.
    """
    if isinstance(spec, EnergyConstants):
        return spec
    if isinstance(spec, str):
        if spec not in PRESETS:
            raise _unknown_preset(spec)
        return PRESETS[spec]
    if isinstance(spec, Mapping):
        values = dict(spec)
        unknown = sorted(set(values) - set(_CONSTANT_KEYS) - {"preset"})
        if unknown:
            raise ConfigError(f"unknown energy constant key(s) {unknown}; allowed: "
                              f"{', '.join(('preset',) + _CONSTANT_KEYS)}")
        preset = values.pop("preset", None)
        if preset is not None:
            if not isinstance(preset, str) or preset not in PRESETS:
                raise _unknown_preset(preset)
            base = PRESETS[preset].to_dict()
            if values and "name" not in values:
                values["name"] = f"{preset}+custom"
            base.update(values)
            values = base
        missing = [k for k in ("e_mac_pj", "e_ac_pj") if k not in values]
        if missing:
            raise ConfigError(f"energy constants need {', '.join(missing)} (picojoules) or a "
                              f"'preset' (one of: {', '.join(PRESETS)}); got keys {sorted(spec)}")
        return EnergyConstants(**values)
    raise ConfigError(f"energy constants must be a preset name ({', '.join(PRESETS)}), a dict or "
                      f"EnergyConstants, got {type(spec).__name__}: {spec!r}")


# --------------------------------------------------------------------------------------------
# report


@dataclass
class LayerEnergy:
    """One row, per image. ``macs`` is the layer's dense multiply-accumulate count (over all T for
    a student); ``input_rate`` is None for analog input (charged ``macs`` x E_MAC), else the input
    firing rate (charged ``acs = macs x rate`` x E_AC). ``kind``: analog | spike | neuron."""

    layer: str
    output_shape: list[int]
    macs: float
    input_rate: float | None
    acs: float
    neuron_updates: float
    energy_pj: float
    kind: str = "analog"

    def to_dict(self) -> dict[str, Any]:
        return {"layer": self.layer, "kind": self.kind, "output_shape": list(self.output_shape),
                "macs": _num(self.macs), "input_rate": self.input_rate, "acs": _num(self.acs),
                "neuron_updates": _num(self.neuron_updates), "energy_pj": self.energy_pj}


@dataclass
class EnergyReport:
    """Per-image counts and energy of one model on the images it was measured on.

    ``macs`` counts only the MACs charged as multiply-accumulates (analog-input layers), so that
    ``energy_pj == macs*E_MAC + acs*E_AC + neuron_updates*E_neuron``; ``dense_macs`` is the sum of
    all layer MACs (what the same network would cost as an ANN, over all T for a student).
    """

    rows: list[LayerEnergy]
    macs: float
    acs: float
    neuron_updates: float
    energy_pj: float
    constants: EnergyConstants
    dense_macs: float = 0.0
    model: str = ""
    spiking: bool = False
    timesteps: int | None = None
    images: int = 0
    count_neuron_updates: bool = False

    @property
    def energy_uj(self) -> float:
        return self.energy_pj * 1e-6

    def to_rows(self) -> list[dict[str, Any]]:
        return [r.to_dict() for r in self.rows]

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "spiking": self.spiking,
            "timesteps": self.timesteps,
            "images": self.images,
            "per_image": {"macs": _num(self.macs), "dense_macs": _num(self.dense_macs),
                          "acs": _num(self.acs), "neuron_updates": _num(self.neuron_updates),
                          "energy_pj": self.energy_pj, "energy_uj": self.energy_uj},
            "constants": self.constants.to_dict(),
            "accounting": ACCOUNTING,
            "layers": self.to_rows(),
        }

    def write_csv(self, path) -> None:
        """Per-layer rows (per image) as CSV, written atomically. Totals are not a row."""
        cols = ["layer", "kind", "output_shape", "macs", "input_rate", "acs", "neuron_updates", "energy_pj"]
        with atomic_path(path) as tmp:
            with open(tmp, "w", newline="") as fh:
                writer = csv.writer(fh)
                writer.writerow(cols)
                for r in self.rows:
                    writer.writerow([r.layer, r.kind, _shape_str(r.output_shape), _num(r.macs),
                                     "" if r.input_rate is None else repr(float(r.input_rate)),
                                     _num(r.acs), _num(r.neuron_updates), repr(float(r.energy_pj))])

    def format_table(self) -> str:
        """Fixed-width text table, then totals per image and the constants used."""
        show_updates = self.count_neuron_updates or self.neuron_updates > 0
        header = ["layer", "output shape", "MACs", "input rate", "ACs"]
        if show_updates:
            header.append("updates")
        header.append("energy")
        body = []
        for r in self.rows:
            if r.kind == "neuron":
                rate = "neuron"
            elif r.input_rate is None:
                rate = "analog"
            else:
                rate = f"{100.0 * r.input_rate:.2f}%"
            line = [r.layer, _shape_str(r.output_shape), si(r.macs) if r.kind != "neuron" else "-", rate,
                    si(r.acs) if r.kind == "spike" else "-"]
            if show_updates:
                line.append(si(r.neuron_updates) if r.neuron_updates else "-")
            line.append(_energy_str(r.energy_pj))
            body.append(line)
        widths = [max(len(str(c)) for c in col) for col in zip(header, *body)]
        right = [False, False] + [True] * (len(header) - 2)

        def fmt(cells):
            return "  ".join(c.rjust(w) if r else c.ljust(w) for c, w, r in zip(cells, widths, right)).rstrip()

        lines = [fmt(header), "  ".join("-" * w for w in widths)]
        lines += [fmt(b) for b in body] or ["(no counted operations)"]
        title = self.model or "model"
        if self.spiking:
            title += f", spiking, T={self.timesteps}" if self.timesteps is not None else ", spiking"
        totals = f"total per image ({title}; {self.images} image(s) measured): MACs {si(self.macs)}"
        if self.spiking:
            totals += f" (dense {si(self.dense_macs)}), ACs {si(self.acs)}"
        if show_updates:
            totals += f", neuron updates {si(self.neuron_updates)}"
        totals += f", energy {_energy_str(self.energy_pj)} ({self.energy_uj:.6g} uJ)"
        lines += [totals, f"constants: {self.constants.describe()}"]
        return "\n".join(lines)


def energy_ratio(teacher: EnergyReport, student: EnergyReport) -> float:
    """Teacher energy / student energy per image (``inf`` if the student costs nothing)."""
    if student.energy_pj == 0:
        return math.inf if teacher.energy_pj > 0 else math.nan
    return teacher.energy_pj / student.energy_pj


def format_comparison(teacher: EnergyReport, student: EnergyReport) -> str:
    """Both tables, the totals per image, the ratio and the constants."""
    ratio = energy_ratio(teacher, student)
    lines = ["== Teacher ==", teacher.format_table(), "", "== Student ==", student.format_table(), "",
             "== Per image =="]
    lines.append(f"teacher: {si(teacher.macs)} MACs, energy {_energy_str(teacher.energy_pj)}")
    stu = f"student: {si(student.macs)} MACs + {si(student.acs)} ACs"
    if student.neuron_updates:
        stu += f" + {si(student.neuron_updates)} neuron updates"
    lines.append(stu + f", energy {_energy_str(student.energy_pj)}")
    lines.append(f"energy ratio (teacher / student): {ratio:.3g}x")
    if teacher.constants == student.constants:
        lines.append(f"constants: {teacher.constants.describe()}")
    else:
        lines.append(f"constants: teacher {teacher.constants.describe()}; student {student.constants.describe()}")
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# measurement


def _is_neuron(m: nn.Module, classes: tuple[type, ...]) -> bool:
    return isinstance(m, classes) or all(hasattr(m, a) for a in ("threshold", "spike_grad", "probe"))


def find_spiking_neurons(model: nn.Module) -> dict[str, nn.Module]:
    """``{path: module}`` of the spiking neurons in `model` (see the module docstring)."""
    classes = (SpikingNeuron, snntorch.SpikingNeuron)
    return {name: m for name, m in model.named_modules() if _is_neuron(m, classes)}


def _discrete_values(t: torch.Tensor, limit: int = MAX_SPIKE_LEVELS) -> torch.Tensor | None:
    """Sorted distinct values of `t` if there are at most `limit` of them, else None."""
    if t.numel() == 0 or t.is_complex():
        return None
    flat = t.detach().reshape(-1)
    vals = torch.unique(flat[:_SAMPLE])
    if vals.numel() > limit:
        return None
    if flat.numel() > _SAMPLE and not bool(torch.isin(flat, vals).all()):
        vals = torch.unique(flat)
        if vals.numel() > limit:
            return None
    return vals


def _storage_key(t: torch.Tensor) -> int | None:
    try:
        ptr = t.untyped_storage().data_ptr()
    except Exception:  # tensors without storage (e.g. some subclasses)
        return None
    return ptr or None


def _per_image_shape(shape, images: int) -> list[int]:
    shape = [int(s) for s in shape]
    if shape and images > 0 and shape[0] % images == 0:
        lead = shape[0] // images
        return ([lead] if lead != 1 else []) + shape[1:]
    return shape


def _out_tensor(out) -> torch.Tensor | None:
    if isinstance(out, torch.Tensor):
        return out
    if isinstance(out, (tuple, list)):
        for o in out:
            if isinstance(o, torch.Tensor):
                return o
    return None


_CONV = {"convolution", "_convolution", "cudnn_convolution", "_slow_conv2d_forward",
         "convolution_overrideable", "mkldnn_convolution"}
_MM = {"mm": (0, 1), "addmm": (1, 2), "bmm": (0, 1), "baddbmm": (1, 2)}
_SDPA = {"_scaled_dot_product_efficient_attention", "_scaled_dot_product_flash_attention",
         "_scaled_dot_product_cudnn_attention", "_scaled_dot_product_flash_attention_for_cpu",
         "_scaled_dot_product_fused_attention_overrideable"}
_LABEL = {"mm": "matmul", "addmm": "matmul", "bmm": "bmm", "baddbmm": "bmm"}


class _Entry:
    __slots__ = ("path", "label", "kind", "shape", "macs", "acs", "spike_macs", "updates")

    def __init__(self, path, label, kind, shape):
        self.path, self.label, self.kind, self.shape = path, label, kind, shape
        self.macs = 0  # dense MACs, whole batch
        self.spike_macs = 0  # MACs of calls charged as ACs
        self.acs = 0.0
        self.updates = 0


class _Recorder:
    """State of one measurement: module stack, neuron outputs, the per-layer ledger."""

    def __init__(self, model: nn.Module, spiking: bool, count_neuron_updates: bool):
        self.spiking = spiking
        self.count_neuron_updates = count_neuron_updates
        self.stack: list[str] = []
        self.images = 0  # images of the batch being run
        self.entries: dict[tuple[str, str, str], _Entry] = {}
        self.neuron_ptrs: dict[int, Any] = {}
        self.levels: set[float] = {1.0}
        self.param_ptrs = {k for k in (_storage_key(p) for p in list(model.parameters()) + list(model.buffers()))
                           if k is not None}

    # ---- hooks
    def pre_hook(self, name):
        def hook(module, args):
            self.stack.append(name)
        return hook

    def post_hook(self, name):
        def hook(module, args, output):
            if self.stack and self.stack[-1] == name:
                self.stack.pop()
            elif name in self.stack:  # unbalanced after an odd forward: cut back to this module
                del self.stack[len(self.stack) - 1 - self.stack[::-1].index(name):]
        return hook

    def neuron_hook(self, name):
        def hook(module, args, output):
            out = _out_tensor(output)
            if self.spiking and out is not None and out.is_floating_point():
                vals = _discrete_values(out, _MAX_NEURON_VALUES)
                if vals is not None:
                    key = _storage_key(out)
                    if key is not None:
                        ptrs = self.neuron_ptrs
                        # forget the storage once the tensor is gone, so a reused address is no false hit
                        self.neuron_ptrs[key] = weakref.ref(out, lambda _r, k=key: ptrs.pop(k, None))
                    for v in (vals.tolist() if vals.numel() <= MAX_SPIKE_LEVELS else []):
                        if v != 0 and math.isfinite(v):
                            self.levels.add(abs(float(v)))
            if self.count_neuron_updates and args and isinstance(args[0], torch.Tensor):
                cur = args[0]
                shape = list(cur.shape)
                if len(shape) >= 2 and shape[1] == self.images:  # [T, B, ...]
                    per = [shape[0]] + shape[2:]
                else:
                    per = _per_image_shape(shape, self.images)
                e = self._entry(name, "neuron", "neuron", per)
                e.updates += cur.numel()
        return hook

    # ---- classification
    def spike_rate(self, t) -> float | None:
        """Firing rate of `t` if it is spikes (see the module docstring), else None."""
        if not self.spiking or not isinstance(t, torch.Tensor) or not t.is_floating_point() or t.numel() == 0:
            return None
        key = _storage_key(t)
        if key is not None and key in self.param_ptrs:
            return None
        if key is not None and key in self.neuron_ptrs:  # (a) provenance
            if _discrete_values(t, _MAX_NEURON_VALUES) is None:  # overwritten in place with analog values
                return None
        else:  # (b) values
            vals = _discrete_values(t)
            if vals is None:
                return None
            vs = vals.tolist()
            if not all(v >= 0 and (v == 0 or self._is_level_multiple(v)) for v in vs):
                return None
        return int(torch.count_nonzero(t)) / t.numel()

    def _is_level_multiple(self, v: float) -> bool:
        for lvl in self.levels:
            n = round(v / lvl)
            if 1 <= n <= _MAX_MULTIPLE and abs(v - n * lvl) <= 1e-5 * max(abs(v), 1.0):
                return True
        return False

    # ---- ledger
    def _entry(self, path, label, kind, shape) -> _Entry:
        key = (path, label, kind)
        e = self.entries.get(key)
        if e is None:
            e = self.entries[key] = _Entry(path, label, kind, shape)
        return e

    def add(self, label, macs: int, rate_or_acs, shape, *, acs: float | None = None):
        """Record `macs` of work; spike work when `acs` is given (or `rate_or_acs` is a rate)."""
        path = self.stack[-1] if self.stack else ""
        if acs is None and rate_or_acs is not None:
            acs = macs * rate_or_acs
        kind = "analog" if acs is None else "spike"
        e = self._entry(path, label, kind, _per_image_shape(shape, self.images))
        e.macs += macs
        if acs is not None:
            e.spike_macs += macs
            e.acs += float(acs)

    # ---- op handlers (called from inside FlopCounterMode with the real tensors)
    def record(self, name: str, args, kwargs, out, flops: int) -> None:
        macs = int(flops) // 2
        if macs == 0:
            return
        out_t = _out_tensor(out)
        shape = list(out_t.shape) if out_t is not None else []
        if name in _CONV:
            self.add("conv", macs, self.spike_rate(args[0]), shape)
        elif name in _MM and len(args) > max(_MM[name]):
            ia, ib = _MM[name]
            self._matmul(_LABEL[name], macs, args[ia], args[ib], shape)
        elif name in _SDPA and len(args) >= 3:
            self._sdpa(macs, args[0], args[1], args[2], shape)
        else:
            self.add(name, macs, None, shape)

    def _matmul(self, label, macs, a, b, shape):
        ra, rb = self.spike_rate(a), self.spike_rate(b)
        if ra is None and rb is None:
            self.add(label, macs, None, shape)
        elif ra is not None and rb is not None:  # spikes x spikes: exact non-zero products
            events = ((a != 0).sum(-2, dtype=torch.float64) * (b != 0).sum(-1, dtype=torch.float64)).sum()
            self.add(label, macs, None, shape, acs=float(events))
        else:
            self.add(label, macs, ra if ra is not None else rb, shape)

    def _sdpa(self, macs, q, k, v, shape):
        # [B, Hq, L, E] @ [B, Hkv, S, E]^T -> [B, Hq, L, S];  P [B, Hq, L, S] @ V [B, Hkv, S, Ev]
        try:
            L, e, s, ev = q.shape[-2], q.shape[-1], k.shape[-2], v.shape[-1]
            batch = q.numel() // (L * e)  # batch x query heads
            qk_macs, av_macs = batch * L * s * e, batch * L * s * ev
        except Exception:
            self.add("sdpa", macs, None, shape)
            return
        if qk_macs + av_macs != macs:  # an unfamiliar layout: count it whole, analog
            self.add("sdpa", macs, None, shape)
            return
        qk_shape = list(shape[:-1]) + [int(s)]
        rq, rk = self.spike_rate(q), self.spike_rate(k)
        if rq is not None and rk is not None:
            if k.shape[:-2] != q.shape[:-2] and k.dim() >= 3 and q.shape[-3] % k.shape[-3] == 0:
                k = k.repeat_interleave(q.shape[-3] // k.shape[-3], dim=-3)
            events = ((q != 0).sum(-2, dtype=torch.float64) * (k != 0).sum(-2, dtype=torch.float64)).sum()
            self.add("attn qk", qk_macs, None, qk_shape, acs=float(events))
        else:
            self.add("attn qk", qk_macs, rq if rq is not None else rk, qk_shape)
        self.add("attn pv", av_macs, self.spike_rate(v), shape)

    # ---- rows
    def rows(self, images: int, constants: EnergyConstants) -> list[LayerEnergy]:
        per_path: dict[str, list[_Entry]] = {}
        for e in self.entries.values():
            per_path.setdefault(e.path, []).append(e)
        rows = []
        for e in self.entries.values():
            siblings = per_path[e.path]
            name = e.path or _ROOT_NAME
            if len(siblings) > 1 and e.kind != "neuron":
                label = e.label
                if sum(1 for s in siblings if s.label == e.label) > 1:
                    label += ":spikes" if e.kind == "spike" else ":analog"
                name = f"{name} [{label}]"
            macs = _div(e.macs, images)
            if e.kind == "neuron":
                updates = _div(e.updates, images)
                rows.append(LayerEnergy(name, e.shape, 0, None, 0, updates,
                                        updates * constants.e_neuron_pj, "neuron"))
            elif e.kind == "spike":
                acs = e.acs / images
                rate = e.acs / e.spike_macs if e.spike_macs else 0.0
                rows.append(LayerEnergy(name, e.shape, macs, rate, acs, 0, acs * constants.e_ac_pj, "spike"))
            else:
                rows.append(LayerEnergy(name, e.shape, macs, None, 0, 0, macs * constants.e_mac_pj, "analog"))
        return rows


def _div(n: int, images: int):
    return n // images if n % images == 0 else n / images


def _batches(x) -> list[torch.Tensor]:
    if isinstance(x, torch.Tensor):
        batches = [x]
    elif isinstance(x, Iterable) and not isinstance(x, (str, bytes, Mapping)):
        batches = list(x)
    else:
        raise ConfigError(f"measure_energy needs an image batch [B, C, H, W] or a list of batches, "
                          f"got {type(x).__name__}")
    if not batches:
        raise ConfigError("measure_energy needs at least one image batch, got an empty list")
    for i, b in enumerate(batches):
        if not isinstance(b, torch.Tensor) or b.dim() < 1 or b.shape[0] == 0:
            raise ConfigError(f"measure_energy: batch {i} must be a non-empty tensor [B, C, H, W], got "
                              f"{tuple(b.shape) if isinstance(b, torch.Tensor) else type(b).__name__}")
    return batches


def _counter_mapping(rec: _Recorder) -> dict:
    """FlopCounterMode formulas that see the real tensors and feed `rec` (spike counts need the values).

    FlopCounterMode hands a ``custom_mapping`` formula tensor shapes only, unless the formula carries ``_get_raw``,
    the attribute its constructor checks. torch 2.13 has no public way to mark a per-measurement formula raw
    (``register_flop_formula`` writes the global table, once per op), so the flag is set here; a test fails if a
    torch upgrade stops honouring it.
    """
    from torch.utils import flop_counter as fc  # noqa: PLC0415

    aten = torch.ops.aten
    base = dict(fc.flop_registry)
    cpu_sdpa = getattr(aten, "_scaled_dot_product_flash_attention_for_cpu", None)
    if cpu_sdpa is not None and cpu_sdpa not in base:  # the CPU kernel is missing from torch's table
        def cpu_sdpa_flop(query, key, value, *args, out_val=None, **kwargs):
            return fc.sdpa_flop_count(query.shape, key.shape, value.shape)
        cpu_sdpa_flop._get_raw = True
        base[cpu_sdpa] = cpu_sdpa_flop

    def make(packet, formula):
        name = str(packet).split(".")[-1]

        def raw(*args, out_val=None, **kwargs):
            flops = formula(*args, out_val=out_val, **kwargs)
            rec.record(name, args, kwargs, out_val, flops)
            return flops
        raw._get_raw = True
        return raw

    return {packet: make(packet, f) for packet, f in base.items()}


def measure_energy(model: nn.Module, x, constants: str | Mapping[str, Any] | EnergyConstants, *,
                   spiking: bool | None = None, count_neuron_updates: bool = False,
                   model_kwargs: Mapping[str, Any] | None = None) -> EnergyReport:
    """Run `model` on `x` and count MACs / ACs / neuron updates per layer, per image.

    `x`: an image batch ``[B, C, H, W]`` or a list of batches (e.g. validation images of
    different sizes); counts are averaged over all images. `constants`: preset name, dict or
    EnergyConstants (see :func:`resolve_constants`). `spiking`: None detects it from the spiking
    neurons in the model; False counts everything as MACs. `model_kwargs` are passed unchanged to
    every call (e.g. ``{"sigma": torch.full((B,), 25 / 255)}`` for FFDNet).
    Runs in eval mode under ``torch.no_grad()``; restores every module's training flag and removes
    every hook afterwards, also on errors.
    """
    from torch.utils.flop_counter import FlopCounterMode  # noqa: PLC0415

    consts = resolve_constants(constants)
    batches = _batches(x)
    kwargs = dict(model_kwargs or {})
    if getattr(model, "needs_sigma", False) and "sigma" not in kwargs:
        raise ConfigError(f"{type(model).__name__} needs a noise level: pass model_kwargs={{'sigma': tensor [B]}}")
    neurons = find_spiking_neurons(model)
    is_spiking = bool(neurons) if spiking is None else bool(spiking)
    rec = _Recorder(model, is_spiking, count_neuron_updates)
    try:
        ref = next(iter(model.parameters()))
        device, dtype = ref.device, ref.dtype
    except StopIteration:
        device, dtype = None, None

    if device is not None:
        kwargs = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in kwargs.items()}
    modes = {m: m.training for m in model.modules()}
    images = 0
    with ExitStack() as stack:
        handles = []

        def _cleanup():
            for h in handles:
                h.remove()
            for m, flag in modes.items():
                m.training = flag
        stack.callback(_cleanup)
        for name, m in model.named_modules():
            handles.append(m.register_forward_pre_hook(rec.pre_hook(name)))
            handles.append(m.register_forward_hook(rec.post_hook(name), always_call=True))
        for name, m in neurons.items():
            handles.append(m.register_forward_hook(rec.neuron_hook(name)))
        model.eval()
        stack.enter_context(torch.no_grad())
        for b in batches:
            if device is not None:
                b = b.to(device=device, dtype=dtype if b.is_floating_point() else None)
            rec.images = int(b.shape[0])
            rec.stack.clear()
            with FlopCounterMode(display=False, custom_mapping=_counter_mapping(rec)):
                model(b, **kwargs)
            images += rec.images
        rec.neuron_ptrs.clear()

    rows = rec.rows(images, consts)
    macs = sum(r.macs for r in rows if r.kind == "analog")
    acs = sum(r.acs for r in rows)
    updates = sum(r.neuron_updates for r in rows)
    energy = macs * consts.e_mac_pj + acs * consts.e_ac_pj + updates * consts.e_neuron_pj
    timesteps = getattr(model, "timesteps", None)
    return EnergyReport(rows=rows, macs=macs, acs=acs, neuron_updates=updates, energy_pj=energy,
                        constants=consts, dense_macs=sum(r.macs for r in rows), model=type(model).__name__,
                        spiking=is_spiking, timesteps=timesteps if isinstance(timesteps, int) else None,
                        images=images, count_neuron_updates=count_neuron_updates)


# --------------------------------------------------------------------------------------------
# formatting helpers


def _num(v):
    if isinstance(v, float) and v.is_integer() and abs(v) < 2**53:
        return int(v)
    return v


def _shape_str(shape) -> str:
    return "x".join(str(s) for s in shape) if shape else "-"


def _energy_str(pj: float) -> str:
    for div, unit in ((1e9, "mJ"), (1e6, "uJ"), (1e3, "nJ")):
        if abs(pj) >= div:
            return f"{pj / div:.3f} {unit}"
    return f"{pj:.3f} pJ"
