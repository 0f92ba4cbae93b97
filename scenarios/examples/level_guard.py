"""An example firmware policy: guard the high levels, a quarter of the rows at a time.

Load it by dotted path (from the repository root) or by file::

    load_policy("scenarios.examples.level_guard:LevelGuard", {"min_level": 4})
    load_policy("scenarios/examples/level_guard.py:LevelGuard")

Every ``interval_s`` it probes the next quarter of each tile's rows (round-robin, so every row
is seen every four wake-ups), divides each read by the drift expected for the device's age and
level, and re-programs the devices at level ``min_level`` or above that are still further than
``threshold`` from their level: high levels carry the largest weights, and lose the most
conductance when they drift abnormally. It keeps statistics of its own (``checked``,
``corrected``, ``failed``), as firmware would.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from controller.firmware.policies import (
    NEG,
    POS,
    BasePolicy,
    ChipView,
    CorrectionJob,
    JobOutcome,
    MonitorReport,
    ProbePlan,
    PulseScheme,
    expected_drift_factor,
    flat_indices,
)


class LevelGuard(BasePolicy):
    """Drift-aware checks of high-level devices on a quarter of the rows per wake-up."""

    name = "level_guard"

    def __init__(
        self,
        interval_s: float = 3600.0,
        rows_fraction: float = 0.25,
        min_level: int = 4,
        threshold: float = 0.05,
        tolerance: float = 0.05,
        compensation: str | None = "gdc",
    ) -> None:
        if interval_s <= 0 or not 0 < rows_fraction <= 1 or threshold <= 0 or tolerance <= 0:
            raise ValueError("interval_s, threshold, tolerance > 0 and rows_fraction in (0, 1]")
        self.interval_s = float(interval_s)
        self.rows_fraction = float(rows_fraction)
        self.min_level = int(min_level)
        self.threshold = float(threshold)
        self.scheme = PulseScheme(method="program", tolerance=float(tolerance))
        self.compensation = compensation
        self.checked = 0
        self.corrected = 0
        self.failed = 0

    def next_wake_s(self, view: ChipView) -> float | None:
        return self.interval_s

    def probe_plan(self, view: ChipView) -> ProbePlan | None:
        return ProbePlan(arrays=(POS, NEG), rows_fraction=self.rows_fraction)

    def decide(self, view: ChipView, report: MonitorReport | None) -> Sequence[CorrectionJob]:
        if report is None:
            return []
        jobs = []
        for t, tr in report.tiles.items():
            picked = {}
            for a in (POS, NEG):
                target = tr.target_us[a]
                age = report.at_s - view.last_write_s[t, a, tr.rows]
                expected = expected_drift_factor(age, target, view.g_max_us, view.t0_s)
                deviation = (tr.g_us[a] / expected - target) / view.g_max_us
                if view.level is not None:
                    high = view.level[t, a, tr.rows] >= self.min_level
                else:  # no levels (uniform mapping): the top half of the range
                    high = target >= 0.5 * view.g_max_us
                mask = tr.used & high & (np.abs(deviation) > self.threshold)
                picked[a] = flat_indices(mask, tr.rows, view.tile_cols)
                self.checked += int((tr.used & high).sum())
            if picked[POS].size + picked[NEG].size:
                jobs.append(CorrectionJob(t, pos=picked[POS], neg=picked[NEG], reason=self.name))
        return jobs

    def pulse_scheme(self, view: ChipView, job: CorrectionJob) -> PulseScheme:
        return self.scheme

    def on_job_done(self, view: ChipView, outcome: JobOutcome) -> None:
        self.corrected += outcome.n_converged
        self.failed += outcome.n_failed

    def describe(self) -> dict:
        return {"name": self.name, "min_level": self.min_level, "threshold": self.threshold,
                "rows_fraction": self.rows_fraction, "checked": self.checked,
                "corrected": self.corrected, "failed": self.failed}  # fmt: skip
