"""Small text formatting shared by tables, plots and run names."""
from __future__ import annotations

import re


def si(value: float, digits: int = 3) -> str:
    """`value` with an SI suffix and `digits` significant digits: 1234567 -> '1.23M'."""
    for factor, suffix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= factor:
            return f"{value / factor:.{digits}g}{suffix}"
    return f"{value:.{digits}g}"


def slug(text: str, fallback: str = "run") -> str:
    """A file-name-safe version of `text` (letters, digits, `_.=-`)."""
    return re.sub(r"[^A-Za-z0-9_.=-]+", "-", str(text)).strip("-.") or fallback
