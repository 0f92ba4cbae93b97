"""How results look, the same in every picture: colours, markers and dashes per variant, time
ticks a person reads, and a small spread of points that would hide each other.

The PNGs (:mod:`controller.scenario.plots`, matplotlib) and the HTML report
(:mod:`controller.scenario.report`, plotly) both draw with these, so a variant has one colour
and one marker everywhere: in ``accuracy.png``, ``upkeep_energy.png``, the report and a
comparison of runs.

- :func:`variant_styles`: one :class:`SeriesStyle` per variant, in the order given (the
  scenario's order): the colour-blind-friendly tab10 colours first, then tab20's lighter
  shades; markers and dashes change with the colour so that lines of one colour family stay
  apart in black and white too.
- :func:`time_ticks`: ticks at round times (1 s, 1 min, 1 h, 1 d, 1 w, 1 mo, 1 y ...) inside a
  range, labelled as scenario files write them, instead of the evaluation times themselves
  (log-spaced evaluations would otherwise read "9.65s, 1.55min, 2.41h").
- :func:`dodge_factors`: variants often share their first points (nothing has corrected yet),
  and the last-drawn line would hide the others: each variant's points are moved by a small
  factor in time (a fraction of a decade on a log axis), symmetric around the true time.
- :data:`KIND_COLOURS`: one colour per ledger event kind, for energy by kind.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from controller.scenario.durations import format_duration

#: matplotlib's tab10 (Tableau 10), then the light halves of tab20: 20 distinct colours.
PALETTE: tuple[str, ...] = (
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd",
    "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf",
    "#aec7e8", "#ffbb78", "#98df8a", "#ff9896", "#c5b0d5",
    "#c49c94", "#f7b6d2", "#c7c7c7", "#dbdb8d", "#9edae5",
)  # fmt: skip

#: (matplotlib marker, plotly symbol) pairs, in order.
MARKERS: tuple[tuple[str, str], ...] = (
    ("o", "circle"), ("s", "square"), ("^", "triangle-up"), ("D", "diamond"),
    ("v", "triangle-down"), ("P", "cross"), ("X", "x"), ("*", "star"),
    ("<", "triangle-left"), (">", "triangle-right"),
)  # fmt: skip

#: (matplotlib linestyle, plotly dash) pairs, in order.
DASHES: tuple[tuple[str, str], ...] = (
    ("-", "solid"),
    ("--", "dash"),
    (":", "dot"),
    ("-.", "dashdot"),
)

#: One colour per ledger event kind (energy by kind), the same in PNGs and the report.
KIND_COLOURS: dict[str, str] = {
    "program": "#4c72b0",
    "calibration": "#8172b2",
    "evaluation": "#937860",
    "inference": "#64b5cd",
    "probe": "#dd8452",
    "correction": "#c44e52",
    "policy": "#8c8c8c",
    "policy_error": "#000000",
    "error": "#000000",
}
OTHER_KIND_COLOUR = "#b0b0b0"

#: Round times for axis ticks (seconds), coarse to fine by importance.
_TICKS_S: tuple[float, ...] = (
    1e-3, 1e-2, 0.1, 1.0, 10.0, 60.0, 600.0, 3600.0, 6 * 3600.0, 86400.0, 7 * 86400.0,
    30 * 86400.0, 365 * 86400.0, 10 * 365 * 86400.0,
)  # fmt: skip
#: Ticks kept first when there are too many (the units people think in).
_MAIN_TICKS_S = frozenset({1e-3, 1.0, 60.0, 3600.0, 86400.0, 7 * 86400.0, 30 * 86400.0,
                           365 * 86400.0, 10 * 365 * 86400.0})  # fmt: skip


@dataclass(frozen=True)
class SeriesStyle:
    """How one variant (or one run's variant in a comparison) is drawn."""

    colour: str
    marker: str  # matplotlib
    symbol: str  # plotly
    linestyle: str  # matplotlib
    dash: str  # plotly


def series_style(index: int) -> SeriesStyle:
    """The style of the ``index``-th series (0-based)."""
    colour = PALETTE[index % len(PALETTE)]
    marker, symbol = MARKERS[index % len(MARKERS)]
    linestyle, dash = DASHES[(index // len(MARKERS) + index) % len(DASHES)]
    return SeriesStyle(colour, marker, symbol, linestyle, dash)


def variant_styles(names: Sequence[str]) -> dict[str, SeriesStyle]:
    """One style per name, by position."""
    return {name: series_style(i) for i, name in enumerate(names)}


def kind_colour(kind: str) -> str:
    return KIND_COLOURS.get(kind, OTHER_KIND_COLOUR)


def time_ticks(t_min_s: float, t_max_s: float, max_ticks: int = 9) -> list[tuple[float, str]]:
    """(seconds, label) ticks at round times within [t_min_s, t_max_s] (both > 0), at most
    ``max_ticks``: the main units first, then 10 s, 10 min, 6 h where they fit."""
    if not (t_min_s > 0 and t_max_s >= t_min_s):
        return []
    lo, hi = t_min_s / 1.0001, t_max_s * 1.0001
    inside = [t for t in _TICKS_S if lo <= t <= hi]
    if len(inside) > max_ticks:
        main = [t for t in inside if t in _MAIN_TICKS_S]
        inside = main if len(main) <= max_ticks else main[:: math.ceil(len(main) / max_ticks)]
    if len(inside) < 2:  # a short range: its ends, as they are
        inside = sorted({t_min_s, t_max_s} | set(inside))
    return [(t, format_duration(t)) for t in inside]


def energy_label(pj: float) -> str:
    """``500 pJ``, ``2 nJ``, ``10 uJ``, ``1 mJ``: an energy for an axis tick."""
    for unit, scale in (("J", 1e12), ("mJ", 1e9), ("uJ", 1e6), ("nJ", 1e3)):
        if pj >= scale:
            return f"{pj / scale:g} {unit}"
    return f"{pj:g} pJ"


def energy_decades(lo_pj: float, hi_pj: float) -> list[tuple[float, str]]:
    """Decade ticks of a log energy axis from ``lo_pj`` to ``hi_pj``, labelled in units."""
    first = math.floor(math.log10(max(lo_pj, 1e-3)))
    last = math.ceil(math.log10(max(hi_pj, lo_pj, 1e-3)))
    return [(10.0**p, energy_label(10.0**p)) for p in range(first, last + 1)]


def energy_axis(
    floor_pj: float, top_pj: float
) -> tuple[tuple[float, float], list[tuple[float, str]]]:
    """The range and ticks of a log energy axis whose variants without energy are drawn at
    ``floor_pj``: that position is labelled ``none``, then round energies (1-2-5 steps, or
    decades when the range is wide) up to ``top_pj``."""
    top_pj = max(top_pj, floor_pj * 3)
    lo, hi = floor_pj * 1.8, top_pj * 1.6
    decades = range(math.floor(math.log10(lo)), math.ceil(math.log10(hi)) + 1)
    steps = (1, 2, 5) if math.log10(hi / lo) < 2.5 else (1,)
    ticks = [m * 10.0**p for p in decades for m in steps if lo <= m * 10.0**p <= hi]
    while len(ticks) > 8:
        ticks = ticks[::2]
    return (floor_pj / 1.5, hi), [(floor_pj, "none"), *((t, energy_label(t)) for t in ticks)]


def dodge_factors(n: int, spread_decades: float = 0.05) -> list[float]:
    """Multipliers for the times of ``n`` series, spaced ``spread_decades`` apart on a log
    axis and centred on 1 (the total spread grows with ``n`` up to half a decade)."""
    if n <= 1:
        return [1.0] * n
    step = min(spread_decades, 0.5 / (n - 1))
    return [10 ** ((i - (n - 1) / 2) * step) for i in range(n)]
