"""The architecture holds: the import-linter contracts (.importlinter) and no import cycles."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import grimp

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("controller", "device_twin", "pcmtwin")

#: Cycles that their owners are removing right now; each entry names who and how.
KNOWN_CYCLES: dict[frozenset[str], str] = {
    # pulse_curve (a table of the pulse model's response, for the README and `pcm-twin
    # pulse-curve`) builds a Chip inside pulses.py, which chip.py imports: engineer `core`
    # (device families, issue 12/DESIGN §10) moves it out of pulses.py.
    frozenset({"device_twin.chip", "device_twin.pulses"}): "core",
}


def test_the_import_contracts_are_kept():
    """lint-imports finds every contract of .importlinter kept (layers, core, firmware)."""
    lint_imports = Path(sys.executable).with_name("lint-imports")
    done = subprocess.run(
        [str(lint_imports), "--no-logo", "--no-cache"], cwd=REPO, capture_output=True,
        text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert "0 broken" in done.stdout


def run_time_cycles(graph: grimp.ImportGraph) -> set[frozenset[str]]:
    """Groups of our modules that import each other at run time (imports under
    ``TYPE_CHECKING`` excluded), directly or through other modules."""
    ours = {m for m in graph.modules if m.split(".")[0] in PACKAGES}
    cycles = set()
    for m in ours:
        # the modules m depends on that also depend on m: m's strongly connected component
        both = graph.find_upstream_modules(m) & graph.find_downstream_modules(m)
        if both:
            cycles.add(frozenset({m} | (both & ours)))
    return cycles


def test_no_import_cycles_between_modules_at_run_time():
    """No module imports, directly or not, a module that imports it back (known ones excepted,
    and a known one that is gone must leave the list)."""
    graph = grimp.build_graph(*PACKAGES, cache_dir=None, exclude_type_checking_imports=True)
    cycles = run_time_cycles(graph)
    assert cycles - set(KNOWN_CYCLES) == set()
    assert set(KNOWN_CYCLES) - cycles == set(), "a known cycle is gone: delete its entry"


def test_the_cycle_finder_finds_a_cycle():
    """run_time_cycles reports a cycle through three modules and nothing for a chain."""
    graph = grimp.ImportGraph()
    for a, b in (("pcmtwin.a", "pcmtwin.b"), ("pcmtwin.b", "pcmtwin.c"), ("pcmtwin.c", "pcmtwin.a"),
                 ("pcmtwin.c", "pcmtwin.d")):  # fmt: skip
        graph.add_import(importer=a, imported=b)
    assert run_time_cycles(graph) == {frozenset({"pcmtwin.a", "pcmtwin.b", "pcmtwin.c"})}
