"""The open questions' tables, read from real run and sweep folders."""

from __future__ import annotations

import math
from pathlib import Path

from controller.scenario import questions
from controller.scenario.report import load_run
from controller.scenario.stats import over_seeds


def test_fixes_reports_the_accuracy_after_minus_before_each_correction(report_run: Path) -> None:
    """The table has every variant; a correcting one gets the mean of its after - before
    differences, computed here from the timeline, and one without corrections none."""
    text = questions.fixes(str(report_run))
    rows = {r.split("|")[1].strip(): r for r in text.splitlines()[2:]}
    assert set(rows) == {"`gdc`", "`threshold`"}
    tl = load_run(report_run).timeline
    tl = tl[tl["variant"] == "threshold"]
    piv = tl.pivot_table(index=["seed", "scheduled_s"], columns="phase", values="accuracy")
    want = (piv["after_correction"] - piv["before_correction"]).dropna()
    mean = want.groupby(level="scheduled_s").mean().mean()
    assert f"{100 * mean:+.1f}" in rows["`threshold`"]
    assert rows["`gdc`"].split("|")[4].strip() == "-"


def test_q1_weighs_a_years_upkeep_against_the_inference_energy(report_run: Path) -> None:
    """A year's upkeep in inferences, and the inference rate at which it is 1 % of the
    inference energy, follow from the summary and the evaluation events."""
    run = load_run(report_run)
    v = run.summary["variants"]["threshold"]
    e_img = questions._inference_pj(run, "threshold", int(v["test_images"]))
    up = questions.upkeep_per_year(v)
    assert e_img > 0 and up > 0
    assert math.isclose(up, v["upkeep_energy_pj"] * 365 * 86400 / v["duration_s"])
    text = questions.q1(str(report_run), reference="gdc")
    row = next(r for r in text.splitlines() if r.startswith("| `threshold`"))
    cells = [c.strip() for c in row.split("|")[1:-1]]
    assert cells[-2] == f"{up / e_img:.3g}"
    assert cells[-1] == f"{up / (0.01 * e_img * 365 * 86400):.3g}"


def test_the_front_keeps_only_points_nothing_beats() -> None:
    """pareto(): cheapest first, each point more accurate than every cheaper one."""

    def pt(pj: float, acc: float) -> dict:
        return {"upkeep_pj": pj, "acc": over_seeds([acc, acc]), "policy": "p", "params": {}}

    pts = [pt(0, 0.88), pt(10, 0.87), pt(20, 0.90), pt(30, 0.90), pt(40, 0.92)]
    front = questions.pareto(pts)
    assert [(p["upkeep_pj"], p["acc"].mean) for p in front] == [(0, 0.88), (20, 0.90), (40, 0.92)]


def test_q2_reads_every_point_of_a_sweep(report_sweep: Path) -> None:
    """Every point of a sweep folder is read; the cheapest point meeting a target is named."""
    points = questions.sweep_points([str(report_sweep)])
    assert sorted(p["params"]["threshold"] for p in points) == [0.05, 0.2]
    text = questions.q2([str(report_sweep)], targets=(0.0, 1.01))
    assert "none reaches it" in text  # no accuracy above 100 %
    cheapest = min(points, key=lambda p: p["upkeep_pj"])
    assert questions._describe(cheapest) in text


def test_q2_takes_each_variant_of_a_run_folder_as_a_point(report_run: Path) -> None:
    """A run folder (no runs/ inside) gives one point per variant, beside a sweep's points."""
    points = questions.sweep_points([str(report_run)])
    assert sorted(p["variant"] for p in points) == ["gdc", "threshold"]


def test_sawtooth_checks_the_worst_after_minus_before_of_each_correcting_variant(
    report_run: Path,
) -> None:
    """sawtooth(): one row per variant with corrections, its worst time the minimum over times
    of the mean over seeds of after - before; it fails when that falls beyond max_drop."""
    text, ok = questions.sawtooth(str(report_run))
    rows = {r.split("|")[1].strip(): r for r in text.splitlines()[2:]}
    assert set(rows) == {"`threshold`"}
    tl = load_run(report_run).timeline
    tl = tl[tl["variant"] == "threshold"]
    piv = tl.pivot_table(index=["seed", "scheduled_s"], columns="phase", values="accuracy")
    worst = (piv["after_correction"] - piv["before_correction"]).dropna().groupby(
        level="scheduled_s").mean().min()  # fmt: skip
    assert f"{100 * worst:+.2f}" in rows["`threshold`"]
    assert ok == (worst >= -0.01)
    _, strict = questions.sawtooth(str(report_run), max_drop=-worst - 1e-9)
    assert not strict  # a drop beyond the limit fails the check


def test_paper_table_gives_std_and_the_95_interval_beside_each_mean(report_run: Path) -> None:
    """paper(): per variant its seeds, mean ± std (± half-width of the 95 % interval) at each
    time and over the run, as the summary's per-seed values give them."""
    text = questions.paper(str(report_run), times_s=(1.0,))
    row = next(r for r in text.splitlines() if r.startswith("| `threshold`"))
    cells = [c.strip() for c in row.split("|")[1:-1]]
    v = load_run(report_run).summary["variants"]["threshold"]
    est = over_seeds(v["accuracy_time_mean_per_seed"])
    assert cells[1] == str(v["seeds"])
    assert cells[3] == questions.pct_std(est)
    if est.n > 1:
        assert f"± {100 * est.std:.1f} (± {100 * est.half_width:.1f})" in cells[3]
