"""Durations in human units (``1y``, ``6h``, ``30d``, ``1s``, ``90min``, ``1h30min``): read and
written for scenario files and for policy parameters (``interval_s: 6h``), hence here, below
both.

Units and their length in seconds:

========================== ==============
``ms``                     0.001
``s``, ``sec``, ``second`` 1
``min``, ``minute``        60
``h``, ``hr``, ``hour``    3,600
``d``, ``day``             86,400
``w``, ``wk``, ``week``    604,800
``mo``, ``month``          2,592,000 (30 days)
``y``, ``yr``, ``year``    31,536,000 (365 days)
========================== ==============

Plural forms (``hours``, ``days``) are accepted. A bare ``m`` is refused because it could mean
minutes or months. A bare number (YAML int or float) is taken as seconds. Durations are never
negative; nothing in a duration string is evaluated, it is matched by a regular expression.
"""

from __future__ import annotations

import math
import re

UNIT_S: dict[str, float] = {
    "ms": 1e-3,
    "s": 1.0,
    "sec": 1.0,
    "second": 1.0,
    "min": 60.0,
    "minute": 60.0,
    "h": 3600.0,
    "hr": 3600.0,
    "hour": 3600.0,
    "d": 86400.0,
    "day": 86400.0,
    "w": 7 * 86400.0,
    "wk": 7 * 86400.0,
    "week": 7 * 86400.0,
    "mo": 30 * 86400.0,
    "month": 30 * 86400.0,
    "y": 365 * 86400.0,
    "yr": 365 * 86400.0,
    "year": 365 * 86400.0,
}

_PART = re.compile(r"\s*(\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?\s*([A-Za-z]+)\s*")
_NUMBER = re.compile(r"\s*[+]?(\d+(?:\.\d*)?|\.\d+)([eE][+-]?\d+)?\s*")


def _unit_s(unit: str) -> float:
    u = unit.lower()
    if u in UNIT_S:
        return UNIT_S[u]
    if u.endswith("s") and u[:-1] in UNIT_S and len(u) > 2:  # plurals: hours, days, mins
        return UNIT_S[u[:-1]]
    if u == "m":
        raise ValueError("unit 'm' is ambiguous: write 'min' for minutes or 'mo' for months")
    known = "ms, s, min, h, d, w, mo, y (or sec, minute, hour, day, week, month, year)"
    raise ValueError(f"unknown time unit {unit!r}; expected one of {known}")


def parse_duration_s(value: str | int | float) -> float:
    """Seconds in ``value``: a number (seconds) or a string such as ``'1y'``, ``'90min'``,
    ``'1h30min'``, ``'2.5 d'``. Raises ``ValueError`` for a negative, non-finite or malformed
    value, naming what was expected."""
    if isinstance(value, bool):
        raise ValueError(f"expected a duration such as '1h' or a number of seconds, got {value!r}")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str):
        text = value.strip()
        if not text:
            raise ValueError("empty duration; expected e.g. '1s', '6h', '30d', '1y'")
        if text.startswith("-"):
            raise ValueError(f"duration {value!r} is negative; durations must be >= 0")
        if _NUMBER.fullmatch(text):
            seconds = float(text)
        else:
            seconds = 0.0
            pos = 0
            for m in _PART.finditer(text):
                if m.start() != pos:
                    break
                number = float(m.group(0)[: m.start(2) - m.start()].strip())
                seconds += number * _unit_s(m.group(2))
                pos = m.end()
            if pos != len(text) or pos == 0:
                raise ValueError(
                    f"cannot read duration {value!r}; expected a number and a unit such as "
                    "'1s', '90min', '6h', '30d', '1w', '1mo', '1y' (or '1h30min')"
                )
    else:
        raise ValueError(f"expected a duration such as '1h' or a number of seconds, got {value!r}")
    if not math.isfinite(seconds):
        raise ValueError(f"duration {value!r} is not finite")
    if seconds < 0:
        raise ValueError(f"duration {value!r} is negative; durations must be >= 0")
    return seconds


_SHOW = (
    ("y", UNIT_S["y"]),
    ("mo", UNIT_S["mo"]),
    ("w", UNIT_S["w"]),
    ("d", UNIT_S["d"]),
    ("h", UNIT_S["h"]),
    ("min", UNIT_S["min"]),
    ("s", 1.0),
)


def format_duration(seconds: float) -> str:
    """A short human label for ``seconds``: ``1y``, ``1mo``, ``1w``, ``1d``, ``1h``, ``1min``,
    ``1s``, using the largest unit that divides it exactly a modest number of times (``90min``),
    else the largest unit below it with three significant digits (``1.11h``; more where three
    would print a whole number: ``2.001mo``)."""
    s = float(seconds)
    if s == 0:
        return "0s"
    if s < 1:
        return f"{s * 1e3:.3g}ms"
    for unit, size in _SHOW:
        n = s / size
        if 1 <= n < 1000 and abs(n - round(n)) < 1e-9 * max(1.0, n):
            return f"{round(n)}{unit}"
    for unit, size in _SHOW:
        if s >= size:
            return f"{_inexact(s / size)}{unit}"
    return f"{_inexact(s)}s"


def _inexact(n: float) -> str:
    """``n`` (not a whole number) with three significant digits, more if three would print it
    as one (1441 h is 2.001mo, not 2mo: that label belongs to exactly two months)."""
    for digits in range(3, 8):
        text = f"{n:.{digits}g}"
        if "." in text or "e" in text:
            break
    return text
