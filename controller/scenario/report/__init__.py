"""Results people look at: a run's report page, comparisons of runs, and run folders as pandas.

- :func:`load_run`, :func:`load_sweep`, :func:`load`: a run or sweep folder as pandas frames
  (:mod:`~controller.scenario.report.data`; the API for notebooks);
- :func:`write_report`: ``report.html`` of a run folder (``pcm-twin report RUN_DIR``, and at
  the end of every ``pcm-twin run``); :func:`write_sweep_report`: a sweep folder's;
  :func:`write_comparison`: one page for several runs (``pcm-twin compare``). Each page is
  one self-contained HTML file: plotly.js is inlined, it opens offline.

Inside: :mod:`~controller.scenario.report.columns` (the names read from run folders, and
their older names), :mod:`~controller.scenario.report.aggregate` (events to curves in bulk),
:mod:`~controller.scenario.report.study` (what one page shows), ``figures`` (plotly) and
``page`` (the HTML).
"""

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from controller.scenario.report.data import (
    NotARunFolder,
    RunData,
    SweepData,
    is_sweep,
    load,
    load_run,
    load_sweep,
)

__all__ = [
    "NotARunFolder",
    "RunData",
    "SweepData",
    "is_sweep",
    "load",
    "load_run",
    "load_sweep",
    "write_comparison",
    "write_or_warn",
    "write_report",
    "write_sweep_report",
]


def write_report(run_dir: str | Path, out: str | Path | None = None) -> tuple[Path, Any]:
    """See :func:`controller.scenario.report.page.write_report` (imported when used: plotly
    and jinja2 load only for pages)."""
    from controller.scenario.report.page import write_report as write

    return write(run_dir, out)


def write_comparison(run_dirs: Sequence[str | Path], out: str | Path) -> tuple[Path, Any]:
    """See :func:`controller.scenario.report.page.write_comparison`."""
    from controller.scenario.report.page import write_comparison as write

    return write(run_dirs, out)


def write_sweep_report(sweep_dir: str | Path, out: str | Path | None = None) -> tuple[Path, Any]:
    """See :func:`controller.scenario.report.page.write_sweep_report`."""
    from controller.scenario.report.page import write_sweep_report as write

    return write(sweep_dir, out)


def write_or_warn(folder: str | Path) -> Path | None:
    """``report.html`` of a run or sweep folder that was just written (``pcm-twin run`` and
    ``sweep`` call it): its results are on disk already, so a report that fails is logged as
    a warning, not raised (``pcm-twin report FOLDER`` writes it again)."""
    try:
        write = write_sweep_report if is_sweep(folder) else write_report
        return write(folder)[0]
    except Exception as exc:
        logging.getLogger(__name__).warning(
            "%s: the report could not be written: %s: %s", folder, type(exc).__name__, exc
        )
        return None
