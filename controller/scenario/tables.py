"""The tables a run and a sweep print, with their uncertainty, fitted to the console's width.

A run prints two tables: the accuracy at each evaluation time (mean over seeds, and below it
the half-width of its 95 % interval: over seeds, or, with one seed, over the test images), and
what each variant cost, with its final accuracy against the best variant's (``≈``: the
difference is not significant). Evaluation times that do not fit the width are left out, and
the footnote names them (``summary.json`` has every one). A sweep prints one table: per grid
point and variant the final accuracy with its interval, against the best point, the accuracy
loss with its interval, and the upkeep energy. Two-line cells keep the tables within 80
columns for the shipped scenarios.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from rich import box
from rich.table import Table

from controller.scenario.results import (
    format_count,
    format_downtime,
    format_energy_pj,
    shared_times,
    time_index,
)

#: Width of an accuracy column ("100.0", "±12.3") with its padding.
_TIME_COL = 7


def _pct(x: float | None, digits: int = 1) -> str:
    return "-" if x is None or not math.isfinite(x) else f"{100 * x:.{digits}f}"


def _half(bounds: Sequence[float | None] | None) -> float | None:
    if not bounds or any(b is None or not math.isfinite(b) for b in bounds):
        return None
    return (bounds[1] - bounds[0]) / 2


def shown_times(n: int, room: int) -> list[int]:
    """Which of ``n`` evaluation times fit in ``room`` columns: all, or the first, the last
    and evenly spaced ones between."""
    if n <= room:
        return list(range(n))
    if room <= 1:
        return [n - 1]
    step = (n - 1) / (room - 1)
    return sorted({round(i * step) for i in range(room)})


def accuracy_interval(v: dict[str, Any], i: int) -> tuple[float | None, str]:
    """Half-width of evaluation ``i``'s 95 % interval and where it comes from: over seeds,
    or the test images' Wilson interval with one seed."""
    if v.get("seeds", 1) > 1:
        return _half((v.get("accuracy_ci95") or [None] * (i + 1))[i]), "seeds"
    return _half((v.get("accuracy_wilson95") or [None] * (i + 1))[i]), "images"


def run_tables(summary: dict[str, Any], width: int = 80) -> tuple[list[Table], list[str]]:
    """The run's accuracy and cost tables, and the footnotes that go with them."""
    variants = summary["variants"]
    if not variants:
        return [], []
    name_w = max(len("variant"), *(len(n) for n in variants))
    times = shared_times(variants)  # variants may evaluate at times of their own
    labels = [lab for _, lab in times]
    keep = shown_times(len(labels), max(1, (width - name_w - 3) // _TIME_COL))
    seeds = sorted({v.get("seeds", 1) for v in variants.values()})
    images = sorted({v.get("test_images") for v in variants.values() if v.get("test_images")})
    acc = Table(title=f"{summary['scenario']}: test accuracy (%), mean and ± its 95 % interval",
                title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False)  # fmt: skip
    acc.add_column("variant", no_wrap=True)
    for i in keep:
        acc.add_column(labels[i], justify="right", no_wrap=True)
    for name, v in variants.items():
        cells = []
        for k in keep:
            i = time_index(v, times[k][0])
            if i is None:
                cells.append("-")
                continue
            half, _ = accuracy_interval(v, i)
            mean = v["accuracy_mean"][i] if i < len(v["accuracy_mean"]) else None
            cells.append(f"{_pct(mean)}\n±{_pct(half)}" if half is not None else _pct(mean))
        acc.add_row(name, *cells)
    cost = Table(title=f"{summary['scenario']}: final accuracy against the best, and what "
                 "upkeep cost", title_justify="left", box=box.SIMPLE_HEAD,
                 pad_edge=False)  # fmt: skip
    best = {c["a"]: c for c in summary.get("final_vs_best", [])}
    cost.add_column("variant", no_wrap=True)
    for col in ("vs best", "upkeep energy", "corr.", "pulses", "downtime"):
        cost.add_column(col, justify="right")
    for name, v in variants.items():
        ci = _half(v.get("upkeep_energy_pj_ci95"))
        energy = format_energy_pj(v["upkeep_energy_pj"])
        if ci is not None and v["upkeep_energy_pj"] > 0:
            energy += f"\n±{100 * ci / v['upkeep_energy_pj']:.0f} %"
        cost.add_row(name, _versus(best.get(name)), energy, f"{v['corrections']:.0f}",
                     format_count(v["correction_pulses"]),
                     format_downtime(v["availability"], v.get("duration_s")))  # fmt: skip
    notes = [_interval_note(seeds, images)]
    if best:
        first = next(iter(best.values()))
        notes.append(
            f"vs best: final accuracy minus the best variant's ({first['b']}), in "
            f"points, p-value of a {first['test']}; ≈: not significant (p ≥ 0.05)"
        )
    left = [labels[i] for i in range(len(labels)) if i not in keep]
    if left:
        notes.append(f"not shown for width: {', '.join(left)} (summary.json has every time)")
    return [acc, cost], notes


def _interval_note(seeds: list[int], images: list[int]) -> str:
    n_img = f"{images[0]:,} test images" if len(images) == 1 else "the test images"
    if seeds == [1]:
        return f"±: 95 % Wilson interval on {n_img} (one seed: nothing to spread over)"
    note = f"±: 95 % interval of the mean over {'/'.join(map(str, seeds))} seeds (Student's t)"
    if images:
        one = 1 / images[0] if len(images) == 1 else None
        note += f"; {n_img}" + (f", one image = {100 * one:.2g} points" if one else "")
    return note


def _versus(c: dict[str, Any] | None) -> str:
    if c is None:
        return "-"
    if c["a"] == c["b"]:
        return "best"
    p = c.get("p_value")
    tail = f"\np={p:.2f}" if p is not None and math.isfinite(p) else ""
    mark = "" if c.get("significant") else "≈ "
    return f"{mark}{100 * c['diff']:+.1f}{tail}"


def sweep_table(table: Any, keys: Sequence[str], title: str) -> tuple[Table, list[str]]:
    """A sweep's table (``table``: the sweep's frame, :func:`~controller.scenario.sweep.
    folder_table`), one row per grid point and variant, and its footnotes."""
    t = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False)
    for k in keys:
        t.add_column(k.rsplit(".", 1)[-1], justify="right", overflow="fold")
    for col in ("variant", "final acc.", "vs best", "loss", "upkeep energy", "corr."):
        t.add_column(col, justify="left" if col == "variant" else "right")
    for _, row in table.iterrows():
        final = (row["accuracy_final_ci_low"], row["accuracy_final_ci_high"])
        loss = (row["accuracy_loss_ci_low"], row["accuracy_loss_ci_high"])
        vs = {"a": row["label"], "b": row["vs_best_of"], "diff": row["vs_best_diff"],
              "p_value": row["vs_best_p"], "significant": row["vs_best_significant"]}  # fmt: skip
        t.add_row(*[str(row[k]) for k in keys], str(row["variant"]),
                  f"{_pct(row['accuracy_final_mean'])}\n±{_pct(_half(final))}", _versus(vs),
                  f"{_pct(row['accuracy_loss'])}\n±{_pct(_half(loss))}",
                  format_energy_pj(row["upkeep_energy_pj"]),
                  f"{row['corrections']:.0f}")  # fmt: skip
    best = table["vs_best_of"].iloc[0] if len(table) else ""
    test = table["vs_best_test"].iloc[0] if len(table) else ""
    notes = ["final acc. and loss (first minus last evaluation), in %: mean and ± its 95 % "
             "interval (over seeds; with one seed, over the test images)",
             f"vs best: final accuracy minus the best point's ({best}), in points, p-value of a "
             f"{test}; ≈: not significant (p ≥ 0.05)"]  # fmt: skip
    return t, notes
