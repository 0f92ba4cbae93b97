"""The paper's experiment end to end: two real server processes (twin and chip host) and a
host client using only the generated stubs (done-means 1 of issue 5)."""

from __future__ import annotations

import pytest

from tests.controller.paper_e2e import TIMES_S, run


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_paper_cnn_one_year_threshold_versus_none(tmp_path):
    """Under hourly `threshold` the year-end accuracy stays near the 1 s accuracy (within a
    few points: one seed, and the read noise of a single instant moves it by as much); without
    correction it falls clearly below."""
    results = run([0], {"threshold": {"interval_s": 3600.0, "threshold": 0.05}, "none": {}},
                  tmp_path)  # fmt: skip
    by = {r["policy"]: {row["time"]: row for row in r["rows"]} for r in results}
    th, none = by["threshold"], by["none"]
    assert list(th) == list(TIMES_S)
    assert all(row["error"] == "" for p in by.values() for row in p.values())
    # the paper's claim, with the margin one seed needs (the README reports the mean of 3)
    assert th["1 year"]["accuracy"] >= th["1 s"]["accuracy"] - 0.03
    assert none["1 year"]["accuracy"] < th["1 year"]["accuracy"] - 0.05
    # corrections happened every hour and cost energy; `none` never pulsed
    assert th["1 year"]["corrections"] >= 3 * 8766 * 0.9
    assert th["1 year"]["correction_energy_pj"] > th["1 month"]["correction_energy_pj"] > 0
    assert none["1 year"]["corrections"] == 0 and none["1 year"]["correction_energy_pj"] == 0
    # right after a correction the chip is at least as good as at the worst point
    assert th["1 year"]["accuracy_after"] >= th["1 year"]["accuracy"] - 0.02
