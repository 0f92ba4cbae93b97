"""The plots of a run folder and of a sweep (matplotlib, Agg backend, PNG).

- ``accuracy.png``: test accuracy versus device time (log axis): per variant the mean and its
  95 % interval as error bars (over seeds; with one seed, over the test images), each seed's
  point (small), the accuracy right after the corrections of an instant (hollow; the line
  goes through it, so each correction cycle draws as a sawtooth tooth), and the float
  network's accuracy (dotted);
- ``upkeep_energy.png``: cumulative upkeep energy versus device time (log-log), from the event
  ledger, mean over seeds, correction jobs (solid) and probes (dashed) apart; variants that
  spent none are named in the title instead (log axes cannot show zero);
- ``accuracy_energy.png``: each variant's accuracy at the last evaluation against its upkeep
  energy over the run, the Pareto front drawn through the variants no other beats on both;
- ``front.png`` (sweeps): upkeep energy versus accuracy loss, one labelled point per run and
  variant with its 95 % intervals, the Pareto front (no other point has both less energy and
  less loss; a loss within its interval of zero counts as zero) marked.

Every plot draws a variant in the colour, marker and dash :mod:`controller.scenario.style`
gives it (the same in every PNG and in the HTML report), spreads points that would coincide
slightly in time, and labels time at round values (1 s, 1 min, 1 h, 1 d, 1 w, 1 mo, 1 y).
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
from matplotlib.lines import Line2D  # noqa: E402

from controller.firmware.quantities import CORRECTION, PROBE  # noqa: E402
from controller.scenario.style import (  # noqa: E402
    dodge_factors,
    energy_axis,
    time_ticks,
    variant_styles,
)

_DPI = 110
_LEGEND = dict(fontsize=7.5, loc="upper left", bbox_to_anchor=(1.01, 1.0), framealpha=0.9,
               borderaxespad=0.0)  # fmt: skip


def _time_axis(ax: Any, t_min_s: float, t_max_s: float) -> None:
    ax.set_xscale("log")
    ticks = time_ticks(t_min_s, t_max_s)
    ax.set_xticks([t for t, _ in ticks])
    ax.set_xticklabels([label for _, label in ticks])
    ax.minorticks_off()
    ax.set_xlim(t_min_s / 1.6, t_max_s * 1.6)
    ax.set_xlabel("time since programming")
    ax.grid(True, which="major", alpha=0.3)


def accuracy_band(v: dict[str, Any]) -> tuple[np.ndarray, np.ndarray, str]:
    """A variant's accuracy interval per evaluation (%, low and high) and what it is: the 95 %
    interval over seeds, or the test images' Wilson interval with one seed; mean ± std for a
    summary without intervals (older run folders)."""
    bounds = v.get("accuracy_ci95") if v.get("seeds", 1) > 1 else v.get("accuracy_wilson95")
    if bounds:
        b = np.asarray([[np.nan if x is None else x for x in pair] for pair in bounds], float)
        over = "over seeds" if v.get("seeds", 1) > 1 else "over the test images, one seed"
        return 100 * b[:, 0], 100 * b[:, 1], f"95 % interval {over}"
    m, s = _pct(v["accuracy_mean"]), np.nan_to_num(_pct(v["accuracy_std"]))
    return m - s, m + s, "± std over seeds"


def _pct(values: Sequence[Any]) -> np.ndarray:
    return 100 * np.asarray([np.nan if x is None else x for x in values], dtype=float)


def sawtooth_path(
    x: np.ndarray, before: np.ndarray, after: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """The line of a correcting variant in time order: at each time its accuracy before the
    corrections of that instant, then (where there were some) right after them, so that every
    correction cycle draws as a tooth (a jump at the correction, the decay until the next)."""
    xs, ys = [], []
    for xi, b, a in zip(x, before, after, strict=True):
        xs.append(xi)
        ys.append(b)
        if np.isfinite(a):
            xs.append(xi)
            ys.append(a)
    return np.asarray(xs, float), np.asarray(ys, float)


def _save(fig: Any, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=_DPI)
    plt.close(fig)
    return path


def plot_accuracy(summary: dict[str, Any], path: Path, title: str | None = None) -> Path:
    """Accuracy (%) versus time per variant: the mean and its 95 % interval (error bars: over
    seeds; with one seed, over the test images), each seed (small), right after the
    corrections (hollow), the float network (dotted)."""
    variants = summary["variants"]
    styles = variant_styles(list(variants))
    fig, ax = plt.subplots(figsize=(9.5, 4.8))
    times = sorted({t for v in variants.values() for t in v["eval_times_s"] if t > 0})
    any_after = False
    for (name, v), d in zip(variants.items(), dodge_factors(len(variants)), strict=True):
        st = styles[name]
        t = np.asarray(v["eval_times_s"], dtype=float)
        keep = t > 0
        x, m = t[keep] * d, _pct(v["accuracy_mean"])[keep]
        lo, hi, what = accuracy_band(v)
        err = np.nan_to_num(np.vstack([m - lo[keep], hi[keep] - m])).clip(min=0)
        after = _pct(v.get("accuracy_after_correction_mean") or [])
        has_after = after.size == t.size and np.isfinite(after[keep]).any()
        ax.errorbar(x, m, yerr=err, color=st.colour, marker=st.marker, ms=5, lw=1.4,
                    ls="none" if has_after else st.linestyle, elinewidth=0.9, capsize=2.5,
                    label=name, zorder=3)  # fmt: skip
        for seed in v.get("accuracy_per_seed") or []:
            ax.plot(x, _pct(seed)[keep], ls="none", marker=st.marker, ms=2.2, color=st.colour,
                    alpha=0.45, zorder=2)  # fmt: skip
        if has_after:
            any_after = True
            ax.plot(x, after[keep], ls="none", marker=st.marker, ms=7, mfc="none", mew=1.4,
                    color=st.colour, zorder=4)  # fmt: skip
            ax.plot(*sawtooth_path(x, m, after[keep]), ls=st.linestyle, lw=1.4,
                    color=st.colour, zorder=3)  # fmt: skip
    floats = sorted({round(100 * v["digital_accuracy"], 2) for v in variants.values()
                     if v.get("digital_accuracy") is not None})  # fmt: skip
    for acc in floats:
        ax.axhline(acc, color="#555", ls=":", lw=1.2, zorder=1)
    handles, labels = ax.get_legend_handles_labels()
    if floats:
        handles.append(Line2D([], [], color="#555", ls=":", lw=1.2))
        labels.append("float network: " + ", ".join(f"{a:.1f} %" for a in floats))
    if any_after:
        handles.append(Line2D([], [], ls="none", marker="o", mfc="none", color="#555", ms=7))
        labels.append("hollow: right after the corrections")
    if times:
        _time_axis(ax, times[0], max(times))
    ax.set_ylabel("test accuracy (%)")
    seeds = max((v["seeds"] for v in variants.values()), default=1)
    what = accuracy_band(next(iter(variants.values())))[2] if variants else ""
    each = "; small: each seed" if seeds > 1 else ""
    ax.set_title(title or f"{summary['scenario']}: accuracy before correction\nmean and {what} "
                 f"({seeds} seed{'s' * (seeds > 1)}{each})", fontsize=10)  # fmt: skip
    ax.legend(handles, labels, **_LEGEND)
    return _save(fig, path)


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
    """Cumulative upkeep energy (pJ) versus time from the event ledger, mean over seeds, per
    variant: correction jobs (solid) and probes (dashed) apart (``results``: the run's
    ``SeedResult`` objects)."""
    variants = summary["variants"]
    styles = variant_styles(list(variants))
    fig, ax = plt.subplots(figsize=(9.5, 4.8))
    idle: list[str] = []
    times = sorted({t for v in variants.values() for t in v["eval_times_s"] if t > 0})
    end = max(v["duration_s"] for v in variants.values())
    grid = np.geomspace(min(times[0], 1.0) if times else 1.0, end, 400)
    for name in variants:
        mine = [r for r in results if r.variant == name]
        if not mine:
            continue
        st = styles[name]
        drawn = False
        for kind, ls, what in ((CORRECTION, "-", "correction jobs"), (PROBE, "--", "probes")):
            mean = np.mean([cumulative_energy_curve(r.events, (kind,), grid) for r in mine], axis=0)
            if np.any(mean > 0):
                ax.step(grid, np.where(mean > 0, mean, np.nan), where="post", lw=1.5, ls=ls,
                        color=st.colour, label=f"{name}: {what}")  # fmt: skip
                drawn = True
        if not drawn:
            idle.append(name)
    _time_axis(ax, grid[0], end)
    if ax.get_lines():
        ax.set_yscale("log")
        ax.legend(**_LEGEND)
    ax.set_ylabel("cumulative energy (pJ)")
    title = (f"{summary['scenario']}: upkeep energy, mean over seeds (solid: correction jobs, "
             "dashed: probes)")  # fmt: skip
    if idle:
        title += "\nno upkeep energy: " + ", ".join(idle)
    ax.set_title(title, fontsize=9)
    return _save(fig, path)


def plot_accuracy_energy(summary: dict[str, Any], path: Path) -> Path:
    """Each variant's accuracy at its last evaluation (mean ± std over seeds) against its
    upkeep energy over the run (log axis; variants that spent none at the left edge, hollow),
    with the Pareto front through the variants no other is both more accurate and cheaper."""
    variants = summary["variants"]
    styles = variant_styles(list(variants))
    names = list(variants)
    energy = np.asarray([variants[n].get("upkeep_energy_pj") or 0.0 for n in names], float)
    final = np.asarray([_pct(variants[n]["accuracy_mean"][-1:])[0] for n in names])
    bands = [accuracy_band(variants[n]) for n in names]
    err = np.nan_to_num([[final[i] - b[0][-1], b[1][-1] - final[i]] for i, b in enumerate(bands)])
    positive = energy[energy > 0]
    floor = positive.min() / 3 if positive.size else 1.0
    shown = np.where(energy > 0, energy, floor)
    fig, ax = plt.subplots(figsize=(9.5, 4.8))
    front = pareto_front(list(energy), list(100 - final))
    if len(front) > 1:
        order = sorted(front, key=lambda i: shown[i])
        ax.plot(shown[order], final[order], color="#444", ls=":", lw=1, label="Pareto front")
    for i, name in enumerate(names):
        st = styles[name]
        ax.errorbar([shown[i]], [final[i]], yerr=err[i].reshape(2, 1).clip(min=0),
                    color=st.colour, marker=st.marker,
                    ms=8, mfc=st.colour if energy[i] > 0 else "none", mew=1.5, capsize=3,
                    ls="none", label=name)  # fmt: skip
        ax.annotate(name, (shown[i], final[i]), fontsize=7, color=st.colour, xytext=(5, 5),
                    textcoords="offset points")  # fmt: skip
    ax.set_xscale("log")
    (left, right), ticks = energy_axis(floor, float(shown.max()))
    ax.set_xlim(left, right)
    ax.set_xticks([t for t, _ in ticks], [label for _, label in ticks])
    ax.minorticks_off()
    ax.set_xlabel("upkeep energy over the run (hollow, at 'none': no upkeep)")
    ax.set_ylabel("test accuracy at the last evaluation (%)")
    what = bands[0][2] if bands else ""
    ax.set_title(f"{summary['scenario']}: accuracy against upkeep energy (mean and {what})",
                 fontsize=10)  # fmt: skip
    ax.grid(True, alpha=0.3)
    ax.legend(**_LEGEND)
    return _save(fig, path)


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
    # each variant in its colour and marker, as in the runs' plots
    names = table["variant"].astype(str).to_numpy() if "variant" in table else None
    if names is None:
        names = np.full(len(table), "runs")
    for name, st in variant_styles(list(dict.fromkeys(names))).items():
        mine = names == name
        ax.errorbar(loss[mine], shown[mine], xerr=xerr[:, mine], yerr=yerr[:, mine],
                    fmt=st.marker, ms=4.5, color=st.colour, alpha=0.8, elinewidth=0.8,
                    capsize=2, label=f"{name} (95 % intervals)")  # fmt: skip
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
    """The plots of a run folder."""
    return [
        plot_accuracy(summary, out_dir / "accuracy.png"),
        plot_upkeep_energy(results, summary, out_dir / "upkeep_energy.png"),
        plot_accuracy_energy(summary, out_dir / "accuracy_energy.png"),
    ]
