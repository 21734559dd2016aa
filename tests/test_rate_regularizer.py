"""The firing-rate regulariser: its value against rates counted by hand, its logs in training, that it lowers the
rates it penalises, and its configuration errors."""
import functools

import lightning as L
import pytest
import torch
import yaml
from torch import nn

from distill.data import DenoisingDataModule
from distill.distillation import DistillationModule
from distill.errors import ConfigError
from distill.module import RestorationModule
from distill.rate_regularizer import RateRegularizer, SpikeTaps
from distill.schedules import WeightSchedule
from students.neurons import IF
from students.probes import firing_rates, overall_firing_rate, probing
from students.spiking_dncnn import SpikingDnCNN
from teachers.dncnn import DnCNN

pytestmark = pytest.mark.usefixtures("single_thread")


class TwoLayers(nn.Module):
    """`gain` x current -> IF `a` (threshold 1) -> x 0.6 -> IF `b` (threshold 1)."""

    def __init__(self) -> None:
        super().__init__()
        self.gain = nn.Parameter(torch.ones(()))
        self.a, self.b = IF(threshold=1.0), IF(threshold=1.0)

    def forward(self, current: torch.Tensor) -> torch.Tensor:
        return self.b(0.6 * self.a(self.gain * current))


#: four units driven by constant currents over T = 4 steps (subtract reset by the previous step's spike, from rest):
#: a: 0.6 -> membranes .6 1.2 .8 1.4 -> 2 spikes; 0.3 -> 1 spike (step 4); 1.5 -> 4 spikes; 0 -> none: 7 of 16.
#: b gets 0.6 x a's spikes: unit 1 (0 .6 0 .6) fires at step 4, unit 3 (.6 every step) at steps 2 and 4: 3 of 16.
CURRENT = torch.tensor([0.6, 0.3, 1.5, 0.0]).expand(4, 1, 4)
RATE_A, RATE_B = 7 / 16, 3 / 16


def hand_rates():
    net = TwoLayers()
    taps = SpikeTaps(net)
    with taps.attached():
        net(CURRENT)
    return net, taps.rates()


@pytest.mark.parametrize("options, step, expected", [
    ({"kind": "l1", "weight": 2.0}, 0, 2.0 * (RATE_A + RATE_B) / 2),
    ({"kind": "target", "weight": 1.0, "target": 0.25}, 0, ((RATE_A - 0.25) ** 2 + (RATE_B - 0.25) ** 2) / 2),
    ({"kind": "target", "weight": 3.0, "target": {"b": 0.5}}, 0, 3.0 * (RATE_B - 0.5) ** 2),
    # linear decay from 1 to 0 over 10 steps: half the weight at step 5
    ({"kind": "l1", "weight": 2.0, "schedule": WeightSchedule(kind="linear", decay_steps=10)}, 5,
     0.5 * 2.0 * (RATE_A + RATE_B) / 2),
])
def test_loss_equals_hand_computed_rates(options, step, expected):
    regularizer = RateRegularizer(**options)
    net, rates = hand_rates()
    assert {k: float(v.detach()) for k, v in rates.items()} == pytest.approx({"a": RATE_A, "b": RATE_B})
    loss = regularizer.loss(rates, regularizer.targets(net), step)
    assert float(loss.detach()) == pytest.approx(expected)
    loss.backward()  # through the surrogate gradient down to the gain in front of the first neuron
    assert net.gain.grad is not None and float(net.gain.grad) != 0.0


def test_l1_gradient_lowers_the_drive():
    regularizer = RateRegularizer(kind="l1", weight=1.0)
    net, rates = hand_rates()
    regularizer.loss(rates, regularizer.targets(net), 0).backward()
    assert float(net.gain.grad) > 0  # a gradient step shrinks the gain, so both layers fire less


def tiny_data():
    return DenoisingDataModule(channels=1, sigma=25.0, patch_size=16, patches_per_epoch=64, batch_size=8, eval_size=32)


def tiny_student():
    """A student that fires from the start (a low threshold): every layer has a rate to lower."""
    return SpikingDnCNN(in_channels=1, features=6, depth=4, timesteps=2, neuron="if", norm="none", zero_tail=False,
                        threshold=0.25)


def fit(module, max_steps, callbacks=()):
    trainer = L.Trainer(max_steps=max_steps, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, limit_val_batches=0, num_sanity_val_steps=0,
                        callbacks=list(callbacks), default_root_dir=None)
    trainer.fit(module, datamodule=tiny_data())
    return trainer


class CountRates(L.Callback):
    """Before each step, the rates the probes count on the step's batch (the same weights, train mode); after it,
    what the module logged."""

    def __init__(self):
        self.counted, self.logged = [], []

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        with torch.no_grad(), probing(module.network):
            module.network(batch["input"])
        self.counted.append(firing_rates(module.network))

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        self.logged.append({k: float(v) for k, v in trainer.callback_metrics.items()
                            if k.startswith("train/rate")})


@pytest.mark.parametrize("role", ["alone", "distilled"])
def test_training_logs_each_layer_rate_and_the_penalty(role):
    L.seed_everything(0)
    regularizer = RateRegularizer(kind="l1", weight=0.5)
    if role == "alone":
        module = RestorationModule(model=tiny_student(), rate_regularizer=regularizer)
    else:
        module = DistillationModule(teacher=DnCNN(in_channels=1, features=4, depth=3), student=tiny_student(),
                                    example_size=16, rate_regularizer=regularizer)
    watch = CountRates()
    fit(module, 3, [watch])
    layers = ["head.neuron", "blocks.0.neuron", "blocks.1.neuron"]
    for counted, logged in zip(watch.counted, watch.logged):
        assert sorted(counted) == sorted(layers) and all(counted[k] > 0 for k in layers)
        assert {k: logged[f"train/rate/{k}"] for k in layers} == pytest.approx(counted)
        assert logged["train/rate_loss"] == pytest.approx(0.5 * sum(counted.values()) / 3)


def test_time_chunked_student_gives_the_same_rates_and_gradients():
    """With `checkpoint_segments` the neurons run once per time chunk (and again in backward's recompute): the
    captured rates and the penalty's gradients are those of the whole forward."""
    regularizer, x = RateRegularizer(kind="target", weight=1.0, target=0.05), torch.rand(2, 1, 12, 12)
    results = []
    for segments in (None, 2):
        torch.manual_seed(0)
        student = SpikingDnCNN(in_channels=1, features=6, depth=4, timesteps=4, neuron="if", norm="none",
                               zero_tail=False, threshold=0.25, checkpoint_segments=segments)
        taps = SpikeTaps(student)
        with taps.attached():
            student(x)
        rates = taps.rates()
        regularizer.loss(rates, regularizer.targets(student), 0).backward()
        grads = {name: p.grad for name, p in student.named_parameters() if p.grad is not None}
        results.append(({k: float(v.detach()) for k, v in rates.items()}, grads))
    (whole, whole_grads), (chunked, chunked_grads) = results
    assert all(rate > 0 for rate in whole.values()) and chunked == pytest.approx(whole)
    assert whole_grads["blocks.0.conv.layer.weight"].abs().sum() > 0  # the penalty reaches the body's weights
    assert whole_grads.keys() == chunked_grads.keys()
    for name, grad in whole_grads.items():
        torch.testing.assert_close(chunked_grads[name], grad, msg=name)


def mean_rate_after_training(regularizer):
    """The tiny student's firing rate on fixed noisy crops after 40 steps (seeded), with or without `regularizer`."""
    L.seed_everything(0)
    module = RestorationModule(model=tiny_student(), rate_regularizer=regularizer,
                               optimizer=functools.partial(torch.optim.Adam, lr=5e-3))
    fit(module, 40)
    x = torch.rand((4, 1, 32, 32), generator=torch.Generator().manual_seed(1))
    x = x + 0.1 * torch.randn((4, 1, 32, 32), generator=torch.Generator().manual_seed(2))
    with torch.no_grad(), probing(module.network.eval()):
        module.network(x)
    return overall_firing_rate(module.network)


@pytest.mark.parametrize("regularizer", [RateRegularizer(kind="l1", weight=1.0),
                                         RateRegularizer(kind="target", weight=20.0, target=0.02)])
def test_regularizer_lowers_firing_rates(regularizer):
    plain, regularised = mean_rate_after_training(None), mean_rate_after_training(regularizer)
    assert plain > 0.1, plain  # the control fires, so there is something to lower
    assert regularised < 0.5 * plain, (regularised, plain)


@pytest.mark.parametrize("options, message", [
    ({"kind": "l2"}, r"kind='l2' is not one of \['l1', 'target'\]"),
    ({"weight": -1.0}, r"weight=-1.0 is not allowed: use a finite number >= 0"),
    ({"weight": True}, r"weight=True is not allowed"),
    ({"kind": "l1", "target": 0.1}, r"target=0.1 is not allowed with kind 'l1'"),
    ({"kind": "target"}, r"kind 'target' needs target: a rate in \[0, 1\]"),
    ({"kind": "target", "target": 1.5}, r"target=1.5 is not allowed; use a rate in \[0, 1\]"),
    ({"kind": "target", "target": {}}, r"target=\{\} is not allowed \(empty\)"),
    ({"kind": "target", "target": {"head.neuron": -0.1}}, r"bad entries \{'head.neuron': -0.1\}"),
])
def test_config_errors_name_the_value_and_what_is_allowed(options, message):
    with pytest.raises(ConfigError, match=message):
        RateRegularizer(**options)


def test_targets_must_name_neurons_of_a_spiking_network():
    regularizer = RateRegularizer(kind="target", target={"blocks.9.neuron": 0.1})
    paths = r"\['head.neuron', 'blocks.0.neuron', 'blocks.1.neuron'\]"
    with pytest.raises(ConfigError, match=r"\['blocks.9.neuron'\], which are not spiking neurons of SpikingDnCNN; "
                                          rf"its neuron paths are {paths}"):
        regularizer.targets(tiny_student())
    with pytest.raises(ConfigError, match="needs a spiking network, but DnCNN has no spiking neuron"):
        RateRegularizer().targets(DnCNN(in_channels=1, features=4, depth=3))


def test_a_network_without_neurons_fails_at_setup():
    module = RestorationModule(model=DnCNN(in_channels=1, features=4, depth=3), rate_regularizer=RateRegularizer())
    with pytest.raises(ConfigError, match="remove model.init_args.rate_regularizer"):
        fit(module, 1)


def test_recipe_syntax(capsys, repo_root, monkeypatch):
    from distill.cli import main

    monkeypatch.chdir(repo_root)
    option = "{kind: target, weight: 2.0, target: {blocks.0.neuron: 0.1}, schedule: {warmup_steps: 10}}"
    with pytest.raises(SystemExit) as exit_:
        main(["fit", "--config", "recipes/quickstart_hint.yaml", f"--model.init_args.rate_regularizer={option}",
              "--print_config"])
    assert exit_.value.code == 0
    parsed = yaml.safe_load(capsys.readouterr().out)["model"]["init_args"]["rate_regularizer"]
    assert parsed["kind"] == "target" and parsed["weight"] == 2.0 and parsed["target"] == {"blocks.0.neuron": 0.1}
    assert parsed["schedule"]["warmup_steps"] == 10
