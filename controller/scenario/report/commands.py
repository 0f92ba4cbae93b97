"""What ``pcm-twin report`` and ``pcm-twin compare`` do (``controller/cli.py`` only parses).

Exit codes: 0 written, 1 a folder that is not a finished run (or sweep).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from rich.console import Console

from controller.scenario.report.data import NotARunFolder, is_sweep

EXIT_INVALID = 1


def _done(console: Console, path: Path, timings: object) -> None:
    size = getattr(timings, "bytes", 0) / 1e6
    took = getattr(timings, "total_s", 0.0)
    console.print(f"wrote {path} ({size:.1f} MB, {took:.1f} s): open it in a browser, no "
                  "network needed", markup=False, soft_wrap=True)  # fmt: skip


def report_command(folder: Path, out: Path | None, console: Console) -> int:
    """``report.html`` of a run folder, or of a sweep folder (then each point's run gets its
    own too, if it has none)."""
    from controller.scenario.report.page import (
        REPORT_FILE,
        write_report,
        write_sweep_report,
    )

    try:
        if is_sweep(folder):
            from controller.scenario.report.data import load_sweep

            sweep = load_sweep(folder)
            for name in sweep.runs:
                run_dir = sweep.run_dir(name)
                if (run_dir / "summary.json").is_file() and not (run_dir / REPORT_FILE).is_file():
                    write_report(run_dir)
            path, timings = write_sweep_report(folder, out)
        else:
            path, timings = write_report(folder, out)
    except NotARunFolder as exc:
        console.print(f"{exc}: give a run folder (pcm-twin run) or a sweep folder "
                      "(pcm-twin sweep)", markup=False, soft_wrap=True)  # fmt: skip
        return EXIT_INVALID
    _done(console, path, timings)
    return 0


def compare_command(folders: Sequence[Path], out: Path, console: Console) -> int:
    """One page with the table and plots of several runs overlaid."""
    from controller.scenario.report.page import write_comparison

    if len(folders) < 2:
        console.print("compare needs at least two run folders", markup=False)
        return EXIT_INVALID
    try:
        path, timings = write_comparison(folders, out)
    except NotARunFolder as exc:
        console.print(str(exc), markup=False, soft_wrap=True)
        return EXIT_INVALID
    _done(console, path, timings)
    return 0
