"""Reports, comparisons and the loading API: events in Parquet, run folders as frames, the
numbers behind the plots, the HTML page, and the command line."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from plotly.offline import get_plotlyjs
from typer.testing import CliRunner

from controller.cli import app
from controller.scenario import eventlog
from controller.scenario.report import aggregate as agg
from controller.scenario.report import columns as col
from controller.scenario.report import load, load_run, write_comparison, write_report
from controller.scenario.style import dodge_factors, time_ticks, variant_styles
from tests.controller.scenario.conftest import REPO

EVENTS = [
    ("a", 0, {"seq": 1, "kind": "program", "start_s": 0.0, "end_s": 1e-5, "tile": 0,
              "energy_pj": 10.0, "detail": {"iterations": 3}}),
    ("a", 0, {"seq": 2, "kind": "probe", "start_s": 3600.0, "end_s": 3600.1, "tile": 0,
              "energy_pj": 2.0, "detail": {"drift_metric": 0.07, "rows": 4}}),
    ("b", 1, {"seq": 1, "kind": "correction", "start_s": 3600.2, "end_s": 3600.5, "tile": 1,
              "energy_pj": 5.5, "detail": {"method": "auto", "converged": 2, "extra": [1, 2]}}),
]  # fmt: skip


def test_events_round_trip_through_parquet(tmp_path: Path) -> None:
    """Events written to events.parquet read back equal, detail keys and all (a key missing
    from an event stays missing; lists come back as their JSON text)."""
    path = eventlog.write_events(tmp_path / "events.parquet", EVENTS)
    back = list(eventlog.event_records(eventlog.read_events(path)))
    assert [(e.pop("variant"), e.pop("seed")) for e in back] == [("a", 0), ("a", 0), ("b", 1)]
    for got, (_, _, want) in zip(back, EVENTS, strict=True):
        want = {**want, "detail": dict(want["detail"])}
        if "extra" in want["detail"]:
            want["detail"]["extra"] = "[1, 2]"
        assert {k: v for k, v in got.items() if v is not None or k == "detail"} == want


def test_events_are_read_by_column_and_kind(tmp_path: Path) -> None:
    """read_events gives only the columns and kinds asked for; same events, same bytes."""
    a = eventlog.write_events(tmp_path / "a.parquet", EVENTS)
    b = eventlog.write_events(tmp_path / "b.parquet", EVENTS)
    assert a.read_bytes() == b.read_bytes()
    probes = eventlog.read_events(a, ["kind", "detail.drift_metric", "nope"], kinds=["probe"])
    assert list(probes.columns) == ["kind", "detail.drift_metric"]
    assert probes["detail.drift_metric"].tolist() == [0.07]
    assert eventlog.read_events(a, kinds=[]).empty


def test_a_run_folder_loads_as_frames(report_run: Path) -> None:
    """load_run gives the summary per variant, the timeline, the events (only the kinds
    asked for) and the layer of each tile."""
    run = load_run(report_run)
    assert run.variants == ["gdc", "threshold"]
    frame = run.summary_frame
    assert list(frame.index) == ["gdc", "threshold"]
    assert frame.loc["gdc", "upkeep_energy_pj"] == 0 < frame.loc["threshold", "upkeep_energy_pj"]
    assert {"accuracy_1s", "accuracy_6h_std"} <= set(frame.columns)
    acc = run.accuracy
    assert set(acc["phase"]) == {col.BEFORE_CORRECTION, col.AFTER_CORRECTION}
    assert len(acc[acc["phase"] == col.BEFORE_CORRECTION]) == 2 * 2 * 4
    probes = run.events(["variant", "kind", "tile", "detail.drift_metric"], kinds=["probe"])
    assert set(probes["kind"]) == {"probe"} and set(probes["variant"]) == {"threshold"}
    assert probes["detail.drift_metric"].notna().all()
    assert run.tile_layers["threshold"] == {0: "fc1", 1: "fc2"}
    assert load(report_run).path == run.path


def test_an_older_run_folder_is_read_in_todays_names(tmp_path: Path, report_run: Path) -> None:
    """A run folder of summary version 1 (events.jsonl, t_s, correction_energy_pj, phase
    'scheduled') loads and reports with today's names, and compares with a run of today."""
    old = tmp_path / "old"
    old.mkdir()
    summary = json.loads((report_run / "summary.json").read_text())
    summary["version"] = 1
    summary["correction_energy_counts"] = summary.pop("upkeep_energy_kinds")
    for v in summary["variants"].values():
        v["correction_energy_pj"] = v.pop("upkeep_energy_pj")
        v["pulses"] = v.pop("correction_pulses")
        v.pop("tile_layers")
    (old / "summary.json").write_text(json.dumps(summary))
    timeline = pd.read_parquet(report_run / "timeline.parquet").rename(
        columns={"scheduled_s": "t_s", "label": "t_label", "upkeep_energy_pj":
                 "correction_energy_pj"})  # fmt: skip
    timeline["phase"] = timeline["phase"].replace({"before_correction": "scheduled"})
    timeline.to_csv(old / "timeline.csv", index=False)
    events = load_run(report_run).events()
    with open(old / "events.jsonl", "w") as f:
        for e in eventlog.event_records(events):
            e["t_s"] = e.pop("end_s")
            f.write(json.dumps(e) + "\n")
    run = load_run(old)
    assert run.summary["variants"]["threshold"]["upkeep_energy_pj"] > 0
    assert "correction_pulses" in run.summary["variants"]["threshold"]
    assert set(run.timeline["phase"]) == {col.BEFORE_CORRECTION, col.AFTER_CORRECTION}
    assert "end_s" in run.events(["kind", "end_s"]).columns
    path, _ = write_report(old)
    assert "threshold" in path.read_text()
    both, _ = write_comparison([old, report_run], tmp_path / "old_vs_new.html")  # two versions
    assert "old · threshold" in both.read_text() and "report_demo · threshold" in both.read_text()


def test_wakeups_are_the_ledger_events_close_in_time() -> None:
    """Probes and jobs less than a second apart are one wake-up; its jobs and devices are
    counted; wake-ups are averaged per time bin."""
    ev = pd.DataFrame({
        "seed": [0, 0, 0, 0, 1],
        "kind": ["probe", "correction", "correction", "probe", "probe"],
        "start_s": [3600.0, 3600.001, 3600.002, 7200.0, 3600.0],
        "devices": [10, 4, 6, 10, 10],
    })  # fmt: skip
    w = agg.wakeups(ev)
    assert w["t_s"].tolist() == [3600.0, 7200.0, 3600.0]
    assert w["jobs"].tolist() == [2, 0, 0] and w["devices"].tolist() == [10, 0, 0]
    binned = agg.per_wakeup_binned(w, agg.log_grid(1.0, 1e4, 5))
    assert binned["wakeups"].sum() == 3
    assert np.isclose((binned["devices"] * binned["wakeups"]).sum(), 10)


def test_energy_downtime_and_drift_come_from_the_events() -> None:
    """Cumulative energy by kind is the mean over seeds at each time; downtime sums busy
    time per tile; drift is averaged per tile."""
    ev = pd.DataFrame({
        "seed": [0, 1, 0, 1],
        "kind": ["probe", "probe", "correction", "inference"],
        "tile": [0, 0, 1, -1],
        "start_s": [10.0, 10.0, 20.0, 30.0],
        "end_s": [11.0, 12.0, 25.0, 31.0],
        "energy_pj": [2.0, 4.0, 10.0, 1.0],
        "controller_energy_pj": [1.0, 1.0, 0.0, 0.0],
        "detail.drift_metric": [0.1, 0.3, np.nan, np.nan],
    })  # fmt: skip
    grid = np.array([5.0, 11.5, 100.0])
    cum = agg.cumulative_by_kind(ev, grid, seeds=2)
    assert cum["probe"].tolist() == [0.0, 1.5, 4.0]  # (2 + 1) / 2, then (3 + 5) / 2
    assert cum["correction"].tolist() == [0.0, 0.0, 5.0]
    assert agg.totals_by_kind(ev, 2) == {"correction": 5.0, "inference": 0.5, "probe": 4.0}
    assert agg.tile_downtime(ev, 2).to_dict() == {0: 1.5, 1: 2.5}
    drift = agg.drift_by_tile(ev, grid)
    assert list(drift) == [0] and drift[0]["drift"].tolist() == [pytest.approx(0.2)]


def test_time_ticks_are_round_times() -> None:
    """Log-spaced evaluation times get ticks at round times, not at 9.65 s or 2.41 h."""
    labels = [label for _, label in time_ticks(9.65, 8676.0)]
    assert labels == ["10s", "1min", "10min", "1h"]
    year = [label for _, label in time_ticks(1.0, 365 * 86400.0)]
    assert year == ["1s", "1min", "1h", "1d", "1w", "1mo", "1y"]


def test_variants_keep_their_style_and_spread() -> None:
    """Each variant gets its own colour and marker (20 colours before one repeats); the
    time spread of coinciding points is symmetric and small."""
    styles = variant_styles([f"v{i}" for i in range(20)])
    assert len({s.colour for s in styles.values()}) == 20
    assert len({(s.colour, s.marker) for s in styles.values()}) == 20
    f = dodge_factors(8)
    assert np.isclose(np.prod(f), 1.0) and max(f) / min(f) < 10**0.4


def test_report_page_is_one_offline_file(report_run: Path) -> None:
    """report.html inlines plotly.js, loads nothing from the network, and holds each
    variant, the scenario and every plot."""
    html = (report_run / "report.html").read_text()
    assert get_plotlyjs() in html
    page = html.replace(get_plotlyjs(), "")  # (the bundle names map tile servers it never uses)
    assert not re.search(r"<script[^>]+src=", page) and not re.search(r"<link[^>]+href=", page)
    assert "http://" not in page and "https://" not in page
    for needle in ("gdc", "threshold", "fig-accuracy", "fig-energy", "fig-wakeups", "fig-drift",
                   "fig-availability", "fig-accuracy-energy", "fc1", "report_demo"):  # fmt: skip
        assert needle in html, needle


def test_report_and_compare_on_the_command_line(tmp_path: Path, report_run: Path) -> None:
    """`pcm-twin report` rewrites a run's report; `pcm-twin compare` overlays two runs; a
    folder that is not a run is refused with exit 1."""
    runner = CliRunner()
    out = tmp_path / "again.html"
    res = runner.invoke(app, ["report", str(report_run), "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert out.stat().st_size > 1_000_000
    cmp = tmp_path / "compare.html"
    res = runner.invoke(app, ["compare", str(report_run), str(report_run), "--out", str(cmp)])
    assert res.exit_code == 0, res.output
    assert "report_demo · threshold" in cmp.read_text()
    res = runner.invoke(app, ["report", str(tmp_path)])
    assert res.exit_code == 1 and "not a run folder" in res.output


def test_comparison_names_runs_apart(tmp_path: Path, report_run: Path) -> None:
    """Two runs of the same folder name are told apart by their parent folders."""
    path, timings = write_comparison([report_run, report_run], tmp_path / "c.html")
    assert path.is_file() and timings.bytes == path.stat().st_size


def test_the_notebook_example_runs(report_run: Path) -> None:
    """docs/examples/run_frames.py (the loading API's example) runs on a run folder and
    prints each variant, the accuracy table and the drift per tile and layer."""
    done = subprocess.run([sys.executable, str(REPO / "docs" / "examples" / "run_frames.py"),
                           str(report_run)], capture_output=True, text=True, timeout=120,
                          cwd=REPO)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "report_demo: 2 variant(s): gdc, threshold" in done.stdout
    assert "after_correction" in done.stdout and "tile 0 (fc1)" in done.stdout


def test_a_sweep_gets_a_page_linking_its_runs(report_sweep: Path, tmp_path: Path) -> None:
    """A sweep writes report.html with the front and a table whose points link to their
    runs' pages (each run wrote its own); `pcm-twin report` on the sweep folder writes it
    again, and the runs' pages where missing."""
    html = (report_sweep / "report.html").read_text()
    for point in ("threshold=0.05", "threshold=0.2"):
        assert (report_sweep / "runs" / point / "report.html").is_file()
        assert f'href="runs/{point}/report.html"' in html
    assert "fig-front" in html and "plotly_click" in html
    (report_sweep / "runs" / "threshold=0.2" / "report.html").unlink()
    out = tmp_path / "sweep.html"
    res = CliRunner().invoke(app, ["report", str(report_sweep), "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert (report_sweep / "runs" / "threshold=0.2" / "report.html").is_file()
    sweep = load(report_sweep)
    assert sorted(sweep.table["run"]) == ["threshold=0.05", "threshold=0.2"]
    assert sweep.run("threshold=0.05").variants == ["base"]
