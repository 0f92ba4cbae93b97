"""The live view in a real browser (headless Chromium): it logs in with the token, follows a
chip as time advances, draws its plots, and logs no error; a screenshot is kept with the
test's output."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from pcmtwin.v1 import host_pb2
from tests.browser import browser  # noqa: F401 (the fixture)
from tests.controller.host.test_dashboard import TOKEN, live  # noqa: F401 (the fixture)
from tests.controller.host.test_host_service import HOUR, _load

PLOT_POINTS_JS = """
return ['drift-now', 'energy', 'drift-time'].map(function (id) {
  var el = document.getElementById(id);
  var n = 0;
  (el.data || []).forEach(function (t) { n += (t.y || []).length; });
  return {id: id, traces: (el.data || []).length, points: n,
          marks: el.querySelectorAll('.point, .bars path, .scatterlayer path').length};
});
"""


def test_the_live_view_follows_the_chip_in_chromium(browser, live, tmp_path: Path) -> None:  # noqa: F811
    """Opened with /?token=, the page goes live, and while device time advances it shows
    the status, drift per tile and layer (now and over time), energy by kind and the
    ledger's events, with no console error."""
    _load(live.stub, "threshold", {"interval_s": HOUR})
    port = live.host.dashboard.port
    browser.open(f"http://127.0.0.1:{port}/?token={TOKEN}")
    browser.wait_for(
        lambda: browser.run("return document.getElementById('connection').textContent") == "live",
        what="live",
    )

    def advance() -> None:  # hour by hour, so that the page sees the chip move
        for hour in range(1, 7):
            live.stub.AdvanceTime(host_pb2.AdvanceTimeRequest(to_s=hour * HOUR + 5))
            time.sleep(0.3)

    mover = threading.Thread(target=advance, daemon=True)
    mover.start()
    mover.join(timeout=120)
    rows = browser.wait_for(
        lambda: browser.run("return document.querySelectorAll('#events tbody tr').length") >= 20,
        what="events",
    )
    assert rows
    kinds = set(
        browser.run(
            "return Array.from(document.querySelectorAll('#events tbody tr "
            "td:nth-child(3)')).map(function (td) { return td.textContent; })"
        )
    )
    assert {"probe", "correction"} <= kinds

    def drawn() -> list | None:
        plots = browser.run(PLOT_POINTS_JS)
        return plots if all(p["points"] >= 2 for p in plots) else None

    plots = browser.wait_for(drawn, what="points in every plot")
    drift_time = next(p for p in plots if p["id"] == "drift-time")
    assert drift_time["traces"] == 2 and drift_time["points"] >= 2 * 6  # two tiles, hourly
    assert all(p["marks"] > 0 for p in plots), plots
    names = browser.run(
        "return document.getElementById('drift-time').data.map(function (t) { return t.name; })"
    )
    assert sorted(names) == ["tile 0 · 0", "tile 1 · 2"]
    browser.wait_for(
        lambda: browser.run("return document.getElementById('sim-time').textContent") == "6 h",
        what="6 h",
    )
    assert browser.console_errors() == []
    browser.screenshot(tmp_path / "dashboard.png")
