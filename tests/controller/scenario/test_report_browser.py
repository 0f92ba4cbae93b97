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


def test_a_sweep_page_links_its_points_to_their_runs(browser, report_sweep: Path) -> None:  # noqa: F811
    """The sweep's page draws its front; a click on a point opens that run's page, which
    draws too; no console error on either."""
    browser.open((report_sweep / "report.html").as_uri())
    plots = browser.wait_for(lambda: browser.run(PLOTS_JS), what="the front")
    assert [p["id"] for p in plots] == ["fig-front"] and plots[0]["drawn"] > 0
    browser.run("""
        var el = document.getElementById('fig-front');
        var trace = el.data[0];
        el.emit('plotly_click', {points: [{customdata: trace.customdata[0]}]});""")
    browser.wait_for(lambda: "pcm-twin report: tiny_sweep" in browser.driver.title,
                     what="the run's page")  # fmt: skip
    assert "/runs/threshold=" in browser.driver.current_url
    assert len(browser.wait_for(lambda: browser.run(PLOTS_JS), what="the run's plots")) == 7
    assert browser.console_errors() == []
