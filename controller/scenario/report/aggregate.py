"""The numbers behind the report's plots, computed from a run's events in bulk (numpy/pandas).

A year of hourly wake-ups is hundreds of thousands of events; the report never draws them one
by one. Every curve over time is sampled on one log-spaced grid (:func:`log_grid`), and counts
per wake-up are averaged within its bins, so a plot holds a few hundred points per line
whatever the run's length.

- :func:`cumulative_by_kind`: cumulative energy (twin + controller) per event kind on the
  grid, mean over seeds;
- :func:`wakeups`: the monitor's wake-ups as seen in the ledger (probes and correction jobs
  less than :data:`WAKEUP_GAP_S` apart belong to one), with the jobs and devices each
  corrected; :func:`per_wakeup_binned` averages them per grid bin;
- :func:`tile_downtime`: seconds each tile spent programmed, probed or under correction
  (unavailable to inference), mean over seeds;
- :func:`drift_by_tile`: the probes' drift metric per tile, averaged per grid bin.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from controller.scenario.report import columns as col

#: Ledger events of one wake-up lie within microseconds to milliseconds of each other; two
#: wake-ups are at least a minute apart in every built-in policy.
WAKEUP_GAP_S = 1.0
#: Kinds that make a tile unavailable to inference while they run.
BUSY_KINDS = ("program", col.PROBE, col.CORRECTION)
GRID_POINTS = 160


def log_grid(t_min_s: float, t_max_s: float, points: int = GRID_POINTS) -> np.ndarray:
    """``points`` log-spaced times from ``t_min_s`` to ``t_max_s`` (both > 0)."""
    t_min_s = max(float(t_min_s), 1e-6)
    t_max_s = max(float(t_max_s), t_min_s * 1.0001)
    return np.geomspace(t_min_s, t_max_s, points)


def _energy(ev: pd.DataFrame) -> np.ndarray:
    e = ev[col.ENERGY_PJ].to_numpy(float)
    if col.CONTROLLER_ENERGY_PJ in ev.columns:
        e = e + ev[col.CONTROLLER_ENERGY_PJ].fillna(0.0).to_numpy(float)
    return e


def cumulative_by_kind(ev: pd.DataFrame, grid_s: np.ndarray, seeds: int) -> dict[str, np.ndarray]:
    """Per event kind, the cumulative energy (pJ) on ``grid_s``, mean over ``seeds`` seeds
    (an event counts from the time it ended). ``ev``: one variant's events with ``seed``,
    ``kind``, ``end_s``, ``energy_pj`` (and ``controller_energy_pj``)."""
    out: dict[str, np.ndarray] = {}
    if ev.empty:
        return out
    energy = _energy(ev)
    t = ev[col.END_S].to_numpy(float)
    kinds = ev[col.KIND].astype(str).to_numpy()
    for kind in pd.unique(kinds):
        mask = kinds == kind
        order = np.argsort(t[mask], kind="stable")
        ts, cum = t[mask][order], np.cumsum(energy[mask][order])
        idx = np.searchsorted(ts, grid_s, side="right")
        # summed over seeds then divided: the mean over seeds of each seed's cumulative energy
        out[str(kind)] = np.where(idx > 0, cum[np.maximum(idx - 1, 0)], 0.0) / max(seeds, 1)
    return out


def totals_by_kind(ev: pd.DataFrame, seeds: int) -> dict[str, float]:
    """Per event kind, the energy over the whole run (pJ), mean over seeds."""
    if ev.empty:
        return {}
    sums = pd.Series(_energy(ev), index=ev[col.KIND].astype(str).to_numpy()).groupby(level=0).sum()
    return {str(k): float(v) / max(seeds, 1) for k, v in sums.items()}


def wakeups(ev: pd.DataFrame) -> pd.DataFrame:
    """One row per wake-up of one variant's monitor (``seed``, ``t_s``: its first event's
    start, ``jobs``, ``devices``: correction jobs and the devices given to them), from its
    probe and correction events."""
    cols = ["seed", "t_s", "jobs", "devices"]
    ev = ev[ev[col.KIND].astype(str).isin([col.PROBE, col.CORRECTION])]
    if ev.empty:
        return pd.DataFrame(columns=cols)
    ev = ev.sort_values([col.SEED, col.START_S], kind="stable")
    seed = ev[col.SEED].to_numpy()
    start = ev[col.START_S].to_numpy(float)
    new = np.ones(len(ev), dtype=bool)
    new[1:] = (seed[1:] != seed[:-1]) | (np.diff(start) > WAKEUP_GAP_S)
    wake = np.cumsum(new) - 1
    is_job = (ev[col.KIND].astype(str) == col.CORRECTION).to_numpy()
    devices = np.where(is_job, ev[col.DEVICES].to_numpy(float), 0.0)
    n = int(wake[-1]) + 1
    return pd.DataFrame({
        "seed": seed[new],
        "t_s": start[new],
        "jobs": np.bincount(wake, weights=is_job.astype(float), minlength=n),
        "devices": np.bincount(wake, weights=devices, minlength=n),
    })  # fmt: skip


def per_wakeup_binned(w: pd.DataFrame, grid_s: np.ndarray) -> pd.DataFrame:
    """Wake-ups averaged per bin of ``grid_s`` (bins between consecutive grid times; empty
    bins left out): ``t_s`` (the bin's mean wake-up time), ``wakeups`` (over all seeds),
    ``jobs`` and ``devices`` (mean per wake-up), ``devices_max``."""
    if w.empty:
        return pd.DataFrame(columns=["t_s", "wakeups", "jobs", "devices", "devices_max"])
    b = np.clip(np.searchsorted(grid_s, w["t_s"].to_numpy(float), side="right"), 0, len(grid_s))
    g = w.assign(bin=b).groupby("bin")
    out = pd.DataFrame({
        "t_s": g["t_s"].mean(),
        "wakeups": g.size(),
        "jobs": g["jobs"].mean(),
        "devices": g["devices"].mean(),
        "devices_max": g["devices"].max(),
    })  # fmt: skip
    return out.reset_index(drop=True)


def tile_downtime(ev: pd.DataFrame, seeds: int) -> pd.Series:
    """Seconds each tile spent busy (programmed, probed, corrected), mean over seeds, indexed
    by tile."""
    ev = ev[ev[col.KIND].astype(str).isin(BUSY_KINDS) & (ev[col.TILE] >= 0)]
    if ev.empty:
        return pd.Series(dtype=float)
    busy = (ev[col.END_S] - ev[col.START_S]).clip(lower=0.0)
    return busy.groupby(ev[col.TILE].astype(int)).sum() / max(seeds, 1)


def drift_by_tile(ev: pd.DataFrame, grid_s: np.ndarray) -> dict[int, pd.DataFrame]:
    """Per tile, the probes' drift metric averaged per bin of ``grid_s`` over probes and
    seeds: ``t_s`` (mean probe time in the bin), ``drift`` (mean), ``drift_max``."""
    ev = ev[ev[col.KIND].astype(str) == col.PROBE]
    if ev.empty or col.DRIFT_METRIC not in ev.columns:
        return {}
    ev = ev[np.isfinite(ev[col.DRIFT_METRIC].to_numpy(float))]
    out = {}
    for tile, g in ev.groupby(ev[col.TILE].astype(int)):
        t = g[col.START_S].to_numpy(float)
        b = np.searchsorted(grid_s, t, side="right")
        frame = pd.DataFrame({"t_s": t, "drift": g[col.DRIFT_METRIC].to_numpy(float), "bin": b})
        agg = frame.groupby("bin").agg(t_s=("t_s", "mean"), drift=("drift", "mean"),
                                       drift_max=("drift", "max"))  # fmt: skip
        out[int(tile)] = agg.reset_index(drop=True)
    return out
