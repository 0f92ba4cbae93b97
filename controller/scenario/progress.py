"""The progress bars: a run's over simulated time summed over every variant and seed, and a
sweep's over grid points (:class:`PointsBar`).

A seed run reports ``progress(variant, seed index, simulated time now, duration)``
(:data:`ProgressFn`); :class:`ProgressBar` draws those reports as one rich bar, whether the
runs are in this process or in parallel workers (whose reports come through a queue).
"""

from __future__ import annotations

from collections.abc import Callable

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from controller.scenario.durations import format_duration
from controller.scenario.loader import LoadedScenario

#: progress(variant, seed index, simulated time now, duration) — for a progress bar.
ProgressFn = Callable[[str, int, float, float], None]


class ProgressBar:
    """A rich progress bar over simulated time, summed over every variant and seed (runs in
    parallel workers advance it together)."""

    def __init__(self, loaded: LoadedScenario) -> None:
        self.runs = sum(v.core.seeds for v in loaded.variants)
        total = sum(v.core.duration * v.core.seeds for v in loaded.variants)
        self.progress = Progress(
            TextColumn("{task.description}"), BarColumn(), TextColumn("{task.fields[sim]}"),
            TimeElapsedColumn(), TimeRemainingColumn(), refresh_per_second=2,
        )  # fmt: skip
        self.task = self.progress.add_task("simulated time", total=total, sim="")
        self.now: dict[tuple[str, int], float] = {}
        self.finished: set[tuple[str, int]] = set()
        self.progress.start()

    def update(self, variant: str, k: int, now_s: float, end_s: float) -> None:
        now = min(now_s, end_s)
        self.now[(variant, k)] = now
        if now >= end_s:
            self.finished.add((variant, k))
        self.progress.update(
            self.task, completed=sum(self.now.values()),
            description=f"{len(self.finished)}/{self.runs} runs, {variant} seed {k}",
            sim=f"{format_duration(now) if now > 0 else '0s'} / {format_duration(end_s)}",
        )  # fmt: skip

    def close(self) -> None:
        self.progress.stop()


class PointsBar:
    """A sweep's progress: grid points finished (and failed) out of those to run, and each
    failure as it happens, above the bar."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.progress: Progress | None = None
        self.finished = 0
        self.failed = 0

    def start(self, todo: int) -> None:
        if todo == 0:
            return
        self.progress = Progress(
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
            TimeElapsedColumn(), TimeRemainingColumn(), console=self.console,
            refresh_per_second=2,
        )  # fmt: skip
        self.task = self.progress.add_task("grid points", total=todo)
        self.progress.start()

    def done(self, point: str, error: str | None) -> None:
        self.finished += error is None
        self.failed += error is not None
        if self.progress is None:
            return
        if error is not None:
            self.progress.console.print(f"  FAILED {point}: {error}", markup=False,
                                        soft_wrap=True)  # fmt: skip
        failed = f", {self.failed} failed" if self.failed else ""
        self.progress.update(self.task, advance=1, description=f"grid points ({point}{failed})")

    def close(self) -> None:
        if self.progress is not None:
            self.progress.stop()
            self.progress = None
