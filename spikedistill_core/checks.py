"""Argument checks that every package shares: each returns the checked value or raises
:class:`~spikedistill_core.errors.ConfigError` naming the argument, its value and what is allowed."""
from __future__ import annotations

import math
import numbers

from .errors import ConfigError

__all__ = ["check_bool", "check_int", "check_number"]


def check_bool(name: str, value: object) -> bool:
    """``value``, if it is a bool: a recipe's ``1`` or ``"yes"`` is refused rather than read as a switch."""
    if not isinstance(value, bool):
        raise ConfigError(f"{name}={value!r} is not allowed: use true or false")
    return value


def check_int(name: str, value: object, minimum: int = 1, hint: str = "") -> int:
    """``value`` as an int, if it is an integer (not a bool) >= ``minimum``; ``hint`` ends the message."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ConfigError(f"{name}={value!r} is not allowed: use an integer >= {minimum}{hint}")
    return int(value)


def check_number(name: str, value: object, low: float | None = None, high: float | None = None,
                 above: bool = False, hint: str = "") -> float:
    """``value`` as a float, if it is a finite real number (not a bool) in the range: ``>= low`` (``> low``
    with ``above``) and ``<= high``, either bound optional."""
    ok = not isinstance(value, bool) and isinstance(value, numbers.Real) and math.isfinite(value)
    if ok and low is not None:
        ok = value > low if above else value >= low
    if ok and high is not None:
        ok = value <= high
    if ok:
        return float(value)
    if low is not None and high is not None:
        allowed = f"in {'(' if above else '['}{low:g}, {high:g}]"
    elif low is not None:
        allowed = f"{'>' if above else '>='} {low:g}"
    elif high is not None:
        allowed = f"<= {high:g}"
    else:
        allowed = ""
    raise ConfigError(f"{name}={value!r} is not allowed: use a finite number {allowed}".rstrip() + hint)
