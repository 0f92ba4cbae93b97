"""The README's controller example runs as written."""

from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).resolve().parents[3] / "README.md"


def test_readme_controller_example_runs_a_day_under_threshold():
    """The example maps digits_mlp, runs a simulated day under hourly threshold, evaluates."""
    text = README.read_text()
    section = text[text.index("## The controller: firmware as a SimPy model") :]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    ns: dict = {}
    exec(compile(code, str(README), "exec"), ns)  # noqa: S102 - our own README
    res = ns["res"]
    rows = [(r["label"], r["phase"]) for r in res.timeline]
    assert ("86400 s", "before_correction") in rows and ("86400 s", "after_correction") in rows
    assert all(0.3 < r["accuracy"] <= 1.0 for r in res.timeline)
    assert res.totals["corrections"] > 0 and res.totals["monitor_wakeups"] == 24
    assert [e.seq for e in res.events] == list(range(1, len(res.events) + 1))
