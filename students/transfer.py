"""Warm starts for spiking students: a spike-aware ANN twin, its exact copy into the student, per-channel
firing-rate calibration, and weight selection from a larger DnCNN teacher.

The chain (issue 14; Bu et al. ICLR 2022, Li et al. ICML 2021, Xu et al. ICLR 2024):

1. :func:`make_twin` deep-copies the student, sets T = 1 and swaps every spiking neuron for a
   :class:`~students.neurons.QCFS` activation with ``levels = T``. The twin trains as a cheap ANN.
2. :func:`copy_twin` copies the twin's weights into the student and gives each neuron its QCFS
   threshold and a start at half of it. For a constant current that makes an IF neuron's rate over T
   steps equal the QCFS output exactly; deeper layers see spike trains that are not constant, so
3. :func:`calibrate_rates` shifts the bias that feeds each neuron, layer by layer on real patches,
   until every channel fires at the twin's mean activation; :func:`calibrate_weights` (optional, after it) then
   fits each layer's weights by gradient so that its firing rates match the twin's activations pixel by pixel,
   and the output layer the twin's output (layer-wise weight calibration, Li et al. 2021).
4. :func:`select_from_dncnn` (optional, before training the twin) fills a SpikingDnCNN twin with
   evenly spaced channels of a trained ``teachers.dncnn.DnCNN`` (its batch norms folded), scaling
   each layer into rate units with the 99.9th percentile of the teacher's activations.
"""
from __future__ import annotations

import copy
from typing import Iterator

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from spikedistill_core.errors import ConfigError

from .neurons import QCFS, MultiThresholdIF, SpikingNeuron

__all__ = [
    "make_twin", "init_thresholds", "check_copy_start", "copy_twin", "neuron_paths", "channel_rates", "calibrate_rates",
    "calibrate_weights", "layer_outputs", "select_from_dncnn",
]


def neuron_paths(model: nn.Module) -> list[str]:
    """Module paths of the spiking neurons (or QCFS twin activations) of ``model``, in forward order."""
    return [name for name, m in model.named_modules() if isinstance(m, (SpikingNeuron, QCFS))]


def _set(model: nn.Module, path: str, module: nn.Module) -> None:
    parent, _, leaf = path.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, leaf, module)


def spikes_per_step(neuron: nn.Module, path: str = "") -> int:
    """How many spikes ``neuron`` can fire in one step: 1 for IF/LIF, n for a multi-threshold neuron whose ladder is
    n equal levels summing to 1 (a burst of up to n spikes of 1/n); its QCFS twin then has T * n levels."""
    if not isinstance(neuron, MultiThresholdIF):
        return 1
    n = len(neuron.levels)
    if any(abs(v - 1.0 / n) > 1e-6 for v in neuron.levels):
        raise ConfigError(
            f"neuron {path!r} has multi-threshold levels {neuron.levels}; a QCFS twin needs n equal levels that sum "
            f"to 1, such as (0.5, 0.5) (up to 2 spikes a step)"
        )
    return n


def make_twin(student: nn.Module) -> nn.Module:
    """The student's spike-aware ANN twin: a copy with T = 1 and a QCFS per neuron, with levels = student T times the
    spikes each neuron can fire in a step (:func:`spikes_per_step`)."""
    timesteps = getattr(student, "timesteps", None)
    paths = [name for name, m in student.named_modules() if isinstance(m, SpikingNeuron)]
    if timesteps is None or not paths:
        raise ConfigError(
            f"make_twin needs a spiking student with `timesteps` and spiking neurons; "
            f"{type(student).__name__} has timesteps={timesteps!r} and {len(paths)} neurons"
        )
    twin = copy.deepcopy(student)
    for path in paths:
        neuron = student.get_submodule(path)
        _set(twin, path, QCFS(timesteps * spikes_per_step(neuron, path), float(neuron.threshold.detach())))
    for m in twin.modules():
        if hasattr(m, "timesteps"):
            m.timesteps = 1
    return twin


def positive_quantile(values: Tensor, percentile: float) -> float:
    """The ``percentile`` of the positive entries of ``values`` (1.0 if none), on at most ~1M of them."""
    positive = values[values > 0]
    if positive.numel() == 0:
        return 1.0
    return float(torch.quantile(positive[:: max(1, positive.numel() // 1_000_000)].float(), percentile / 100))


@torch.no_grad()
def init_thresholds(twin: nn.Module, x: Tensor, percentile: float = 99.0) -> dict[str, float]:
    """Data-based start of a twin: each QCFS threshold, first layer first, becomes the ``percentile`` of its positive
    inputs on ``x``, so that no layer starts silent (at the default init, activity dies out within 4 layers)."""
    chosen: dict[str, float] = {}
    was_training = twin.training
    twin.eval()
    for path in neuron_paths(twin):
        act, seen = twin.get_submodule(path), []
        handle = act.register_forward_hook(lambda _m, args, _o: seen.append(args[0]))
        try:
            twin(x)
        finally:
            handle.remove()
        chosen[path] = positive_quantile(seen[0], percentile)
        act.threshold.fill_(chosen[path])
    twin.train(was_training)
    return chosen


def check_copy_start(student: nn.Module) -> None:
    """Refuse a student whose neurons do not start at half a spike's threshold (``init_membrane`` 0.5, or 0.5 / n for
    n-spike bursts), where a QCFS twin's rounding sits. Set in place by the copy, another start would be lost when a
    checkpoint or an export rebuilds the student from its recipe, so the recipe must say it."""
    for path in neuron_paths(student):
        neuron = student.get_submodule(path)
        need = 0.5 / spikes_per_step(neuron, path)
        if abs(neuron.init_membrane - need) > 1e-9:
            raise ConfigError(
                f"a QCFS twin's copy needs neuron {path!r} to start at half a spike's threshold: set the student's "
                f"init_membrane: {need:g} (it has init_membrane={neuron.init_membrane!r}), so resumed and exported "
                "students start there too"
            )


@torch.no_grad()
def copy_twin(twin: nn.Module, student: nn.Module) -> None:
    """Load the twin's weights into the student in place; each neuron takes its QCFS threshold and must start at
    half of it (``init_membrane: 0.5``, checked; soft reset is required: it is what QCFS models). A multi-threshold
    neuron emits ``threshold * level`` where the twin's next layer expects the rate, so its threshold becomes 1 and
    the module feeding it (conv or norm) is divided by the twin's threshold instead; it must start at half its
    smallest level (0.25 for [0.5, 0.5])."""
    check_copy_start(student)
    targets = dict(student.named_modules())
    for path in neuron_paths(twin):
        neuron = targets.get(path)
        if not isinstance(neuron, SpikingNeuron):
            raise ConfigError(f"copy_twin: the twin's activation {path!r} has no spiking neuron in the student")
        if neuron.reset_mechanism != "subtract":
            raise ConfigError(
                f"copy_twin: neuron {path!r} has reset_mechanism={neuron.reset_mechanism!r}; QCFS models a soft "
                "reset, so the student needs reset_mechanism='subtract'"
            )
        neuron.threshold.copy_(twin.get_submodule(path).threshold)
    own = student.state_dict()
    weights = {k: v for k, v in twin.state_dict().items() if k in own and not k.endswith("threshold")}
    missing = [k for k in own if k not in weights and not k.endswith(("threshold", "beta"))]
    if missing:
        raise ConfigError(f"copy_twin: the twin lacks student weights {missing[:5]}; was it made by make_twin?")
    student.load_state_dict(weights, strict=False)
    for path in neuron_paths(student):
        neuron = student.get_submodule(path)
        if isinstance(neuron, MultiThresholdIF):
            feeding = _module_feeding(student, path)
            feeding.weight.div_(neuron.threshold)
            feeding.bias.div_(neuron.threshold)
            neuron.threshold.fill_(1.0)


def _module_feeding(model: nn.Module, path: str) -> nn.Module:
    """The module (conv or norm) whose weight and bias make neuron ``path``'s input: the last one with a bias that is
    registered before it in its parent."""
    parent, _, leaf = path.rpartition(".")
    siblings = list((model.get_submodule(parent) if parent else model).named_children())
    names = [n for n, _ in siblings]
    for _, m in reversed(siblings[: names.index(leaf)]):
        m = getattr(m, "layer", m)  # TimeDistributed / InputLayer wrap the conv as `.layer`
        if isinstance(getattr(m, "bias", None), nn.Parameter):
            return m
    raise ConfigError(
        f"no bias feeds neuron {path!r} (its parent has no conv or norm with a bias before it); rate calibration and "
        "the multi-threshold copy support students whose neurons follow a biased conv or a batch norm"
    )


class _Enough(Exception):
    """Raised by a hook to end a forward pass once every wanted output has been seen."""


@torch.no_grad()
def channel_rates(model: nn.Module, x: Tensor, paths: list[str]) -> dict[str, Tensor]:
    """Mean output per channel (spikes per step, or QCFS rate) of each module in ``paths`` on ``x``; the forward
    stops once all of them have run."""
    rates: dict[str, Tensor] = {}

    def hook(name: str):
        def fn(_m, _i, out: Tensor) -> None:
            dims = [d for d in range(out.dim()) if d != out.dim() - 3]  # [..., C, H, W]: all but C
            rates[name] = out.float().mean(dims)
            if len(rates) == len(paths):
                raise _Enough

        return fn

    handles = [model.get_submodule(p).register_forward_hook(hook(p)) for p in paths]
    was_training = model.training
    model.eval()
    try:
        model(x)
    except _Enough:
        pass
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    return rates


@torch.no_grad()
def calibrate_rates(
    student: nn.Module, x: Tensor, targets: dict[str, Tensor], iterations: int = 5, tolerance: float = 1e-3
) -> dict[str, float]:
    """Shift the bias feeding each neuron, first layer first, so that every channel's firing rate on ``x`` meets its
    target (``{neuron path: [C] rates}``) within ``tolerance`` or ``iterations`` tries; returns each layer's largest
    remaining per-channel error."""
    errors: dict[str, float] = {}
    for path in targets:
        bias = _module_feeding(student, path).bias
        threshold = float(student.get_submodule(path).threshold)
        delta = targets[path] - channel_rates(student, x, [path])[path]
        for _ in range(iterations):
            if float(delta.abs().max()) <= tolerance:
                break
            bias.add_(delta.to(bias.dtype) * threshold)
            delta = targets[path] - channel_rates(student, x, [path])[path]
        errors[path] = float(delta.abs().max())
    return errors


def layer_outputs(model: nn.Module, x: Tensor, paths: list[str]) -> tuple[dict[str, Tensor], Tensor]:
    """Each module in ``paths`` (a neuron or a twin's activation): its output on ``x`` as a per-step mean
    ``[B, C, H, W]``; and the model's output."""
    seen: dict[str, Tensor] = {}
    hooks = [model.get_submodule(p).register_forward_hook(
        lambda _m, _i, out, p=p: seen.__setitem__(p, out.mean(0) if out.dim() == 5 else out)) for p in paths]
    try:
        out = model(x)
    finally:
        for h in hooks:
            h.remove()
    return seen, out


def _fit(params: list[nn.Parameter], loss_fn, iterations: int, lr: float) -> float:
    """Adam on ``params`` alone for ``iterations`` steps of ``loss_fn()``; returns the loss after the last step."""
    for p in params:
        p.requires_grad_(True)
    optimizer = torch.optim.Adam(params, lr=lr)
    for _ in range(iterations):
        loss = loss_fn()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    for p in params:
        p.requires_grad_(False)
    with torch.no_grad():
        return float(loss_fn())


def calibrate_weights(student: nn.Module, twin: nn.Module, x: Tensor, iterations: int = 30, lr: float = 1e-3,
                      output: str = "tail") -> dict[str, float]:
    """Layer-wise weight calibration: first layer first, the parameters that feed each neuron (the modules before it
    in its parent block) are fitted by surrogate-gradient Adam so that the neuron's firing rate on ``x`` matches the
    twin's activation (MSE); the layers before it are already fitted and fixed, so the block's input is recorded once.
    Then the ``output`` module is fitted so that the student's output matches the twin's. No clean image is used.
    Returns each fitted layer's final MSE; both networks keep their modes and ``requires_grad`` flags."""
    paths = neuron_paths(student)
    was_training = [m.training for m in (student, twin)]
    student.eval()
    twin.eval()
    trainable = {p: p.requires_grad for p in student.parameters()}
    for p in trainable:
        p.requires_grad_(False)
    errors: dict[str, float] = {}
    try:
        with torch.no_grad():
            targets, twin_out = layer_outputs(twin, x, neuron_paths(twin))
        for path in paths:
            parent_path, _, leaf = path.rpartition(".")
            parent = student.get_submodule(parent_path) if parent_path else student
            names = [n for n, _ in parent.named_children()]
            feeding = [m for n, m in parent.named_children() if names.index(n) < names.index(leaf)]
            params = [p for m in feeding for p in m.parameters()]
            if not params or parent is student:
                raise ConfigError(f"calibrate_weights: neuron {path!r} has no parameterised module before it in its "
                                  "own block; weight calibration needs conv -> neuron blocks")
            recorded: list[Tensor] = []
            hook = feeding[0].register_forward_pre_hook(lambda _m, args: recorded.append(args[0]))
            try:
                with torch.no_grad():
                    student(x)
            finally:
                hook.remove()
            inputs, neuron, target = recorded[0], student.get_submodule(path), targets[path]

            def layer_loss() -> Tensor:
                h = inputs
                for m in feeding:  # the block's own order: conv (, norm), then the neuron
                    h = m(h)
                out = neuron(h)
                return F.mse_loss(out.mean(0) if out.dim() == 5 else out, target)

            errors[path] = _fit(params, layer_loss, iterations, lr)
        try:
            head = student.get_submodule(output)
        except AttributeError:
            raise ConfigError(f"calibrate_weights: {type(student).__name__} has no output module {output!r}") from None
        errors[output] = _fit(list(head.parameters()), lambda: F.mse_loss(student(x), twin_out), iterations, lr)
    finally:
        for p, flag in trainable.items():
            p.requires_grad_(flag)
        student.train(was_training[0])
        twin.train(was_training[1])
    return errors


def _dncnn_layers(teacher: nn.Module) -> Iterator[tuple[Tensor, Tensor]]:
    """(weight, bias) of every conv of a ``teachers.dncnn.DnCNN``, each batch norm folded into its conv."""
    layers = list(teacher.body)
    for i, m in enumerate(layers):
        if not isinstance(m, nn.Conv2d):
            continue
        w, b = m.weight.detach(), m.bias.detach() if m.bias is not None else torch.zeros(m.out_channels)
        nxt = layers[i + 1] if i + 1 < len(layers) else None
        if isinstance(nxt, nn.BatchNorm2d):
            scale = nxt.weight.detach() / torch.sqrt(nxt.running_var + nxt.eps)
            w = w * scale[:, None, None, None]
            b = (b - nxt.running_mean) * scale + nxt.bias.detach()
        yield w, b


@torch.no_grad()
def select_from_dncnn(teacher: nn.Module, twin: nn.Module, x: Tensor, percentile: float = 99.9) -> None:
    """Initialise a SpikingDnCNN twin (``make_twin`` of a ``norm='none'`` student) from a trained DnCNN teacher.

    The twin's head and blocks take the teacher's first layers and its tail the teacher's last one (negated:
    the teacher outputs ``x - body(x)``, the twin ``x + tail(...)``), with evenly spaced channels, or the first
    ones when the teacher was trained with a nested sub-network of the student's width. Each QCFS
    threshold is the nested network's learned one when it was trained with QCFS (``nested_levels``; with the twin's
    levels the twin then computes it exactly, with more it keeps the clip and rounds finer), else the ``percentile``
    of that layer's positive pre-activations on ``x``; the next layer's
    weights are multiplied by it, so the twin computes the teacher's clipped, quantised features in rate units.
    """
    body, blocks = getattr(teacher, "body", None), getattr(twin, "blocks", None)
    if not isinstance(body, nn.Sequential) or blocks is None or not hasattr(twin, "head"):
        raise ConfigError(
            f"weight selection maps a teachers.dncnn.DnCNN into a SpikingDnCNN twin; got teacher "
            f"{type(teacher).__name__} and student {type(twin).__name__}"
        )
    if any(hasattr(b, "bn") for b in blocks):
        raise ConfigError("weight selection needs a student with norm='none' (the teacher's batch norms are folded "
                          "into the selected convs; a student batch norm would re-normalise them)")
    convs = list(_dncnn_layers(teacher))
    targets = [twin.head.conv.layer] + [b.conv.layer for b in blocks]
    if len(targets) + 1 > len(convs):
        raise ConfigError(f"the student has {len(targets) + 1} convs but the teacher only {len(convs)}; "
                          "weight selection needs a student no deeper than its teacher")
    t_features, s_features = convs[0][0].shape[0], targets[0].out_channels
    if s_features > t_features:
        raise ConfigError(f"the student has {s_features} features but the teacher only {t_features}")
    nested = getattr(teacher, "nested_features", None) == s_features  # trained to work on its first channels
    keep = torch.arange(s_features) if nested else torch.linspace(0, t_features - 1, s_features).round().long()
    acts = [twin.get_submodule(p) for p in neuron_paths(twin)]
    # a nested network trained with QCFS brings its thresholds (its clip points serve any number of levels)
    learned = getattr(teacher, "nested_acts", None) if nested else None
    h, scale_in = x, None
    for k, conv in enumerate(targets):
        w, b = convs[k]
        w = w[keep] if k == 0 else w[keep][:, keep] * scale_in
        conv.weight.copy_(w)
        conv.bias.copy_(b[keep])
        z = F.conv2d(h, conv.weight, conv.bias, padding=conv.padding)
        lam = float(learned[k].threshold) if learned is not None else positive_quantile(z, percentile)
        acts[k].threshold.fill_(lam)
        h, scale_in = acts[k](z), lam
    w, b = convs[-1]
    twin.tail.weight.copy_(-w[:, keep] * scale_in)
    twin.tail.bias.copy_(-b)
