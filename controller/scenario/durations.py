"""Durations for scenario files: the units and their parsing (which live in
:mod:`controller.firmware.durations`, since policy parameters take durations too) and
log-spaced time grids."""

from __future__ import annotations

import numpy as np

from controller.firmware.durations import UNIT_S, format_duration, parse_duration_s

__all__ = ["UNIT_S", "format_duration", "log_spaced_s", "parse_duration_s"]


def log_spaced_s(start_s: float, stop_s: float, points: int) -> list[float]:
    """``points`` times from ``start_s`` to ``stop_s`` (both included), evenly spaced in log
    time; rounded to the microsecond so that they print and compare cleanly."""
    if start_s <= 0 or stop_s < start_s or points < 1:
        raise ValueError("log-spaced times need 0 < start <= stop and points >= 1")
    if points == 1:
        return [float(stop_s)]
    grid = np.geomspace(start_s, stop_s, points)
    return [round(float(t), 6) for t in grid]
