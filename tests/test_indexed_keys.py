"""Keys that address one list entry by index (`--model.init_args.hints.0.weight=0.5`): parsing, editing, errors
that name the valid indices and keys, and every shipped sweep file's first run resolving through the real CLI."""
import sys
from pathlib import Path

import pytest
import yaml

from distill.cli import main
from distill.errors import ConfigError
from distill.indexed_keys import IndexedOverride, apply_indexed, split_indexed

REPO = Path(__file__).resolve().parents[1]
HINTS = [{"teacher": "body.16", "student": "blocks.3.neuron", "weight": 0.12, "schedule": None}]


def test_split_takes_both_spellings_and_leaves_the_rest():
    words = ["fit", "--config", "a.0.yaml", "--model.init_args.hints.0.weight=0.5", "--trainer.max_steps=3",
             "--model.init_args.hints.1.schedule", "{kind: cosine}", "--data.sigma", "15"]
    rest, found = split_indexed(words)
    assert rest == ["fit", "--config", "a.0.yaml", "--trainer.max_steps=3", "--data.sigma", "15"]
    assert found == [IndexedOverride("model.init_args.hints", 0, ("weight",), 0.5),
                     IndexedOverride("model.init_args.hints", 1, ("schedule",), {"kind": "cosine"})]


def test_apply_edits_a_copy_of_the_resolved_list():
    current = [dict(h) for h in HINTS]
    _, found = split_indexed(["--model.init_args.hints.0.weight=0.5", "--model.init_args.hints.0.student=x"])
    out = apply_indexed(found, {"model.init_args.hints": current}.get)
    assert out == ['--model.init_args.hints=[{"teacher": "body.16", "student": "x", "weight": 0.5, '
                   '"schedule": null}]']
    assert current == HINTS


@pytest.mark.parametrize("word, message", [
    ("--model.init_args.hints.1.weight=0.5", "has 1 entry; valid indices: 0..0"),
    ("--model.init_args.hints.0.wieght=0.5", "no key 'wieght'; valid keys: schedule, student, teacher, weight"),
    ("--model.init_args.hints.0.weight.x=1", "cannot address 'x'"),
    ("--model.init_args.lr.0=1", "model.init_args.lr is not a list"),
])
def test_bad_index_or_key_names_what_is_valid(word, message):
    _, found = split_indexed([word])
    with pytest.raises(ConfigError, match=message.replace(".", r"\.")):
        apply_indexed(found, {"model.init_args.hints": HINTS, "model.init_args.lr": 0.1}.get)


def test_a_key_without_its_value_is_an_error():
    with pytest.raises(ConfigError, match="needs a value"):
        split_indexed(["--model.init_args.hints.0.weight"])


def test_cli_sets_one_hint_field(capsys, monkeypatch):
    monkeypatch.chdir(REPO)
    monkeypatch.setattr(sys, "argv", ["spikedistill"])
    with pytest.raises(SystemExit) as exit_:
        main(["fit", "--config", "recipes/quickstart_hint.yaml", "--model.init_args.hints.0.weight", "0.5",
              "--model.init_args.hints.0.adapter=conv_bn", "--print_config"])
    assert exit_.value.code == 0
    hints = yaml.safe_load(capsys.readouterr().out)["model"]["init_args"]["hints"]
    assert len(hints) == 1 and hints[0]["weight"] == 0.5 and hints[0]["adapter"] == "conv_bn"
    assert hints[0]["teacher"] == "body.16"  # the rest of the entry is the recipe's


def test_cli_error_for_an_index_past_the_end(capsys, monkeypatch):
    monkeypatch.chdir(REPO)
    with pytest.raises(SystemExit) as exit_:
        main(["fit", "--config", "recipes/quickstart_hint.yaml", "--config", "recipes/quickstart_hint_nohint.yaml",
              "--model.init_args.hints.0.weight=0.5", "--print_config"])
    assert exit_.value.code == 2
    assert "model.init_args.hints has 0 entries" in capsys.readouterr().err
