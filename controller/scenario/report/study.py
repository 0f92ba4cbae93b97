"""What a report shows, gathered once: one :class:`Series` per variant of each run.

A report of one run has a series per variant; a comparison (``pcm-twin compare``) has one per
variant of every run, named ``<run> · <variant>``. Each series carries its summary entry, its
style (:mod:`controller.scenario.style`: the same colour and marker as in the PNGs) and the
aggregates of its events (:mod:`~controller.scenario.report.aggregate`), computed from one
read of each run's events file, of only the columns the plots use.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from controller.scenario.report import aggregate as agg
from controller.scenario.report import columns as col
from controller.scenario.report.data import RunData
from controller.scenario.style import SeriesStyle, series_style

#: The event columns the report reads.
EVENT_COLUMNS = [col.VARIANT, col.SEED, col.KIND, col.TILE, col.START_S, col.END_S,
                 col.DEVICES, col.ENERGY_PJ, col.CONTROLLER_ENERGY_PJ,
                 col.DRIFT_METRIC]  # fmt: skip


@dataclass
class Series:
    """One variant of one run, and what its plots need."""

    name: str  # as shown: the variant, or "<run> · <variant>" in a comparison
    run_label: str
    run: RunData
    variant: str
    style: SeriesStyle
    energy_by_kind: dict[str, np.ndarray] = field(default_factory=dict)  # cumulative, on grid
    energy_totals: dict[str, float] = field(default_factory=dict)
    wakeups: pd.DataFrame = field(default_factory=pd.DataFrame)  # binned per grid bin
    wakeup_count: float = 0.0  # per seed
    downtime_s: pd.Series = field(default_factory=lambda: pd.Series(dtype=float))
    drift: dict[int, pd.DataFrame] = field(default_factory=dict)

    @property
    def entry(self) -> dict[str, Any]:
        return self.run.summary["variants"][self.variant]

    @property
    def seeds(self) -> int:
        return int(self.entry.get("seeds", 1) or 1)

    @property
    def duration_s(self) -> float:
        return float(self.entry.get("duration_s") or 0.0)

    def tile_label(self, tile: int) -> str:
        layer = self.run.tile_layers.get(self.variant, {}).get(int(tile))
        return f"tile {tile} · {layer}" if layer else f"tile {tile}"


@dataclass
class Study:
    """Every series of a report, the common time grid, and how long gathering took."""

    series: list[Series]
    runs: list[tuple[str, RunData]]
    grid_s: np.ndarray
    read_s: float = 0.0
    aggregate_s: float = 0.0

    @property
    def is_comparison(self) -> bool:
        return len(self.runs) > 1

    @property
    def eval_labels(self) -> list[tuple[float, str]]:
        """Every evaluation time of every series, sorted: (seconds, label)."""
        seen: dict[float, str] = {}
        for s in self.series:
            for t, lab in zip(s.entry.get("eval_times_s", []), s.entry.get("eval_labels", []),
                              strict=False):  # fmt: skip
                seen.setdefault(float(t), str(lab))
        return sorted(seen.items())


def _run_labels(runs: Sequence[RunData]) -> list[str]:
    """Short distinct names for runs: the folder's name, with its parents where two clash."""
    labels = [r.path.name or r.name for r in runs]
    depth = 1
    while len(set(labels)) < len(labels) and depth < 4:
        depth += 1
        labels = ["/".join(r.path.resolve().parts[-depth:]) for r in runs]
    return labels


def build_study(runs: Sequence[RunData]) -> Study:
    """Gather every run's series (see the module docstring)."""
    labels = _run_labels(runs)
    series: list[Series] = []
    for label, run in zip(labels, runs, strict=True):
        for v in run.variants:
            name = f"{label} · {v}" if len(runs) > 1 else v
            series.append(Series(name, label, run, v, series_style(len(series))))
    t_max = max((s.duration_s for s in series), default=1.0)
    t_min = min((t for s in series for t in s.entry.get("eval_times_s", []) if t > 0),
                default=1.0)  # fmt: skip
    grid = agg.log_grid(min(t_min, 1.0), max(t_max, t_min))
    study = Study(series, list(zip(labels, runs, strict=True)), grid)
    for _label, run in study.runs:
        t0 = time.perf_counter()
        events = run.events(EVENT_COLUMNS)
        study.read_s += time.perf_counter() - t0
        t0 = time.perf_counter()
        by_variant = dict(tuple(events.groupby(col.VARIANT, observed=True))) if len(events) else {}
        for s in study.series:
            if s.run is run:
                _aggregate(s, by_variant.get(s.variant, events.iloc[0:0]), grid)
        study.aggregate_s += time.perf_counter() - t0
    return study


def _aggregate(s: Series, ev: pd.DataFrame, grid: np.ndarray) -> None:
    s.energy_by_kind = agg.cumulative_by_kind(ev, grid, s.seeds)
    s.energy_totals = agg.totals_by_kind(ev, s.seeds)
    w = agg.wakeups(ev)
    s.wakeup_count = len(w) / s.seeds
    s.wakeups = agg.per_wakeup_binned(w, grid)
    s.downtime_s = agg.tile_downtime(ev, s.seeds)
    s.drift = agg.drift_by_tile(ev, grid)


def finite(x: Any) -> bool:
    return x is not None and isinstance(x, int | float) and math.isfinite(x)
