"""The report's interactive plots (plotly), one function per plot, from a
:class:`~controller.scenario.report.study.Study`.

They follow the PNGs' rules (:mod:`controller.scenario.style`): one colour and marker per
variant everywhere, points that coincide spread slightly in time, error bars (not filled
bands) for the spread over seeds, hollow markers for the accuracy right after the
corrections of an instant, the float network's accuracy as a reference line, and time ticks
at round times. Every figure has a fixed height; its data is already aggregated (a few
hundred points per line).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from controller.scenario.plots import accuracy_band, pareto_front
from controller.scenario.report import columns as col
from controller.scenario.report.study import Study, finite
from controller.scenario.results import format_downtime
from controller.scenario.style import (
    DASHES,
    MARKERS,
    dodge_factors,
    energy_axis,
    energy_decades,
    kind_colour,
    time_ticks,
)

YEAR_S = 365 * 86400.0
HEIGHT = 460
_LAYOUT = dict(
    template="plotly_white",
    height=HEIGHT,
    margin=dict(l=70, r=20, t=60, b=60),
    font=dict(size=12),
    hoverlabel=dict(namelength=-1),
    legend=dict(font=dict(size=11)),
)
#: Kinds in stacking order: the network's one-time work at the bottom, upkeep on top.
KIND_ORDER = ("program", "calibration", "evaluation", "inference", col.PROBE, col.CORRECTION)


def _nan(values: Sequence[Any], scale: float = 1.0) -> np.ndarray:
    return np.asarray([v * scale if finite(v) else np.nan for v in values], dtype=float)


def _tick_args(ticks: Sequence[tuple[float, str]]) -> dict[str, list[Any]]:
    return {"tickvals": [t for t, _ in ticks], "ticktext": [label for _, label in ticks]}


def time_axis(fig: go.Figure, t_min_s: float, t_max_s: float, **where: Any) -> None:
    """A log time axis with ticks at round times (1 s, 1 min, 1 h, 1 d ...)."""
    ticks = time_ticks(t_min_s, t_max_s)
    fig.update_xaxes(type="log", **_tick_args(ticks),
                     title_text="time since programming", showgrid=True, **where)  # fmt: skip


def energy_unit(pj: float) -> tuple[str, float]:
    """The unit to show ``pj`` in, and its size in pJ."""
    for unit, scale in (("J", 1e12), ("mJ", 1e9), ("µJ", 1e6), ("nJ", 1e3)):
        if abs(pj) >= scale:
            return unit, scale
    return "pJ", 1.0


def _kinds(present: Sequence[str]) -> list[str]:
    return [k for k in KIND_ORDER if k in present] + sorted(set(present) - set(KIND_ORDER))


def _empty(fig: go.Figure, text: str) -> go.Figure:
    fig.add_annotation(text=text, showarrow=False, xref="paper", yref="paper", x=0.5, y=0.5,
                       font=dict(size=14, color="#666"))  # fmt: skip
    return fig


def _eval_range(study: Study) -> tuple[float, float]:
    times = [t for t, _ in study.eval_labels if t > 0]
    lo = min(times, default=1.0)
    hi = max([*times, *(s.duration_s for s in study.series)], default=lo)
    return lo, max(hi, lo)


# --- accuracy over time -------------------------------------------------------------------------
def accuracy_figure(study: Study) -> go.Figure:
    """Accuracy (%) per variant over time: mean ± std over seeds (error bars), each seed's
    point, the accuracy right after the corrections of an instant (hollow), the float
    network's accuracy (dotted)."""
    fig = go.Figure()
    dodge = dodge_factors(len(study.series))
    for s, d in zip(study.series, dodge, strict=True):
        e, st = s.entry, s.style
        t = np.asarray(e.get("eval_times_s", []), dtype=float)
        keep = t > 0
        labels = np.asarray(e.get("eval_labels", []), dtype=object)[keep]
        mean = _nan(e.get("accuracy_mean", []), 100)[keep]
        lo, hi, what = accuracy_band(e)
        lo, hi = lo[keep], hi[keep]
        x = t[keep] * d
        fig.add_trace(go.Scatter(
            x=x, y=mean, name=s.name, legendgroup=s.name, mode="lines+markers",
            line=dict(color=st.colour, dash=st.dash, width=2),
            marker=dict(symbol=st.symbol, size=8, color=st.colour),
            error_y=dict(type="data", symmetric=False, array=np.nan_to_num(hi - mean),
                         arrayminus=np.nan_to_num(mean - lo), thickness=1.2, width=4),
            customdata=np.stack([labels, lo, hi], axis=-1) if len(labels) else None,
            hovertemplate=(f"{s.name}<br>%{{customdata[0]}}: %{{y:.1f}} % "
                           f"[%{{customdata[1]:.1f}}, %{{customdata[2]:.1f}}]: {what}"
                           "<extra>before correction</extra>"),
        ))  # fmt: skip
        per_seed = e.get("accuracy_per_seed") or []
        if len(per_seed) > 1:
            xs = np.concatenate([x for _ in per_seed])
            ys = np.concatenate([_nan(a, 100)[keep] for a in per_seed])
            seeds = np.repeat(np.arange(len(per_seed)), int(keep.sum()))
            fig.add_trace(go.Scatter(
                x=xs, y=ys, legendgroup=s.name, showlegend=False, mode="markers",
                marker=dict(symbol=st.symbol, size=4, color=st.colour, opacity=0.45),
                customdata=seeds, name=f"{s.name}, per seed",
                hovertemplate=f"{s.name}<br>seed %{{customdata}}: %{{y:.1f}} %<extra></extra>",
            ))  # fmt: skip
        after = _nan(e.get("accuracy_after_correction_mean") or [], 100)
        if after.size == t.size and np.isfinite(after[keep]).any():
            fig.add_trace(go.Scatter(
                x=x, y=after[keep], legendgroup=s.name, showlegend=False, mode="markers",
                marker=dict(symbol=f"{st.symbol}-open", size=10, color=st.colour,
                            line=dict(width=2)),
                name=f"{s.name}, after correction",
                hovertemplate=f"{s.name}<br>%{{y:.1f}} % right after the corrections"
                              "<extra>after correction</extra>",
            ))  # fmt: skip
    lo, hi = _eval_range(study)
    floats: dict[float, list[str]] = {}
    for s in study.series:
        a = s.entry.get("digital_accuracy")
        if finite(a):
            floats.setdefault(round(100 * a, 2), []).append(s.name)
    for acc, names in sorted(floats.items()):
        who = "" if len(floats) == 1 else f" ({len(names)} variant{'s' * (len(names) > 1)})"
        fig.add_trace(go.Scatter(
            x=[lo / 1.5, hi * 1.5], y=[acc, acc], mode="lines",
            name=f"float network: {acc:.1f} %{who}",
            line=dict(color="#555", dash="dot", width=1.5),
            hovertemplate=f"float network: {acc:.1f} %<br>{', '.join(names)}<extra></extra>",
        ))  # fmt: skip
    if any(t.name.endswith("after correction") for t in fig.data):
        fig.add_trace(go.Scatter(
            x=[None], y=[None], mode="markers", name="hollow: right after the corrections",
            marker=dict(symbol="circle-open", size=10, color="#555", line=dict(width=2)),
        ))  # fmt: skip
    time_axis(fig, lo, hi)
    fig.update_xaxes(range=[math.log10(lo / 1.5), math.log10(hi * 1.5)])
    fig.update_yaxes(title_text="test accuracy (%)")
    what = accuracy_band(study.series[0].entry)[2] if study.series else ""
    fig.update_layout(**_LAYOUT, title=f"Test accuracy over time (mean and {what}; small "
                      "points: each seed)")  # fmt: skip
    return fig


# --- energy -------------------------------------------------------------------------------------
def _dropdown(fig: go.Figure, owners: list[int], names: list[str], titles: list[str]) -> None:
    """Show one series at a time: a menu of ``names``; trace i belongs to ``owners[i]``."""
    buttons = []
    for k, name in enumerate(names):
        visible = [o == k for o in owners]
        buttons.append(dict(label=name, method="update",
                            args=[{"visible": visible}, {"title.text": titles[k]}]))  # fmt: skip
    fig.update_layout(updatemenus=[dict(buttons=buttons, direction="down", x=1.0, xanchor="right",
                                        y=1.13, yanchor="top", showactive=True)])  # fmt: skip
    for i, trace in enumerate(fig.data):
        trace.visible = owners[i] == 0


def energy_stacked_figure(study: Study) -> go.Figure:
    """Cumulative energy by event kind over time, stacked, one variant at a time (menu)."""
    fig = go.Figure()
    shown = [s for s in study.series if s.energy_by_kind]
    if not shown:
        return _empty(fig, "no events recorded")
    top = max(sum(float(c[-1]) for c in s.energy_by_kind.values()) for s in shown)
    unit, scale = energy_unit(top)
    owners: list[int] = []
    for k, s in enumerate(shown):
        for kind in _kinds(list(s.energy_by_kind)):
            fig.add_trace(go.Scatter(
                x=study.grid_s, y=s.energy_by_kind[kind] / scale, name=kind, stackgroup="one",
                mode="lines", line=dict(width=0.5, color=kind_colour(kind)),
                fillcolor=kind_colour(kind),
                hovertemplate=f"{kind}: %{{y:.4g}} {unit}<extra>{s.name}</extra>",
            ))  # fmt: skip
            owners.append(k)
    titles = [f"Energy by kind over time, cumulative (mean over seeds): {s.name}" for s in shown]
    _dropdown(fig, owners, [s.name for s in shown], titles)
    time_axis(fig, float(study.grid_s[0]), float(study.grid_s[-1]))
    fig.update_yaxes(title_text=f"cumulative energy ({unit})")
    fig.update_layout(**_LAYOUT, title=titles[0])
    return fig


def energy_per_year_figure(study: Study) -> go.Figure:
    """Energy per year of the recurring kinds (probes, correction jobs, evaluations,
    inference), per variant: each kind's energy over the run divided by the run's length."""
    fig = go.Figure()
    present = sorted({k for s in study.series for k in s.energy_totals} - set(col.ONE_TIME_KINDS))
    kinds = _kinds(present)
    names = [s.name for s in study.series]
    if not kinds:
        return _empty(fig, "no recurring energy")
    for kind in kinds:
        y = [s.energy_totals.get(kind, 0.0) * YEAR_S / s.duration_s if s.duration_s else np.nan
             for s in study.series]  # fmt: skip
        fig.add_trace(go.Bar(
            x=names, y=[v if v > 0 else None for v in y], name=kind,
            marker_color=kind_colour(kind),
            hovertemplate=f"{kind}: %{{y:.4g}} pJ per year<extra>%{{x}}</extra>",
        ))  # fmt: skip
    values = [v for t in fig.data for v in t.y if v]
    ticks = energy_decades(min(values, default=1.0), max(values, default=1.0))
    fig.update_yaxes(type="log", title_text="energy per year",
                     **_tick_args(ticks))  # fmt: skip
    fig.update_layout(**_LAYOUT, barmode="group",
                      title="Energy per year by kind (over the run, scaled to a year; "
                      "programming and calibration are once and left out)")  # fmt: skip
    return fig


# --- corrections per wake-up ----------------------------------------------------------------------
def wakeups_figure(study: Study) -> go.Figure:
    """Devices rewritten and correction jobs per wake-up of the monitor over time (averaged
    within log-spaced bins of time; hover: how many wake-ups a point stands for)."""
    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, vertical_spacing=0.08)
    quiet = []
    for s in study.series:
        w = s.wakeups
        if w.empty:
            quiet.append(s.name)
            continue
        st = s.style
        for row, column, what in ((1, "devices", "devices rewritten"), (2, "jobs", "jobs")):
            fig.add_trace(go.Scatter(
                x=w["t_s"], y=w[column], name=s.name, legendgroup=s.name, showlegend=row == 1,
                mode="lines+markers", line=dict(color=st.colour, dash=st.dash, width=1.5),
                marker=dict(symbol=st.symbol, size=5, color=st.colour),
                customdata=np.stack([w["wakeups"], w["devices_max"]], axis=-1),
                hovertemplate=(f"{s.name}<br>%{{y:.4g}} {what} per wake-up<br>"
                               "(mean of %{customdata[0]} wake-ups; most devices in one: "
                               "%{customdata[1]:.0f})<extra></extra>"),
            ), row=row, col=1)  # fmt: skip
    if not fig.data:
        return _empty(fig, "no monitor wake-ups in this run")
    title = "Corrections per wake-up of the monitor (mean over the wake-ups in each time bin)"
    if quiet:
        title += f"<br><sup>never woke the monitor: {', '.join(quiet)}</sup>"
    lo, hi = float(study.grid_s[0]), float(study.grid_s[-1])
    time_axis(fig, lo, hi, row=2, col=1)
    fig.update_xaxes(type="log", row=1, col=1, tickvals=[t for t, _ in time_ticks(lo, hi)],
                     ticktext=["" for _ in time_ticks(lo, hi)])  # fmt: skip
    fig.update_yaxes(title_text="devices rewritten", rangemode="tozero", row=1, col=1)
    fig.update_yaxes(title_text="correction jobs", rangemode="tozero", row=2, col=1)
    fig.update_layout(**{**_LAYOUT, "height": HEIGHT + 120}, title=title)
    return fig


# --- tiles ----------------------------------------------------------------------------------------
def availability_figure(study: Study) -> go.Figure:
    """Seconds each tile was unavailable to inference (programmed, probed, under correction),
    mean over seeds, per variant; the legend gives each variant's availability."""
    fig = go.Figure()
    for s in study.series:
        if s.downtime_s.empty:
            continue
        tiles = [int(t) for t in s.downtime_s.index]
        down = format_downtime(s.entry.get(col.AVAILABILITY), s.duration_s)
        share = f" (down {down} per tile)" if down != "-" else ""
        fig.add_trace(go.Bar(
            x=[f"tile {t}" for t in tiles], y=s.downtime_s.to_numpy(float), name=s.name + share,
            marker=dict(color=s.style.colour, line=dict(color="#333", width=0.5)),
            customdata=[s.tile_label(t) for t in tiles],
            hovertemplate=f"{s.name}<br>%{{customdata}}: %{{y:.3g}} s unavailable<extra></extra>",
        ))  # fmt: skip
    if not fig.data:
        return _empty(fig, "no tile was ever busy")
    layers = {}
    for s in study.series:
        for t in s.downtime_s.index:
            layers.setdefault(f"tile {int(t)}", s.tile_label(int(t)))
    fig.update_xaxes(tickvals=list(layers), ticktext=list(layers.values()))
    fig.update_yaxes(type="log", title_text="unavailable to inference (s, over the run)")
    fig.update_layout(**_LAYOUT, barmode="group",
                      title="Tile availability: time each tile spent programmed, probed or "
                      "under correction")  # fmt: skip
    return fig


def drift_figure(study: Study) -> go.Figure:
    """The drift monitor's metric (mean |y_t - y_0| of a tile, weight units) per tile over
    time, labelled by the layer the tile holds; one variant at a time (menu)."""
    fig = go.Figure()
    shown = [s for s in study.series if s.drift]
    if not shown:
        return _empty(fig, "no variant probed its tiles (only policies that monitor drift do)")
    owners: list[int] = []
    for k, s in enumerate(shown):
        for j, (tile, d) in enumerate(sorted(s.drift.items())):
            marker, symbol = MARKERS[j % len(MARKERS)]
            _ls, dash = DASHES[j % len(DASHES)]
            fig.add_trace(go.Scatter(
                x=d["t_s"], y=d["drift"], name=s.tile_label(tile), mode="lines+markers",
                line=dict(color=s.style.colour, dash=dash, width=1.5),
                marker=dict(symbol=symbol, size=5, color=s.style.colour),
                customdata=d["drift_max"],
                hovertemplate=(f"{s.tile_label(tile)}<br>drift metric %{{y:.4f}} "
                               "(largest in the bin: %{customdata:.4f})"
                               f"<extra>{s.name}</extra>"),
            ))  # fmt: skip
            owners.append(k)
    titles = [f"Drift per tile at the monitor's probes (mean over seeds): {s.name}" for s in shown]
    _dropdown(fig, owners, [s.name for s in shown], titles)
    time_axis(fig, float(study.grid_s[0]), float(study.grid_s[-1]))
    fig.update_yaxes(title_text="drift metric, mean |y_t − y_0| (weight units)", rangemode="tozero")
    fig.update_layout(**_LAYOUT, title=titles[0])
    return fig


# --- accuracy against energy ----------------------------------------------------------------------
def accuracy_energy_figure(study: Study) -> go.Figure:
    """Each variant's accuracy at the last evaluation (mean ± std) against its upkeep energy
    over the run; variants that spent none sit at the left edge, hollow. The Pareto front
    (no other variant is both more accurate and cheaper) is drawn through its members."""
    fig = go.Figure()
    energy = np.asarray([s.entry.get(col.UPKEEP_ENERGY_PJ) or 0.0 for s in study.series], float)
    final = np.asarray([_nan(s.entry.get("accuracy_mean", [np.nan])[-1:], 100)[0]
                        for s in study.series])  # fmt: skip
    bands = [accuracy_band(s.entry) for s in study.series]
    lo = np.asarray([b[0][-1] if len(b[0]) else np.nan for b in bands])
    hi = np.asarray([b[1][-1] if len(b[1]) else np.nan for b in bands])
    positive = energy[energy > 0]
    floor = positive.min() / 3 if positive.size else 1.0
    shown = np.where(energy > 0, energy, floor)
    for i, s in enumerate(study.series):
        st = s.style
        spent = energy[i] > 0
        fig.add_trace(go.Scatter(
            x=[shown[i]], y=[final[i]], name=s.name, mode="markers+text", text=[s.name],
            textposition="top center", textfont=dict(size=10, color=st.colour),
            marker=dict(symbol=st.symbol if spent else f"{st.symbol}-open", size=12,
                        color=st.colour, line=dict(width=2)),
            error_y=dict(type="data", symmetric=False, array=[np.nan_to_num(hi[i] - final[i])],
                         arrayminus=[np.nan_to_num(final[i] - lo[i])], thickness=1.2, width=4),
            hovertemplate=(f"{s.name}<br>%{{y:.1f}} % [{lo[i]:.1f}, {hi[i]:.1f}] at the end<br>"
                           + (f"{energy[i]:.4g} pJ upkeep" if spent else "no upkeep energy")
                           + "<extra></extra>"),
        ))  # fmt: skip
    # the front on (energy, loss): the loss is 100 - accuracy here
    front = pareto_front(list(energy), list(100 - final))
    if len(front) > 1:
        order = sorted(front, key=lambda i: shown[i])
        fig.add_trace(go.Scatter(x=shown[order], y=final[order], mode="lines", name="Pareto front",
                                 line=dict(color="#444", dash="dot", width=1)))  # fmt: skip
    (left, right), ticks = energy_axis(floor, float(shown.max()) if len(shown) else floor)
    fig.update_xaxes(type="log", range=[math.log10(left), math.log10(right)],
                     **_tick_args(ticks),
                     title_text="upkeep energy over the run (hollow, at none: no "
                     "upkeep)")  # fmt: skip
    fig.update_yaxes(title_text="test accuracy at the last evaluation (%)")
    fig.update_layout(**_LAYOUT, title="Accuracy against what keeping it cost")
    return fig


def sweep_front_figure(table: Any, link_of: dict[str, str]) -> go.Figure:
    """A sweep's points: upkeep energy against accuracy loss, the Pareto front marked; a click
    on a point opens its run's report (``link_of``: run name -> relative link)."""
    fig = go.Figure()
    if table is None or table.empty:
        return _empty(fig, "no finished point")
    variants = list(dict.fromkeys(table["variant"]))
    from controller.scenario.style import variant_styles

    styles = variant_styles(variants)
    energy = table[col.UPKEEP_ENERGY_PJ].to_numpy(float)
    loss = 100 * table["accuracy_loss"].to_numpy(float)
    positive = energy[energy > 0]
    floor = positive.min() / 3 if positive.size else 1.0
    shown = np.where(energy > 0, energy, floor)
    for v in variants:
        rows = np.flatnonzero(table["variant"].to_numpy() == v)
        st = styles[v]
        labels = table["label"].to_numpy()[rows]
        links = [link_of.get(r, "") for r in table["run"].to_numpy()[rows]]
        fig.add_trace(go.Scatter(
            x=loss[rows], y=shown[rows], mode="markers", name=v,
            marker=dict(symbol=st.symbol, size=10, color=st.colour, line=dict(width=1)),
            customdata=np.stack([labels, links], axis=-1),
            hovertemplate="%{customdata[0]}<br>loss %{x:.2f} points, %{y:.4g} pJ"
                          "<br>click: open its report<extra></extra>",
        ))  # fmt: skip
    front = pareto_front(list(energy), list(loss))
    if front:
        fig.add_trace(go.Scatter(
            x=loss[front], y=shown[front], mode="lines", name="Pareto front",
            line=dict(color="#d62728", width=1.5), hoverinfo="skip",
        ))  # fmt: skip
    fig.update_xaxes(title_text="accuracy loss, first to last evaluation (points of %)")
    ticks = energy_decades(float(shown.min()), float(shown.max()))
    fig.update_yaxes(type="log", title_text="upkeep energy over the run",
                     **_tick_args(ticks))  # fmt: skip
    fig.update_layout(**_LAYOUT, title="Sweep: upkeep energy against accuracy loss (click a "
                      "point for its run's report)")  # fmt: skip
    return fig
