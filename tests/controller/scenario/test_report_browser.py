"""The report in a real browser (headless Chromium): it opens offline, draws every plot, and
logs no error; a screenshot of it is kept with the test's output."""

from __future__ import annotations

from pathlib import Path

from tests.browser import PLOTS_JS, browser  # noqa: F401 (the fixture)

REPORT_PLOTS = {"fig-accuracy", "fig-accuracy-energy", "fig-energy", "fig-energy-year",
                "fig-wakeups", "fig-availability", "fig-drift"}  # fmt: skip


def test_the_report_renders_in_chromium(browser, report_run: Path, tmp_path: Path) -> None:  # noqa: F811
    """report.html, opened from disk, draws each of its plots with data (traces and marks
    on the page) and the browser's console has no error; its menus switch the variant."""
    browser.open((report_run / "report.html").as_uri())
    plots = browser.wait_for(lambda: browser.run(PLOTS_JS) if len(browser.run(PLOTS_JS)) >= 7
                             else None, what="seven plotly graphs")  # fmt: skip
    assert {p["id"] for p in plots} == REPORT_PLOTS
    for p in plots:
        assert p["traces"] > 0 and p["drawn"] > 0 and p["width"] > 300 and p["height"] > 300, p
    rows = browser.run("return document.querySelectorAll('table.summary tbody tr').length")
    assert rows == 2
    # the energy plot's menu shows one variant at a time: choose the second one
    title = browser.run("""
        var el = document.getElementById('fig-energy');
        var button = el.layout.updatemenus[0].buttons[1];
        return Plotly.update(el, button.args[0], button.args[1]).then(function () {
            return el.layout.title.text; });""")
    assert title.endswith(": threshold")
    kinds = browser.run("""
        return document.getElementById('fig-energy').data
            .filter(function (t) { return t.visible === true; })
            .map(function (t) { return t.name; });""")
    assert {"probe", "correction", "program"} <= set(kinds)
    errors = browser.console_errors()
    assert errors == []
    browser.screenshot(tmp_path / "report.png")
