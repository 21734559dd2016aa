#!/usr/bin/env python
"""Training-step speed of the spiking students on CPU: the project's multi-step engine against a
naive snntorch per-timestep loop and against the ANN floor, side by side in one process.

Variants (all start from the same weights; each has its own copy and its own Adam):

* ``a`` engine: the student as shipped (``[T, B, ...]`` tensors, stateless layers folded over ``T*B``,
  one fused autograd node per neuron layer, see ``students/engine.py``).
* ``b`` naive per-timestep loop: ``for t in range(T): for layer: ...`` with one stateful
  ``snntorch.Leaky`` per neuron layer carrying its membrane from step to step, every conv/BN run
  on ``B`` per step (BN in training mode therefore normalises with per-step statistics of ``B``
  samples instead of ``T*B``; eval-mode outputs are identical, which ``--check`` verifies).
  SpikingDnCNN: an explicit snntorch network built from the student's conv/BN weights.
  SpikingUNet / SpikerIR: the student's own body run one step at a time with its neurons swapped
  for stateful per-step neurons (snntorch has no multi-threshold neuron, so SpikingUNet's is a
  hand-written per-step autograd function with the engine's forward and surrogate).
  ESDNet: not possible -- its multi-dimensional attention mixes all T steps inside every block,
  so no step can be computed before the later ones exist; reported as n/a.
* ``l`` snntorch neurons, layer-major: the engine's model with every fused neuron replaced by a
  Python loop of ``snntorch.Leaky`` calls over T (layers still folded over ``T*B``). Possible for
  every student, so it is the snntorch reference for ESDNet.
* ``c`` ANN floor: the ANN twin (``teachers/twins.py``, same layers, ReLU, T = 1) with the student's
  weights, fed a ``T*B`` batch -- the cost of dense simulation without any neuron recurrence.

Timing: variants are interleaved round-robin inside one process (the starting variant rotates
each round), after warm-up; median and min of the repeats, with the 1-minute load average.
Peak memory: a fresh subprocess per (student, T, variant) runs one warm-up step, resets the RSS
high-water mark (``/proc/self/clear_refs``), runs one step and reports ``VmHWM - VmRSS(before)``,
with glibc's mmap threshold fixed at 64 KiB so freed tensors go back to the OS.

Examples::

    python benchmarks/train_speed.py                       # every student, T = 1 2 4 8, tables
    python benchmarks/train_speed.py --students spiking_dncnn --timesteps 4 --repeats 15
    python benchmarks/train_speed.py --profile             # torch.profiler breakdown of one step
"""
from __future__ import annotations

import argparse
import copy
import gc
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import snntorch as snn  # noqa: E402
import torch  # noqa: E402
from snntorch import surrogate as snn_surrogate  # noqa: E402
from torch import Tensor, nn  # noqa: E402

from benchmarks.common import (  # noqa: E402
    STUDENTS,
    build_student,
    build_twin,
    command_line,
    fmt_ms,
    fmt_ratio,
    load,
    machine_info,
    machine_line,
    make_batch,
    make_step,
    md_table,
    measure_step_memory,
    report_child,
    run_child,
    summarize,
)

VARIANTS = {
    "a": "engine",
    "b": "naive snntorch loop (per step)",
    "l": "snntorch neurons (layer-major)",
    "c": "ANN twin on T·B",
}
TARGET = {"student": "spiking_dncnn", "T": 4, "batch": 16, "size": 40, "max_ratio": 1.3}


# ---------------------------------------------------------------------------------------------------
# per-step neurons


def snntorch_leaky(neuron: nn.Module) -> snn.Leaky:
    """A ``snntorch.Leaky`` with the neuron's beta, threshold, reset and surrogate."""
    from students.surrogates import ATan

    sg = neuron.spike_grad
    spike_grad = snn_surrogate.atan(alpha=sg.alpha) if isinstance(sg, ATan) else sg
    return snn.Leaky(beta=float(neuron.beta), threshold=float(neuron.threshold), spike_grad=spike_grad,
                     reset_mechanism=neuron.reset_mechanism)


class _MultiThresholdStep(torch.autograd.Function):
    """One step of the multi-threshold IF output: ``theta * Q(U / theta)``, surrogate slope backward."""

    @staticmethod
    def forward(ctx, u, threshold, levels, surrogate):  # type: ignore[override]
        ctx.save_for_backward(u)
        ctx.threshold, ctx.levels, ctx.surrogate = threshold, levels, surrogate
        from students.engine import multithreshold_quantize

        return multithreshold_quantize(u * (1.0 / threshold), levels).mul_(threshold)

    @staticmethod
    def backward(ctx, g):  # type: ignore[override]
        from students.engine import _multithreshold_slope

        (u,) = ctx.saved_tensors
        return g * _multithreshold_slope(u * (1.0 / ctx.threshold), ctx.levels, ctx.surrogate), None, None, None


class StepNeuron(nn.Module):
    """A stateful per-step neuron: ``forward(current [B, ...]) -> spikes [B, ...]``; ``reset()`` to rest.

    LIF/IF: a ``snntorch.Leaky``. MultiThresholdIF: ``U = U_prev + I - O_prev`` (reset detached, as
    the engine) and :class:`_MultiThresholdStep`.
    """

    def __init__(self, neuron: nn.Module):
        super().__init__()
        from students.neurons import MultiThresholdIF

        if getattr(neuron, "init_membrane", 0.0):
            raise ValueError("init_membrane != 0 is not reproduced by the naive loop")
        self.multi = isinstance(neuron, MultiThresholdIF)
        if self.multi:
            self.threshold = float(neuron.threshold)
            self.levels = tuple(neuron.levels)
            self.surrogate = neuron.spike_grad
        else:
            self.leaky = snntorch_leaky(neuron)
        self.reset()

    def reset(self) -> None:
        self.mem = None if self.multi else self.leaky.reset_mem()
        self.out = None

    def forward(self, current: Tensor) -> Tensor:
        if not self.multi:
            spk, self.mem = self.leaky(current, self.mem)
            return spk
        u = current if self.mem is None else self.mem + current - self.out.detach()
        out = _MultiThresholdStep.apply(u, self.threshold, self.levels, self.surrogate)
        self.mem, self.out = u, out
        return out


class _OneStepNeuron(nn.Module):
    """Used inside a step-major loop: ``[1, B, ...] -> [1, B, ...]`` keeping state across calls."""

    def __init__(self, neuron: nn.Module):
        super().__init__()
        self.step = StepNeuron(neuron)

    def forward(self, x: Tensor) -> Tensor:
        if x.shape[0] != 1:
            raise ValueError(f"step-major neuron expects [1, B, ...], got {tuple(x.shape)}")
        return self.step(x[0]).unsqueeze(0)


class _LayerLoopNeuron(nn.Module):
    """Layer-major: ``[T, B, ...] -> [T, B, ...]`` by a Python loop of per-step calls, from rest."""

    def __init__(self, neuron: nn.Module):
        super().__init__()
        self.step = StepNeuron(neuron)

    def forward(self, x: Tensor) -> Tensor:
        self.step.reset()
        return torch.stack([self.step(x[t]) for t in range(x.shape[0])])


def swap_neurons(model: nn.Module, wrap: Callable[[nn.Module], nn.Module]) -> list[nn.Module]:
    """Replace every SpikingNeuron of ``model`` in place by ``wrap(neuron)``; returns the wrappers."""
    from students.neurons import SpikingNeuron

    targets = [(name, m) for name, m in model.named_modules() if isinstance(m, SpikingNeuron)]
    wrappers = []
    for name, neuron in targets:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        wrapper = wrap(neuron)
        setattr(parent, child, wrapper)  # works for Sequential indices too ("0")
        wrappers.append(wrapper)
    return wrappers


# ---------------------------------------------------------------------------------------------------
# variant b: naive per-timestep loops


class NaiveSnnTorchDnCNN(nn.Module):
    """The spiking DnCNN as a plain snntorch user writes it: convs/BNs from the student, one
    ``snntorch.Leaky`` per layer, an outer loop over time, the mean of the last spikes decoded."""

    def __init__(self, student: nn.Module):
        super().__init__()
        s = copy.deepcopy(student)
        if s.decoding != "mean":
            raise ValueError("NaiveSnnTorchDnCNN reproduces decoding='mean' only")
        if s.head.conv.encoding != "direct":
            raise ValueError("NaiveSnnTorchDnCNN reproduces direct encoding only")
        self.timesteps, self.residual = s.timesteps, s.residual
        self.head = s.head.conv.layer
        self.convs = nn.ModuleList(b.conv.layer for b in s.blocks)
        self.bns = nn.ModuleList(b.bn.layer if hasattr(b, "bn") else nn.Identity() for b in s.blocks)
        self.lifs = nn.ModuleList([snntorch_leaky(s.head.neuron)] + [snntorch_leaky(b.neuron) for b in s.blocks])
        self.tail = s.tail

    def forward(self, x: Tensor) -> Tensor:
        mems = [lif.reset_mem() for lif in self.lifs]
        total = None
        for _ in range(self.timesteps):
            spk, mems[0] = self.lifs[0](self.head(x), mems[0])  # direct encoding: the image every step
            for i, (conv, bn) in enumerate(zip(self.convs, self.bns)):
                spk, mems[i + 1] = self.lifs[i + 1](bn(conv(spk)), mems[i + 1])
            total = spk if total is None else total + spk
        r = self.tail(total / self.timesteps)
        return x + r if self.residual else r


class StepMajorStudent(nn.Module):
    """A student's own body run one time step at a time, its neurons swapped for stateful per-step
    neurons (SpikingUNet, SpikerIR; SpikingDnCNN works too). Decoding/head as the student."""

    def __init__(self, student: nn.Module):
        super().__init__()
        from students.spiker_ir import SpikerIR
        from students.spiking_dncnn import SpikingDnCNN
        from students.spiking_unet import SpikingUNet

        self.model = copy.deepcopy(student)
        m = self.model
        if isinstance(m, SpikingDnCNN):
            self.multiple, self.first = 1, m.head.conv
        elif isinstance(m, SpikingUNet):
            self.multiple, self.first = 2 ** (m.levels - 1), m.encoders[0].conv1
        elif isinstance(m, SpikerIR):
            self.multiple, self.first = 8, m.embed
        else:
            raise NotImplementedError(f"{type(m).__name__}: no per-timestep loop (see naive_unavailable)")
        if self.first.encoding != "direct":
            raise ValueError("StepMajorStudent reproduces direct encoding only")
        self.neurons = swap_neurons(m, _OneStepNeuron)

    def forward(self, x: Tensor) -> Tensor:
        from students.encoding import decode
        from students.layers import pad_to_multiple

        m = self.model
        for n in self.neurons:
            n.step.reset()
        xp, (H, W) = pad_to_multiple(x, self.multiple)
        outs = [m._body(self.first.layer(xp).unsqueeze(0)) for _ in range(m.timesteps)]
        h = decode(torch.cat(outs, 0), m.decoding, m.decode_beta)
        if hasattr(m, "tail"):  # SpikingDnCNN
            r = m.tail(h)
        elif hasattr(m, "out"):  # SpikingUNet
            r = m.out(h)[..., :H, :W]
        else:  # SpikerIR
            r = m.output(h)[..., :H, :W]
        return x + r if m.residual else r


def naive_unavailable(key: str) -> str | None:
    """Why variant b cannot be built for ``key`` (None when it can)."""
    if key.startswith("esdnet"):
        return ("n/a: ESDNet's temporal/channel/spatial attention (MDA) reads all T steps inside every "
                "block, so a step cannot be computed before the later steps exist")
    return None


def build_variant(key: str, variant: str, timesteps: int, student: nn.Module) -> nn.Module | None:
    if variant == "a":
        return copy.deepcopy(student)
    if variant == "b":
        if naive_unavailable(key):
            return None
        if key == "spiking_dncnn":
            return NaiveSnnTorchDnCNN(student)
        return StepMajorStudent(student)
    if variant == "l":
        model = copy.deepcopy(student)
        swap_neurons(model, _LayerLoopNeuron)
        return model
    if variant == "c":
        return build_twin(key, student)
    raise SystemExit(f"unknown variant {variant!r}; choose from {', '.join(VARIANTS)}")


def variant_inputs(key: str, variant: str, timesteps: int, batch: int, size: int) -> tuple[Tensor, Tensor]:
    x, y = make_batch(STUDENTS[key].channels, batch, size)
    if variant == "c":  # the ANN floor simulates T copies of the batch densely
        return x.repeat(timesteps, 1, 1, 1), y.repeat(timesteps, 1, 1, 1)
    return x, y


# ---------------------------------------------------------------------------------------------------
# measurements


def calibrate_norms(model: nn.Module, x: Tensor) -> None:
    """Set every batch norm's running statistics to the batch statistics of ``model(x)`` (training-mode
    forward with a cumulative average), so eval-mode layers are normalised and neurons fire."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None
    model.train()
    with torch.no_grad():
        model(x)
    for m, momentum in zip(norms, saved):
        m.momentum = momentum
    model.eval()


def check_equivalence(key: str, timesteps: int, batch: int = 2, size: int = 16) -> dict[str, float | None]:
    """Eval-mode forward of each snntorch variant against the engine (batch norms calibrated on the
    batch so that the neurons fire): max |difference| of the outputs, and the engine's firing rate."""
    from students.probes import overall_firing_rate, probing

    student = build_student(key, timesteps)
    x, _ = make_batch(STUDENTS[key].channels, batch, size)
    calibrate_norms(student, x)
    out: dict[str, float | None] = {}
    with torch.no_grad():
        with probing(student):
            ref = student(x)
        out["firing_rate"] = overall_firing_rate(student)
        for v in ("b", "l"):
            model = build_variant(key, v, timesteps, student)
            out[v] = None if model is None else float((model.eval()(x) - ref).abs().max())
    return out


def time_cell(key: str, timesteps: int, variants: list[str], batch: int, size: int,
              warmup: int, repeats: int) -> dict[str, Any]:
    """Interleaved timing of the variants of one (student, T)."""
    student = build_student(key, timesteps)
    steps: dict[str, Callable[[], float]] = {}
    skipped: dict[str, str] = {}
    for v in variants:
        model = build_variant(key, v, timesteps, student)
        if model is None:
            skipped[v] = naive_unavailable(key) or "n/a"
            continue
        x, y = variant_inputs(key, v, timesteps, batch, size)
        steps[v] = make_step(model, x, y)
    active = list(steps)
    for _ in range(warmup):
        for v in active:
            steps[v]()
    times: dict[str, list[float]] = {v: [] for v in active}
    loads = [load()]
    for r in range(repeats):
        order = active[r % len(active):] + active[: r % len(active)] if active else []
        for v in order:
            gc.collect()
            t0 = time.perf_counter()
            steps[v]()
            times[v].append(time.perf_counter() - t0)
        loads.append(load())
    result: dict[str, Any] = {"student": key, "T": timesteps, "batch": batch, "size": size,
                              "load": [min(loads), max(loads)], "variants": {}, "skipped": skipped}
    for v in active:
        result["variants"][v] = summarize(times[v]) | {"times_ms": [round(1e3 * t, 2) for t in times[v]]}
    return result


def child_main(payload: dict[str, Any]) -> None:
    """Fresh-process peak memory of one training step of one variant."""
    torch.set_num_threads(int(payload.get("threads") or 1))
    key, T, v = payload["student"], int(payload["T"]), payload["variant"]
    student = build_student(key, T)
    model = build_variant(key, v, T, student)
    del student
    x, y = variant_inputs(key, v, T, int(payload["batch"]), int(payload["size"]))
    report_child(measure_step_memory(make_step(model, x, y)))


def memory_cell(key: str, timesteps: int, variants: list[str], batch: int, size: int, threads: int) -> dict[str, Any]:
    out = {}
    for v in variants:
        if v == "b" and naive_unavailable(key):
            continue
        payload = {"student": key, "T": timesteps, "variant": v, "batch": batch, "size": size, "threads": threads}
        out[v] = run_child(Path(__file__), payload)
    return out


def run_speed(students: list[str], timesteps: list[int], variants: list[str], batch: int = 16, size: int = 40,
              warmup: int = 2, repeats: int = 7, memory: bool = True, threads: int = 1, check: bool = True,
              log: Callable[[str], None] | None = None) -> list[dict[str, Any]]:
    """Every (student, T) cell: interleaved timings, optional fresh-process memory and eval-mode check."""
    rows = []
    for key in students:
        for T in timesteps:
            cell = time_cell(key, T, variants, batch, size, warmup, repeats)
            if memory:
                cell["memory"] = memory_cell(key, T, variants, batch, size, threads)
            if check:
                cell["check"] = check_equivalence(key, T)
            rows.append(cell)
            if log:
                log(summary_line(cell))
    return rows


def ratio(cell: dict[str, Any], num: str, den: str, stat: str = "median_ms") -> float | None:
    """``num / den`` of the median (default) or of the min (``stat="min_ms"``) step times, or with
    ``stat="paired"`` the median over rounds of the per-round ratio (the two steps of a round ran
    back to back, so slow drifts of the machine's load cancel)."""
    v = cell["variants"]
    if num not in v or den not in v:
        return None
    if stat == "paired":
        pairs = [a / b for a, b in zip(v[num]["times_ms"], v[den]["times_ms"])]
        return statistics.median(pairs) if pairs else None
    return v[num][stat] / v[den][stat]


def ratio_text(cell: dict[str, Any], num: str, den: str) -> str | None:
    med, paired = ratio(cell, num, den), ratio(cell, num, den, "paired")
    return None if med is None else f"{med:.2f}× ({paired:.2f}×)"


def summary_line(cell: dict[str, Any]) -> str:
    parts = [f"{cell['student']} T={cell['T']}"]
    for v, s in cell["variants"].items():
        parts.append(f"{v} {s['median_ms']:.1f}/{s['min_ms']:.1f} ms")
    for v in cell.get("skipped", {}):
        parts.append(f"{v} n/a")
    parts.append(f"a/b {fmt_ratio(ratio(cell, 'a', 'b'))} a/c {fmt_ratio(ratio(cell, 'a', 'c'))}")
    parts.append(f"load {cell['load']}")
    return "  ".join(parts)


def render(rows: list[dict[str, Any]], variants: list[str]) -> str:
    headers = ["student", "T"]
    for v in variants:
        headers.append(f"{v}: {VARIANTS[v]} median / min (ms)")
    headers += ["a/b: ratio of medians (median of per-round ratios)", "a/l", "a/c", "load (1 min)"]
    has_mem = any("memory" in r for r in rows)
    if has_mem:
        headers += [f"peak step RSS {v} (MiB)" for v in variants]
    has_check = any("check" in r for r in rows)
    if has_check:
        headers += ["check: eval max abs(a−b), abs(a−l) (firing rate)"]
    table = []
    for r in rows:
        row: list[Any] = [STUDENTS[r["student"]].label if r["T"] == rows[0]["T"] or True else "", r["T"]]
        for v in variants:
            s = r["variants"].get(v)
            row.append(f"{fmt_ms(s['median_ms'])} / {fmt_ms(s['min_ms'])}" if s else
                       ("n/a (see note)" if v in r.get("skipped", {}) else None))
        row += [ratio_text(r, "a", "b") or "n/a", ratio_text(r, "a", "l"),
                ratio_text(r, "a", "c"), f"{r['load'][0]:.1f}–{r['load'][1]:.1f}"]
        if has_mem:
            mem = r.get("memory", {})
            row += [f"{mem[v]['step_mib']:.0f}" if v in mem else "n/a" for v in variants]
        if has_check:
            c = r.get("check", {})
            row.append(", ".join("n/a" if c.get(v) is None else f"{c[v]:.1e}" for v in ("b", "l"))
                       + (f" ({c['firing_rate']:.2f})" if c.get("firing_rate") is not None else ""))
        table.append(row)
    return md_table(headers, table)


def target_verdict(rows: list[dict[str, Any]]) -> str | None:
    for r in rows:
        if (r["student"], r["T"], r["batch"], r["size"]) == (TARGET["student"], TARGET["T"], TARGET["batch"], TARGET["size"]):
            q = ratio(r, "a", "c")
            if q is None:
                return None
            ok = q <= TARGET["max_ratio"]
            paired = ratio(r, "a", "c", "paired")
            ok = ok and paired <= TARGET["max_ratio"]
            return (f"target (engine within {TARGET['max_ratio']}× of the ANN floor, SpikingDnCNN T=4, batch 16, 40×40): "
                    f"a/c = {q:.2f}× (ratio of medians), {paired:.2f}× (median of per-round ratios) "
                    f"-> {'MET' if ok else 'MISSED'}")
    return None


# ---------------------------------------------------------------------------------------------------
# profile


EVAL = "autograd::engine::evaluate_function: "
CATEGORIES_FWD = (
    ("conv forward", ("aten::convolution",)),
    ("batch norm forward", ("aten::batch_norm",)),
    ("neuron forward (fused recurrence, or snntorch / per-step neuron calls)", ("bench::neuron_forward",)),
    ("loss forward", ("aten::l1_loss",)),
)
CATEGORIES_BWD = (
    ("conv backward", (EVAL + "ConvolutionBackward0",)),
    ("batch norm backward", (EVAL + "NativeBatchNormBackward0",)),
    ("fused neuron backward (engine)", (EVAL + "_LIFRecurrenceBackward", EVAL + "_MultiThresholdRecurrenceBackward")),
    ("surrogate spike backward (snntorch ATan / per-step multi-threshold)",
     (EVAL + "ATanBackward", EVAL + "_MultiThresholdStepBackward")),
    ("elementwise / copy autograd nodes (membrane updates, stack, cat, views)",
     tuple(EVAL + n for n in ("MulBackward0", "AddBackward0", "SubBackward0", "RsubBackward1", "DivBackward0",
                              "ClampBackward1", "StackBackward0", "CatBackward0", "CloneBackward0",
                              "UnsqueezeBackward0", "SelectBackward0", "ViewBackward0", "UnsafeViewBackward0",
                              "ReshapeAliasBackward0", "ExpandBackward0", "MeanBackward1", "SliceBackward0",
                              "SqueezeBackward1", "ReluBackward0", "MulBackward1", "AddBackward1"))),
)


def profile_step(key: str = "spiking_dncnn", timesteps: int = 4, batch: int = 16, size: int = 40,
                 variants: tuple[str, ...] = ("a", "c"), steps: int = 7, warmup: int = 2,
                 top: int = 15) -> dict[str, Any]:
    """torch.profiler over ``steps`` training steps of each variant: per-step ms by category, and
    the top operators by self CPU time. Neuron forwards are marked with ``record_function`` by
    patching ``SpikingNeuron.forward``, ``snntorch.Leaky.forward`` and the per-step multi-threshold
    neuron for the duration of the profile."""
    import torch.nn.functional as F
    from torch.profiler import ProfilerActivity, profile, record_function

    from students.neurons import SpikingNeuron

    patched = [(SpikingNeuron, SpikingNeuron.forward), (snn.Leaky, snn.Leaky.forward)]

    def traced(original):
        def forward(self, *args, **kwargs):
            if isinstance(self, StepNeuron) and not self.multi:
                return original(self, *args, **kwargs)  # its snntorch.Leaky is marked already
            with record_function("bench::neuron_forward"):
                return original(self, *args, **kwargs)

        return forward

    patched.append((StepNeuron, StepNeuron.forward))
    student = build_student(key, timesteps)
    out: dict[str, Any] = {"student": key, "T": timesteps, "batch": batch, "size": size, "steps": steps,
                           "load": [load()], "variants": {}}
    for cls, original in patched:
        cls.forward = traced(original)
    try:
        runners: dict[str, Callable[[], None]] = {}
        for v in variants:
            model = build_variant(key, v, timesteps, student)
            if model is None:
                continue
            model.train()
            x, y = variant_inputs(key, v, timesteps, batch, size)
            opt = torch.optim.Adam(model.parameters(), lr=1e-3)

            def step(model=model, x=x, y=y, opt=opt):
                opt.zero_grad(set_to_none=True)
                with record_function("bench::forward"):
                    loss = F.l1_loss(model(x), y)
                with record_function("bench::backward"):
                    loss.backward()
                with record_function("bench::optimizer"):
                    opt.step()

            runners[v] = step
        active = list(runners)
        for _ in range(warmup):
            for v in active:
                runners[v]()
        totals: dict[str, dict[str, float]] = {v: {} for v in active}
        selfs: dict[str, dict[str, float]] = {v: {} for v in active}
        counts: dict[str, dict[str, int]] = {v: {} for v in active}
        for r in range(steps):  # interleaved like the timings: one profiled step per variant per round
            for v in active[r % len(active):] + active[: r % len(active)]:
                with profile(activities=[ProfilerActivity.CPU]) as prof:
                    runners[v]()
                for e in prof.key_averages():
                    totals[v][e.key] = totals[v].get(e.key, 0.0) + e.cpu_time_total / 1e3 / steps  # ms per step
                    selfs[v][e.key] = selfs[v].get(e.key, 0.0) + e.self_cpu_time_total / 1e3 / steps
                    counts[v][e.key] = counts[v].get(e.key, 0) + e.count
        for v in active:
            tot = totals[v]
            fwd, bwd, opt_ms = (tot.get(f"bench::{k}", 0.0) for k in ("forward", "backward", "optimizer"))
            cats: list[tuple[str, float]] = []
            for name, keys in CATEGORIES_FWD:
                cats.append((name, sum(tot.get(k, 0.0) for k in keys)))
            cats.append(("other forward", fwd - sum(ms for _, ms in cats)))
            bcats: list[tuple[str, float]] = []
            for name, keys in CATEGORIES_BWD:
                bcats.append((name, sum(tot.get(k, 0.0) for k in keys)))
            bcats.append(("other backward (autograd engine, loss, accumulation)", bwd - sum(ms for _, ms in bcats)))
            cats += bcats + [("Adam step", opt_ms)]
            top_self = sorted(selfs[v].items(), key=lambda kv: -kv[1])[:top]
            out["variants"][v] = {
                "step_ms": fwd + bwd + opt_ms,
                "forward_ms": fwd, "backward_ms": bwd, "optimizer_ms": opt_ms,
                "categories": [(n, round(ms, 2)) for n, ms in cats],
                "top_self": [(k, round(ms, 2), counts[v][k] // steps) for k, ms in top_self],
            }
    finally:
        for cls, original in patched:
            cls.forward = original
    out["load"].append(load())
    return out


def render_profile(prof: dict[str, Any]) -> str:
    vs = list(prof["variants"])
    headers = ["where the time goes (ms per step)"] + [f"{v}: {VARIANTS[v]}" for v in vs]
    names = [n for n, _ in prof["variants"][vs[0]]["categories"]]
    rows = []
    for i, n in enumerate(names):
        row = [n]
        for v in vs:
            ms = prof["variants"][v]["categories"][i][1]
            total = prof["variants"][v]["step_ms"]
            row.append(f"{ms:.1f} ({100 * ms / total:.0f}%)" if ms > 0.05 else "—")
        rows.append(row)
    rows.append(["total (profiled, includes profiler overhead)"] + [f"{prof['variants'][v]['step_ms']:.1f}" for v in vs])
    text = md_table(headers, rows)
    for v in vs:
        text += f"\nTop operators by self CPU time, {v} ({VARIANTS[v]}), ms per step (calls per step):\n\n"
        text += md_table(["operator", "self ms", "calls"], prof["variants"][v]["top_self"])
    return text


# ---------------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description="Training-step time (forward, backward, Adam) of each spiking student: engine (a) vs naive "
                    "snntorch per-timestep loop (b) vs snntorch neurons layer-major (l) vs ANN twin on T·B (c).",
        epilog="Example: python benchmarks/train_speed.py --students spiking_dncnn --timesteps 4 --repeats 15",
    )
    p.add_argument("--students", nargs="+", default=list(STUDENTS), choices=list(STUDENTS), metavar="NAME",
                   help=f"students to time (default: all: {', '.join(STUDENTS)})")
    p.add_argument("--timesteps", nargs="+", type=int, default=[1, 2, 4, 8], metavar="T", help="default: 1 2 4 8")
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS),
                   help="a engine, b naive snntorch per-step loop, l snntorch neurons layer-major, c ANN twin on T·B")
    p.add_argument("--batch", type=int, default=16, help="batch size B (default 16)")
    p.add_argument("--size", type=int, default=40, help="square input side (default 40)")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps per variant first (default 2)")
    p.add_argument("--repeats", type=int, default=7, help="timed steps per variant, interleaved (default 7)")
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1)")
    p.add_argument("--no-memory", action="store_true", help="skip the fresh-subprocess peak-RSS measurement")
    p.add_argument("--no-check", action="store_true", help="skip the eval-mode equivalence check of b and l")
    p.add_argument("--profile", action="store_true",
                   help="instead of the grid: torch.profiler breakdown of the first student at the first T")
    p.add_argument("--json", type=Path, default=None, help="also write all measurements to this JSON file")
    p.add_argument("--render", type=Path, default=None, metavar="JSON",
                   help="only print the tables of a JSON file written earlier with --json")
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    return p


def print_tables(data: dict[str, Any], header: bool = True) -> None:
    if header:
        print(f"# machine: {machine_line(data['machine'])}")
        print(f"# command: {data['command']}")
    if "profile" in data:
        prof = data["profile"]
        print(f"\nprofile: {prof['student']} T={prof['T']} batch {prof['batch']} {prof['size']}×{prof['size']}, "
              f"load {prof['load']}\n")
        print(render_profile(prof))
        return
    rows = data["rows"]
    variants = [v for v in VARIANTS if any(v in r["variants"] or v in r.get("skipped", {}) for r in rows)]
    print()
    print(render(rows, variants))
    notes = {r["student"]: r["skipped"]["b"] for r in rows if "b" in r.get("skipped", {})}
    for key, why in notes.items():
        print(f"note ({key}, b): {why}")
    verdict = target_verdict(rows)
    if verdict:
        print(verdict)


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    if args.child:
        child_main(json.loads(args.child))
        return
    if args.render:
        print_tables(json.loads(args.render.read_text()))
        return
    torch.set_num_threads(args.threads)
    info = machine_info()
    print(f"# machine: {machine_line(info)}")
    print(f"# command: {command_line()}")
    if args.profile:
        prof = profile_step(args.students[0], args.timesteps[0], args.batch, args.size,
                            tuple(v for v in args.variants if v in ("a", "b", "l", "c")))
        data = {"machine": info, "command": command_line(), "profile": prof}
    else:
        rows = run_speed(args.students, args.timesteps, args.variants, args.batch, args.size, args.warmup,
                         args.repeats, memory=not args.no_memory, threads=args.threads, check=not args.no_check,
                         log=lambda s: print(s, flush=True))
        data = {"machine": info, "command": command_line(), "rows": rows}
    print_tables(data, header=False)
    print(f"machine at end: load {machine_info()['load']}")
    if args.json:
        args.json.write_text(json.dumps(data, indent=1))


if __name__ == "__main__":
    main()
