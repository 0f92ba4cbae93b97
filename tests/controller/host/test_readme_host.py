"""The README's host-side example runs as written against a twin and a chip host server."""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

from tests.controller.servers import InProcess

README = Path(__file__).resolve().parents[3] / "README.md"


def test_readme_host_example_loads_infers_advances_and_reads_events() -> None:
    """The example (generated stubs only) loads digits_mlp, infers at day 0, 1 and 7 with
    sensible accuracy, and counts the ledger's events up to the status's last one."""
    text = README.read_text()
    section = text[text.index("**From host software**") :]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    assert '"127.0.0.1:50052"' in code
    servers = InProcess()
    try:
        code = code.replace('"127.0.0.1:50052"', repr(servers.host.address))
        ns: dict = {}
        printed = io.StringIO()
        with contextlib.redirect_stdout(printed):
            exec(compile(code, str(README), "exec"), ns)  # noqa: S102 - our own README
    finally:
        servers.close()
    lines = printed.getvalue().splitlines()
    accuracies = [float(m.group(1)) for ln in lines if (m := re.search(r"accuracy (\S+)", ln))]
    assert len(accuracies) == 3 and all(0.7 < a <= 1.0 for a in accuracies), lines
    status, kinds = ns["status"], ns["kinds"]
    assert status.corrections > 0 and status.monitor_wakeups == 28
    assert sum(kinds.values()) == status.last_event_seq
    assert {"program", "probe", "correction", "inference"} <= set(kinds)
    assert kinds["inference"] == 3
