"""The report page: one self-contained HTML file (plotly.js inlined, no network needed).

:func:`write_report` writes ``report.html`` into a run folder (``pcm-twin report RUN_DIR``,
and at the end of every ``run``); :func:`write_comparison` writes one page for several runs
(``pcm-twin compare``); :func:`write_sweep_report` writes a sweep folder's page, whose points
link to their runs' reports. The page holds the summary table, the plots of
:mod:`~controller.scenario.report.figures` with a line each on how to read them, and the
scenario (as given and resolved).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import jinja2
import plotly
import plotly.io as pio
import yaml
from plotly.offline import get_plotlyjs

from controller.scenario.report import figures
from controller.scenario.report.data import RunData, SweepData, load_run, load_sweep
from controller.scenario.report.study import Study, build_study, finite
from controller.scenario.results import atomic_write_text, format_count, format_downtime
from controller.scenario.results import format_energy_pj as _energy
from controller.scenario.tables import accuracy_interval

REPORT_FILE = "report.html"
_CONFIG = {"displaylogo": False, "responsive": True,
           "toImageButtonOptions": {"format": "png", "scale": 2}}  # fmt: skip


@dataclass
class Section:
    """One plot of the page."""

    id: str
    nav: str
    heading: str
    how: str
    html: str
    after: str = ""


@dataclass
class Cell:
    text: str
    title: str = ""


@dataclass
class Row:
    name: str
    colour: str
    cells: list[Cell]
    link: str = ""


@dataclass
class Table:
    header: list[str]
    rows: list[Row] = field(default_factory=list)
    notes: str = ""


@dataclass
class Timings:
    """Where the time of writing a report went (seconds)."""

    read_s: float = 0.0
    aggregate_s: float = 0.0
    render_s: float = 0.0
    total_s: float = 0.0
    bytes: int = 0


def _version() -> str:
    try:
        return metadata.version("pcm-twin")
    except metadata.PackageNotFoundError:
        return "dev"


def _pct(mean: Any, std: Any) -> str:
    if not finite(mean):
        return "–"
    return f"{100 * mean:.1f} ± {100 * std:.1f}" if finite(std) else f"{100 * mean:.1f}"


def _versus(run: RunData, variant: str) -> Cell:
    """The final accuracy against the best variant of the same run (``summary.json``'s
    ``final_vs_best``; ``≈``: not significant)."""
    for c in run.summary.get("final_vs_best") or []:
        if c.get("a") != variant:
            continue
        if c.get("a") == c.get("b"):
            return Cell("best", "the most accurate variant at the last evaluation")
        p = c.get("p_value")
        mark = "" if c.get("significant") else "≈ "
        title = f"{c.get('test', '')}: p = {p:.2g}" if finite(p) else str(c.get("test", ""))
        lo, hi = c.get("ci_low"), c.get("ci_high")
        if finite(lo) and finite(hi):
            title += f"; 95 % interval [{100 * lo:+.1f}, {100 * hi:+.1f}] points"
        return Cell(f"{mark}{100 * c['diff']:+.1f}", title)
    return Cell("–")


def summary_table(study: Study) -> Table:
    """Accuracy (mean ± the half-width of its 95 % interval, %) at each evaluation time of
    any series, the final accuracy against the best variant, then what upkeep cost: energy,
    correction jobs, pulses, wake-ups, and the time a tile was unavailable."""
    times = study.eval_labels
    header = ["variant", *[lab for _, lab in times], "vs best", "upkeep energy", "corrections",
              "pulses", "wake-ups", "tile downtime"]  # fmt: skip
    table = Table(header)
    for s in study.series:
        e = s.entry
        at = {float(t): i for i, t in enumerate(e.get("eval_times_s", []))}
        after = e.get("accuracy_after_correction_mean") or []
        cells = []
        for t, _lab in times:
            i = at.get(t)
            if i is None:
                cells.append(Cell("–"))
                continue
            a = after[i] if i < len(after) else None
            half, over = accuracy_interval(e, i)
            title = f"std over seeds {100 * e['accuracy_std'][i]:.1f}" if finite(
                e["accuracy_std"][i]) and s.seeds > 1 else ""  # fmt: skip
            if finite(a):
                title += f"; right after the corrections: {100 * a:.1f} %"
            shown = half if finite(half) else e["accuracy_std"][i]
            cells.append(Cell(_pct(e["accuracy_mean"][i], shown), title.strip("; ")))
        energy_std = e.get("upkeep_energy_pj_std")
        cells += [
            _versus(s.run, s.variant),
            Cell(_energy(e.get("upkeep_energy_pj")),
                 f"± {_energy(energy_std)} over seeds" if finite(energy_std) else ""),
            Cell(format_count(e.get("corrections"))),
            Cell(format_count(e.get("correction_pulses"))),
            Cell(format_count(s.wakeup_count)),
            Cell(format_downtime(e.get("availability"), e.get("duration_s"))),
        ]  # fmt: skip
        table.rows.append(Row(s.name, s.style.colour, cells))
    seeds = sorted({s.seeds for s in study.series})
    table.notes = (
        f"Accuracy in %, mean over {'/'.join(map(str, seeds))} device-noise seed(s) ± the "
        "half-width of its 95 % interval (over seeds, Student's t; with one seed, over the test "
        "images; ± std for older run folders), measured before any correction due at that time "
        "(the worst point of the cycle; hover a cell for the std and the accuracy right after "
        "the corrections). vs best: final accuracy minus the best variant's, in points (≈: not "
        "significant; hover for the test and p-value). Upkeep energy: the monitor's "
        "probes plus the correction jobs over the run (twin and controller), mean over seeds. "
        "Wake-ups: of the drift monitor, per seed. Tile downtime: (1 − availability) × duration."
    )
    return table


def _html(fig: Any, div_id: str, post_script: str | None = None) -> str:
    return pio.to_html(fig, include_plotlyjs=False, full_html=False, div_id=div_id,
                       config=_CONFIG, default_height=f"{fig.layout.height or 460}px",
                       post_script=post_script)  # fmt: skip


def run_sections(study: Study) -> list[Section]:
    """The plots of a run (or of runs compared)."""
    return [
        Section("accuracy", "accuracy", "Accuracy over time",
                "Each variant's test accuracy at its evaluation times: line and filled marker "
                "the mean over seeds with its 95 % interval as error bars (over seeds; with "
                "one seed, over the test images), small markers each seed, hollow "
                "markers the accuracy right after the corrections due at that time. Points "
                "that would coincide are spread slightly in time. The dotted line is the "
                "float (digital) network's accuracy. Click a legend entry to hide a variant.",
                _html(figures.accuracy_figure(study), "fig-accuracy")),
        Section("accuracy-energy", "accuracy vs energy", "Accuracy against upkeep energy",
                "Each variant's accuracy at the last evaluation against what keeping its "
                "weights in place cost over the run (probes plus correction jobs).",
                _html(figures.accuracy_energy_figure(study), "fig-accuracy-energy")),
        Section("energy", "energy", "Energy by kind over time",
                "Cumulative energy of each kind of firmware action, stacked, mean over seeds "
                "(pick the variant in the menu). Programming and calibration happen once at "
                "the start; probes and correction jobs are the upkeep.",
                _html(figures.energy_stacked_figure(study), "fig-energy")),
        Section("energy-year", "per year", "Energy per year",
                "Each recurring kind's energy over the run, scaled to one year (log axis).",
                _html(figures.energy_per_year_figure(study), "fig-energy-year")),
        Section("wakeups", "corrections", "Corrections per wake-up",
                "Devices given to correction jobs, and jobs, per wake-up of the drift monitor "
                "(wake-ups are averaged within log-spaced bins of time so that a year of "
                "hourly wake-ups stays readable; hover for the number of wake-ups a point "
                "stands for and the largest count in it).",
                _html(figures.wakeups_figure(study), "fig-wakeups")),
        Section("availability", "availability", "Tile availability",
                "Seconds each tile spent programmed, probed or under correction, when it "
                "could not serve inference (mean over seeds, log axis); tiles are labelled "
                "by the layer they hold.",
                _html(figures.availability_figure(study), "fig-availability")),
        Section("drift", "drift", "Drift per tile and layer",
                "The drift monitor's metric at each probe: mean |y_t − y_0| per weight of the "
                "tile (weight units), averaged over seeds and log-spaced time bins (pick the "
                "variant in the menu). Only policies that probe have it.",
                _html(figures.drift_figure(study), "fig-drift")),
    ]  # fmt: skip


def _scenario_blocks(study: Study) -> list[dict[str, Any]]:
    out = []
    for label, run in study.runs:
        out.append({
            "label": label, "path": str(run.path), "description": run.description,
            "text": run.scenario_text,
            "resolved": yaml.safe_dump(run.resolved, sort_keys=False, allow_unicode=True),
            "run_info": json.dumps(run.run_info, indent=2) if run.run_info else "",
        })  # fmt: skip
    return out


def _env() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.PackageLoader("controller.scenario.report", "."),
        autoescape=jinja2.select_autoescape(["html", "j2"]),
        undefined=jinja2.StrictUndefined,
    )


def render(
    title: str, subtitle: list[str], table: Table, sections: list[Section], summary_how: str,
    scenarios: list[dict[str, Any]],
) -> str:  # fmt: skip
    """The page's HTML."""
    return _env().get_template("report.html.j2").render(
        title=title, subtitle=subtitle, table=table, sections=sections, summary_how=summary_how,
        scenarios=scenarios, plotly_js=get_plotlyjs(), version=_version(),
        plotly_version=plotly.__version__,
    )  # fmt: skip


def _subtitle(study: Study) -> list[str]:
    lines = []
    for label, run in study.runs:
        s = run.summary
        duration = max((v.get("duration_s") or 0 for v in s["variants"].values()), default=0)
        from controller.scenario.durations import format_duration

        seeds = max((v.get("seeds") or 1 for v in s["variants"].values()), default=1)
        prefix = f"{label}: " if study.is_comparison else ""
        lines.append(f"{prefix}scenario {s.get('scenario')!r}, seed {s.get('seed')}, "
                     f"{len(run.variants)} variant(s) × {seeds} device-noise seed(s), "
                     f"{format_duration(duration)} of device time — {run.path}")  # fmt: skip
        if run.description and not study.is_comparison:
            lines.append(run.description)
    return lines


def _write(path: Path, html: str, timings: Timings, started: float) -> Timings:
    atomic_write_text(path, html)
    timings.bytes = len(html.encode("utf-8"))
    timings.total_s = time.perf_counter() - started
    return timings


def write_report(run_dir: str | Path, out: str | Path | None = None) -> tuple[Path, Timings]:
    """``report.html`` of one run folder (or ``out``); returns its path and timings."""
    started = time.perf_counter()
    run = load_run(run_dir)
    path = Path(out) if out is not None else run.path / REPORT_FILE
    html, timings = _study_page([run], f"pcm-twin report: {run.name}")
    return path, _write(path, html, timings, started)


def write_comparison(run_dirs: Sequence[str | Path], out: str | Path) -> tuple[Path, Timings]:
    """One page comparing runs (each variant of each run is a series of its own)."""
    started = time.perf_counter()
    runs = [load_run(d) for d in run_dirs]
    names = ", ".join(dict.fromkeys(r.name for r in runs))
    html, timings = _study_page(runs, f"pcm-twin comparison: {names}")
    return Path(out), _write(Path(out), html, timings, started)


def _study_page(runs: list[RunData], title: str) -> tuple[str, Timings]:
    timings = Timings()
    study = build_study(runs)
    timings.read_s, timings.aggregate_s = study.read_s, study.aggregate_s
    t0 = time.perf_counter()
    each = " of each run (run · variant)" if study.is_comparison else ""
    how = f"One row per variant{each}, in the colour it has in every plot."
    html = render(title, _subtitle(study), summary_table(study), run_sections(study), how,
                  _scenario_blocks(study))  # fmt: skip
    timings.render_s = time.perf_counter() - t0
    return html, timings


# --- sweeps -------------------------------------------------------------------------------------
_CLICK_JS = """
var plot = document.getElementById('{plot_id}');
plot.on('plotly_click', function (data) {
  var link = data.points[0].customdata[1];
  if (link) { window.location.href = link; }
});
"""


def write_sweep_report(
    sweep_dir: str | Path, out: str | Path | None = None
) -> tuple[Path, Timings]:
    """``report.html`` of a sweep folder: its points' table and front, each point linked to
    its run's ``report.html`` (written by the run)."""
    started = time.perf_counter()
    sweep: SweepData = load_sweep(sweep_dir)
    path = Path(out) if out is not None else sweep.path / REPORT_FILE
    links = {}
    table_runs = list(sweep.table["run"].astype(str)) if "run" in sweep.table else []
    for name in dict.fromkeys([*sweep.runs, *table_runs]):
        target = sweep.run_dir(name) / REPORT_FILE
        if target.is_file():
            links[name] = os.path.relpath(target, path.parent)
    t0 = time.perf_counter()
    fig = figures.sweep_front_figure(sweep.table, links)
    section = Section("front", "front", "Pareto front",
                      "Every grid point and variant: the accuracy it lost from the first to the "
                      "last evaluation against its upkeep energy; the red line joins the "
                      "points no other point beats on both. Click a point to open its run.",
                      _html(fig, "fig-front", _CLICK_JS))  # fmt: skip
    table = _sweep_table(sweep, links)
    grid = ", ".join(f"{k} = {v}" for k, v in sweep.meta.get("grid", {}).items())
    html = render(f"pcm-twin sweep: {sweep.name}", [f"grid: {grid}", str(sweep.path)], table,
                  [section], "One row per grid point and variant; the name links to its "
                  "run's report.", [])  # fmt: skip
    timings = Timings(render_s=time.perf_counter() - t0)
    return path, _write(path, html, timings, started)


def _sweep_table(sweep: SweepData, links: dict[str, str]) -> Table:
    from controller.scenario.style import variant_styles

    t = sweep.table
    keys = [k for k in sweep.meta.get("grid", {}) if k in t.columns]
    table = Table(["point", *[k.rsplit(".", 1)[-1] for k in keys], "variant",
                   "final accuracy (%)", "loss (points)", "upkeep energy",
                   "corrections"])  # fmt: skip
    if t.empty:
        return table
    styles = variant_styles(list(dict.fromkeys(t["variant"])))
    for _, r in t.iterrows():
        cells = [Cell(str(r[k])) for k in keys] + [
            Cell(str(r["variant"])),
            Cell(_pct(r.get("accuracy_final_mean"), r.get("accuracy_final_std"))),
            Cell(f"{100 * r['accuracy_loss']:.2f}" if finite(r.get("accuracy_loss")) else "–"),
            Cell(_energy(r.get("upkeep_energy_pj"))),
            Cell(format_count(r.get("corrections"))),
        ]  # fmt: skip
        table.rows.append(Row(str(r["run"]), styles[r["variant"]].colour, cells,
                              links.get(str(r["run"]), "")))  # fmt: skip
    return table
