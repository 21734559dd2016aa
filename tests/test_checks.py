"""The shared argument checks (spikedistill_core.checks): what they accept, what they refuse, and messages that
name the argument, its value and the allowed range."""
import numpy as np
import pytest

from spikedistill_core.checks import check_int, check_number
from spikedistill_core.errors import ConfigError


def test_check_int_accepts_integers_at_or_above_the_minimum():
    assert check_int("depth", 2, minimum=2) == 2
    value = check_int("seed", np.int64(7), minimum=0)
    assert value == 7 and type(value) is int


@pytest.mark.parametrize("value", [True, 1.0, "3", None, 0])
def test_check_int_refuses_bools_floats_strings_and_small_values(value):
    with pytest.raises(ConfigError, match=rf"^features={value!r} is not allowed: use an integer >= 1 \(a hint\)$"):
        check_int("features", value, 1, " (a hint)")


def test_check_number_bounds():
    assert check_number("lr", 1e-3, 0, above=True) == 1e-3
    assert check_number("weight", 0, 0) == 0.0 and check_number("sigma", np.float32(255), 0, 255) == 255.0
    for value, message in [
        (0.0, r"lr=0\.0 is not allowed: use a finite number > 0$"),
        (float("nan"), r"lr=nan is not allowed: use a finite number > 0$"),
        (True, r"lr=True is not allowed: use a finite number > 0$"),
    ]:
        with pytest.raises(ConfigError, match=message):
            check_number("lr", value, 0, above=True)
    with pytest.raises(ConfigError, match=r"sigma=256 is not allowed: use a finite number in \[0, 255\] \(0-255\)$"):
        check_number("sigma", 256, 0, 255, hint=" (0-255)")
    with pytest.raises(ConfigError, match=r"p=0 is not allowed: use a finite number in \(0, 100\]$"):
        check_number("p", 0, 0, 100, above=True)
    with pytest.raises(ConfigError, match=r"x=2 is not allowed: use a finite number <= 1$"):
        check_number("x", 2, high=1)
    with pytest.raises(ConfigError, match=r"x=inf is not allowed: use a finite number$"):
        check_number("x", float("inf"))
