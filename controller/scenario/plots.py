"""The plots of a run folder and of a sweep (matplotlib, Agg backend, PNG).

- ``accuracy.png``: test accuracy versus device time (log axis), the mean and its 95 %
  interval as a band (over seeds; with one seed, over the test images), one line per variant;
- ``upkeep_energy.png``: cumulative upkeep energy (probes + correction jobs) versus device
  time (log-log), from the event ledger, mean over seeds; variants that spent none are named
  in the title instead (log axes cannot show zero);
- ``front.png`` (sweeps): upkeep energy versus accuracy loss, one labelled point per run and
  variant with its 95 % intervals, the Pareto front (no other point has both less energy and
  less loss; a loss within its interval of zero counts as zero) marked.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only: never open a window, never need a display

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from controller.firmware.quantities import UPKEEP_KINDS  # noqa: E402
from controller.scenario.durations import format_duration  # noqa: E402

_DPI = 110


def _time_axis(ax: Any, times_s: Sequence[float]) -> None:
    ax.set_xscale("log")
    ticks = [t for t in times_s if t > 0]
    ax.set_xticks(ticks)
    ax.set_xticklabels([format_duration(t) for t in ticks])
    ax.minorticks_off()
    ax.set_xlabel("time since programming")
    ax.grid(True, which="major", alpha=0.3)


def _band(v: dict[str, Any]) -> tuple[np.ndarray, np.ndarray] | None:
    """A variant's 95 % band per evaluation: over seeds, or the test images' Wilson interval
    with one seed (None for a summary without intervals)."""
    bounds = v.get("accuracy_ci95") if v.get("seeds", 1) > 1 else v.get("accuracy_wilson95")
    if not bounds:
        return None
    b = np.asarray([[np.nan if x is None else x for x in pair] for pair in bounds], float)
    return 100 * b[:, 0], 100 * b[:, 1]


def plot_accuracy(summary: dict[str, Any], path: Path, title: str | None = None) -> Path:
    """Accuracy (%) versus time per variant: the mean over seeds and its 95 % interval (over
    seeds; with one seed, over the test images) as a band."""
    fig, ax = plt.subplots(figsize=(7.5, 4.6))
    all_times: list[float] = []
    for name, v in summary["variants"].items():
        t = np.asarray(v["eval_times_s"], dtype=float)
        m = 100 * np.asarray([np.nan if x is None else x for x in v["accuracy_mean"]], float)
        keep = t > 0
        (line,) = ax.plot(t[keep], m[keep], marker="o", ms=3.5, lw=1.5, label=name)
        band = _band(v)
        if band is not None:
            ax.fill_between(t[keep], band[0][keep], band[1][keep], alpha=0.15,
                            color=line.get_color(), lw=0)  # fmt: skip
        all_times += list(t[keep])
    _time_axis(ax, sorted(set(all_times)))
    ax.set_ylabel("test accuracy (%)")
    seeds = max((v["seeds"] for v in summary["variants"].values()), default=1)
    over = f"over {seeds} seeds" if seeds > 1 else "over the test images, one seed"
    ax.set_title(title or f"{summary['scenario']}: accuracy, mean and 95 % interval ({over})",
                 fontsize=10)  # fmt: skip
    ax.legend(fontsize=7.5, loc="lower left", framealpha=0.85)
    fig.tight_layout()
    fig.savefig(path, dpi=_DPI)
    plt.close(fig)
    return path


def cumulative_energy_curve(
    events: Sequence[dict[str, Any]], kinds: Sequence[str], grid_s: np.ndarray
) -> np.ndarray:
    """Cumulative energy (twin + controller, pJ) of the events of the given ``kinds``,
    sampled at ``grid_s`` (an event counts from the time it ended)."""
    ev = [e for e in events if e["kind"] in kinds]
    if not ev:
        return np.zeros(len(grid_s))
    t = np.asarray([e["end_s"] for e in ev], dtype=float)
    e = np.asarray([e["energy_pj"] + e["controller_energy_pj"] for e in ev], dtype=float)
    order = np.argsort(t, kind="stable")
    cum = np.cumsum(e[order])
    idx = np.searchsorted(t[order], grid_s, side="right")
    return np.where(idx > 0, cum[np.maximum(idx - 1, 0)], 0.0)


def plot_upkeep_energy(results: Sequence[Any], summary: dict[str, Any], path: Path) -> Path:
    """Cumulative upkeep energy (pJ) versus time from the event ledger, mean over seeds,
    per variant (``results``: the run's ``SeedResult`` objects)."""
    fig, ax = plt.subplots(figsize=(7.5, 4.6))
    idle: list[str] = []
    times = sorted({t for v in summary["variants"].values() for t in v["eval_times_s"] if t > 0})
    end = max(v["duration_s"] for v in summary["variants"].values())
    grid = np.geomspace(min(times[0], 1.0) if times else 1.0, end, 400)
    for name in summary["variants"]:
        curves = [cumulative_energy_curve(r.events, UPKEEP_KINDS, grid)
                  for r in results if r.variant == name]  # fmt: skip
        if not curves:
            continue
        mean = np.mean(curves, axis=0)
        if not np.any(mean > 0):
            idle.append(name)
            continue
        ax.step(grid, np.where(mean > 0, mean, np.nan), where="post", lw=1.5, label=name)
    _time_axis(ax, times + ([end] if end not in times else []))
    if ax.get_lines():
        ax.set_yscale("log")
        ax.legend(fontsize=7.5, loc="upper left", framealpha=0.85)
    ax.set_ylabel("cumulative upkeep energy (pJ)")
    title = f"{summary['scenario']}: upkeep energy (probes + corrections, mean over seeds)"
    if idle:
        title += "\nno upkeep energy: " + ", ".join(idle)
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=_DPI)
    plt.close(fig)
    return path


def pareto_front(energy: Sequence[float], loss: Sequence[float]) -> list[int]:
    """Indices of the points no other point dominates (less or equal in both, less in one),
    sorted by loss. NaN points are never on the front."""
    pts = [(float(e), float(lo), i) for i, (e, lo) in enumerate(zip(energy, loss, strict=True))
           if math.isfinite(float(e)) and math.isfinite(float(lo))]  # fmt: skip
    front = []
    for e, lo, i in pts:
        dominated = any((e2 <= e and l2 <= lo) and (e2 < e or l2 < lo) for e2, l2, _ in pts)
        if not dominated:
            front.append((lo, e, i))
    return [i for _, _, i in sorted(front)]


def noise_free_loss(loss: np.ndarray, low: np.ndarray, high: np.ndarray) -> np.ndarray:
    """The loss the front is drawn from: a loss whose 95 % interval holds zero is read as zero
    (it cannot be told from no loss: a "negative loss" inside it is read noise, not a point
    that beats the others); a loss without an interval is kept."""
    holds_zero = np.isfinite(low) & np.isfinite(high) & (low <= 0) & (high >= 0)
    return np.where(holds_zero, 0.0, loss)


def _column(table: pd.DataFrame, name: str) -> np.ndarray:
    if name not in table:
        return np.full(len(table), np.nan)
    return pd.to_numeric(table[name], errors="coerce").to_numpy(dtype=float)


def plot_front(table: pd.DataFrame, path: Path, title: str) -> Path:
    """Upkeep energy versus accuracy loss, every point labelled, with 95 % intervals (error
    bars, where the table has them: ``accuracy_loss_ci_low/high``,
    ``upkeep_energy_pj_ci_low/high``), and the Pareto front of the losses read through
    :func:`noise_free_loss`.

    ``table`` needs ``upkeep_energy_pj``, ``accuracy_loss`` and ``label`` columns.
    """
    fig, ax = plt.subplots(figsize=(8.0, 5.4))
    energy = table["upkeep_energy_pj"].to_numpy(dtype=float)
    loss = 100 * table["accuracy_loss"].to_numpy(dtype=float)
    loss_lo = 100 * _column(table, "accuracy_loss_ci_low")
    loss_hi = 100 * _column(table, "accuracy_loss_ci_high")
    e_lo, e_hi = (
        _column(table, "upkeep_energy_pj_ci_low"),
        _column(table, "upkeep_energy_pj_ci_high"),
    )
    # log axes cannot show zero energy: draw such runs at the bottom edge, hollow
    positive = energy[energy > 0]
    floor = positive.min() / 3 if positive.size else 1.0
    shown = np.where(energy > 0, energy, floor)
    xerr = np.nan_to_num(np.vstack([loss - loss_lo, loss_hi - loss]), nan=0.0).clip(min=0)
    yerr = np.vstack([shown - np.maximum(np.nan_to_num(e_lo, nan=np.inf), floor),
                      np.nan_to_num(e_hi, nan=-np.inf) - shown])  # fmt: skip
    yerr = np.where(np.isfinite(yerr), yerr, 0.0).clip(min=0)
    yerr[:, energy <= 0] = 0.0
    ax.errorbar(loss, shown, xerr=xerr, yerr=yerr, fmt="o", ms=4, color="tab:blue", alpha=0.7,
                elinewidth=0.8, capsize=2, label="runs (95 % intervals)")  # fmt: skip
    zero = energy <= 0
    if zero.any():
        ax.scatter(loss[zero], shown[zero], s=40, facecolors="none", edgecolors="tab:gray",
                   label="no upkeep energy", zorder=3)  # fmt: skip
    read = noise_free_loss(loss, loss_lo, loss_hi)
    front = pareto_front(list(energy), list(read))
    if front:
        ax.plot(loss[front], shown[front], "o", mfc="none", mec="tab:red", ms=10, mew=1.5,
                label="Pareto front (a loss within its interval of 0 counts as 0)")  # fmt: skip
    for i, label in enumerate(table["label"]):
        colour = "tab:red" if i in front else "0.25"
        ax.annotate(str(label), (loss[i], shown[i]), fontsize=6, xytext=(4, 3),
                    textcoords="offset points", color=colour)  # fmt: skip
    ax.axvline(0.0, color="0.6", lw=0.8, ls=":")
    ax.set_yscale("log")
    ax.set_xlabel("accuracy loss, first to last evaluation (points of %)")
    ax.set_ylabel("upkeep energy over the run (pJ)")
    ax.set_title(title, fontsize=10)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7.5)
    fig.tight_layout()
    fig.savefig(path, dpi=_DPI)
    plt.close(fig)
    return path


def plot_run(out_dir: Path, results: Sequence[Any], summary: dict[str, Any]) -> list[Path]:
    """Both plots of a run folder."""
    return [
        plot_accuracy(summary, out_dir / "accuracy.png"),
        plot_upkeep_energy(results, summary, out_dir / "upkeep_energy.png"),
    ]
