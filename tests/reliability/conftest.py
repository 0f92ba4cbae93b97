"""Shared pieces of the reliability tests: the fuzz-case tally and its end-of-run report.

Every fuzz example calls ``tally(service, rpc, code)``; at the end of the session the number
of cases per RPC (and the status codes they got) is printed under "fuzz cases per RPC", and
written as JSON to ``$PCM_TWIN_FUZZ_COUNTS`` when that variable names a file.
"""

from __future__ import annotations

import json
import os

from tests.reliability.fuzzing import FUZZ_COUNTS


def pytest_terminal_summary(terminalreporter, exitstatus, config):  # noqa: ARG001
    if not FUZZ_COUNTS:
        return
    tr = terminalreporter
    tr.section("fuzz cases per RPC")
    total = 0
    for rpc in sorted(FUZZ_COUNTS):
        codes = FUZZ_COUNTS[rpc]
        n = sum(codes.values())
        total += n
        detail = ", ".join(f"{c} {k}" for c, k in sorted(codes.items(), key=lambda x: -x[1]))
        tr.write_line(f"{rpc:<34} {n:>5}   ({detail})")
    tr.write_line(f"{'total':<34} {total:>5}")
    path = os.environ.get("PCM_TWIN_FUZZ_COUNTS")
    if path:
        data = {rpc: dict(codes) for rpc, codes in sorted(FUZZ_COUNTS.items())}
        with open(path, "w") as f:
            json.dump(data, f, indent=2)
