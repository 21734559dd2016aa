"""Property test of the recipe loader: random recipe values (wrong types, out-of-range numbers, unknown keys,
bad names for hint fields, neurons, reset mechanisms ...) layered on the quickstart either build a run that
can take a training step, or stop with a clear error: the project's own (`SpikeDistillError`, also when
jsonargparse wraps it), an invalid Trainer setting, or the parser's `error: ...` naming the key. Never a bare
TypeError / IndexError / RuntimeError from deep inside torch.

The data layer has its own fuzz (tests/test_data_fuzz.py); here the values reach it through the CLI.
"""
from __future__ import annotations

import atexit
import copy
import shutil
import tempfile
import warnings
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from cli_helpers import QUICKSTART, tiny_recipe, write_images
from distill.cli import SpikeDistillCLI, user_error
from distill.module import check_channels

WORK = Path(tempfile.mkdtemp(prefix="spikedistill-fuzz-"))
atexit.register(shutil.rmtree, WORK, ignore_errors=True)
RECIPE = tiny_recipe(WORK)
PHOTOS = write_images(WORK / "photos", count=3, size=48)

values = st.sampled_from
ANY_BAD = [None, "x", -1, 0, 2.5, [1, 2], {"a": 1}, True]

DATA = {
    "sigma": st.one_of(st.floats(-50, 100), values(["abc", None, [1, 2], float("nan"), float("inf")])),
    "patch_size": st.one_of(st.integers(-10, 80), values([10**6, "big", 2.5, None])),
    "batch_size": st.one_of(st.integers(-2, 9), values(["x", 1.5, 10**9])),
    "patches_per_epoch": st.one_of(st.integers(-5, 40), values([None, "many"])),
    "eval_size": st.one_of(st.integers(-5, 80), values([None, "s"])),
    "channels": values([0, 1, 2, 3, "rgb", None]),
    "small_images": values(["error", "skip", "crop", 1]),
    "seed": values([-1, 0, 7, 2**70, "s"]),
}
STUDENT = {
    "timesteps": values([-1, 0, 1, 2, 1.5, "four", None, 10**9]),
    "threshold": values([-1.0, 0, 0.5, 1.0, "x", float("inf"), float("nan")]),
    "beta": values([-0.5, 0.0, 0.9, 1.0, 1.5, "b"]),
    "neuron": values(["lif", "if", "multi_threshold", "relu", "alif", "", 3]),
    "reset_mechanism": values(["subtract", "zero", "none", 1, None]),
    "spike_grad": values(["atan", "fast_sigmoid", "triangle", "nope", 5]),
    "features": values([0, -1, 1, 6, "f"]),
    "depth": values([0, 1, 2, 3, 4]),
    "in_channels": values([0, 1, 2, 3]),
    "norm": values(["bn", "tdbn", "none", "ln"]),
    "encoding": values(["direct", "rate", "poisson"]),
    "decoding": values(["mean", "membrane", "max"]),
    "checkpoint_segments": values([None, 0, 1, 2, -1]),
}
TEACHER = {
    "features": values([8, 16, 0]),
    "depth": values([4, 5, 1]),
    "in_channels": values([1, 3]),
    "bn": values([True, False]),
}
HINT = st.fixed_dictionaries({
    "teacher": values(["body.4", "body.1", "body.0", "body.44", "", "x.y"]),
    "student": values(["blocks.0.neuron", "head.neuron", "blocks.9.neuron", "tail", "blocks.0.conv", "head"]),
}, optional={
    "student_signal": values(["spikes", "membrane", "current", "voltage"]),
    "time_reduce": values(["mean", "last", "per_step", "max"]),
    "adapter": values(["identity", "conv1x1", "conv_bn", "conv_stack", "mlp"]),
    "loss": values(["mse", "l1", "cosine", "attention", "kl"]),
    "weight": values([-1, 0, 0.5, "w", float("nan")]),
    "schedule": values([None, {"kind": "cosine", "decay_steps": 0}, {"kind": "linear", "decay_steps": 10},
                        {"kind": "exp"}, {"warmup_steps": -3}, {"off_after": 2}]),
    "resize": values([True, False, "yes"]),
    "extra_field": values([1]),
})
MODULE = {
    "example_size": values([-3, 0, 1, 7, 16, "s"]),
    "output_distillation": values([None, {"weight": -1}, {"weight": 0.5, "loss": "l1"}, {"loss": "kl"},
                                   {"weight": 0.5, "schedule": {"kind": "cosine"}}]),
    "energy": values(["45nm-fp32", "bogus", {"e_mac_pj": -1, "e_ac_pj": 1}, {"preset": "45nm-int8"},
                      {"e_mac_pj": 1}, 5]),
    "optimizer": values([{"class_path": "torch.optim.Adam", "init_args": {"lr": -1.0}},
                         {"class_path": "torch.optim.SGD", "init_args": {"lr": 0.1, "momentum": -1}},
                         {"class_path": "torch.optim.Adam", "init_args": {"lr": "fast"}},
                         {"class_path": "torch.optim.Nope"}]),
    "restoration_loss": values([{"init_args": {"l1": -1.0}}, {"init_args": {"l1": 0.0}},
                                {"init_args": {"l1": 1.0, "ssim": 0.5}}, {"init_args": {"huber": 1.0}}]),
    "convergence": values([{"psnr": ["x"]}, {"psnr": [24.0]}, {"below_teacher": [-1.0]}, {"psnr": 3}]),
    "crop_border": values([-1, 0, 2, "c"]),
    "y_channel": values([True, False, "y"]),
    "cache_teacher": values([True, False, 3]),
}
TRAINER = {
    "max_steps": values([-5, -1, 0, 2, "many"]),
    "val_check_interval": values([0, -1, 2, 0.5, 1.5, "v"]),
    "accumulate_grad_batches": values([0, 1, 2, -1]),
    "gradient_clip_val": values([-1.0, 0.5, "g"]),
    "precision": values(["32", "64-true", "bf16-mixed", "16-mixed", "banana", 8]),
    "log_every_n_steps": values([0, 1, -3]),
}
POOL: list[tuple[tuple[str, ...], st.SearchStrategy]] = (
    [(("data", "init_args", k), v) for k, v in DATA.items()]
    + [(("model", "init_args", "student", "init_args", k), v) for k, v in STUDENT.items()]
    + [(("model", "init_args", "teacher", "init_args", k), v) for k, v in TEACHER.items()]
    + [(("model", "init_args", k), v) for k, v in MODULE.items()]
    + [(("trainer", k), v) for k, v in TRAINER.items()]
    + [(("model", "init_args", "hints"), st.lists(HINT, max_size=2))] * 6  # hints get a larger share
    + [(path + ("bogus_key",), values(ANY_BAD)) for path in
       [("data", "init_args"), ("model", "init_args"), ("model", "init_args", "student", "init_args"), ("trainer",)]]
)


@st.composite
def recipes(draw) -> dict:
    """The tiny recipe with 1 to 3 of its values replaced (or unknown keys added)."""
    recipe: dict = {"data": {"init_args": {"train": [str(PHOTOS)], "val": [str(PHOTOS)]}}}
    count = draw(st.integers(1, 3))
    for index in draw(st.permutations(range(len(POOL))))[:count]:
        path, strategy = POOL[index]
        node = recipe
        for key in path[:-1]:
            node = node.setdefault(key, {})
        node[path[-1]] = draw(strategy)
    return recipe


def outcome(args: list[str], capsys) -> str:
    """'ok', or the kind of clear error; any other exception propagates and fails the test."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            cli = SpikeDistillCLI(args=args, run=False)
            module, data = cli.model, cli.datamodule
            check_channels(data, module.network, module.network_role)
            data.setup("fit")
            batch = next(iter(data.train_dataloader()))
            loss = module.training_step(batch, 0)
            loss.backward()
            module.configure_optimizers()
    except SystemExit as exc:
        err = capsys.readouterr().err
        assert exc.code == 2, err
        assert "Traceback" not in err and err.strip().splitlines()[-1].startswith(("error:", " ")), err
        assert len(err.strip().splitlines()) <= 30, err
        return "parse error"
    except Exception as exc:  # noqa: BLE001 - classified below; a bare library error re-raises
        error = user_error(exc)
        if error is None:
            raise
        message = str(error)
        assert message and "\n" not in message.strip(), message  # one paragraph
        return type(error).__name__
    assert loss.dim() == 0
    return "ok"


@pytest.mark.filterwarnings("ignore")
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                  HealthCheck.function_scoped_fixture])
@given(recipe=recipes())
def test_random_recipe_values_build_or_fail_clearly(recipe, tmp_path, capsys):
    path = tmp_path / "fuzz.yaml"
    path.write_text(yaml.safe_dump(copy.deepcopy(recipe), allow_unicode=True))
    args = ["--config", QUICKSTART, "--config", str(RECIPE), "--config", str(path),
            f"--trainer.default_root_dir={tmp_path / 'run'}", "--trainer.logger=false"]
    event(outcome(args, capsys))
