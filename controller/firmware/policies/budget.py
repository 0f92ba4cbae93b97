"""The ``budget`` policy: ``threshold`` checks whose corrections are limited to an energy budget
per rolling 24 h, worst devices first (one of the built-in policies listed in
:mod:`controller.firmware.policies.builtin`)."""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from typing import Any

import numpy as np

from controller.firmware.policies.base import (
    NEG,
    POS,
    ChipView,
    CorrectionJob,
    JobOutcome,
    MonitorReport,
)
from controller.firmware.policies.builtin import ThresholdPolicy
from controller.firmware.policies.params import DAY_S, BudgetParams
from controller.firmware.policies.rewrites import group_size


class BudgetPolicy(ThresholdPolicy):
    """``threshold`` checks with at most ``budget_pj_per_day`` of correction energy per 24 h.

    Candidates are ranked by distance from their level, worst first, and taken while the
    estimated cost (the mean energy per corrected device of the jobs so far, ``initial_pj``
    per device before the first job) fits in what is left of the rolling 24 h budget.
    """

    name = "budget"
    Params = BudgetParams

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        p: Any = self.params
        self.budget_pj_per_day = p.budget_pj_per_day
        self.pj_per_device = p.initial_pj_per_device
        self._spent: deque[tuple[float, float]] = deque()
        self._energy_pj = 0.0
        self._devices = 0

    def spent_pj(self, now_s: float) -> float:
        """Correction energy of the last 24 h."""
        while self._spent and self._spent[0][0] <= now_s - DAY_S:
            self._spent.popleft()
        return sum(e for _, e in self._spent)

    def decide(self, view: ChipView, report: MonitorReport | None) -> Sequence[CorrectionJob]:
        if report is None:
            return []
        left = self.budget_pj_per_day - self.spent_pj(view.now_s)
        n_afford = int(left // self.pj_per_device) if left > 0 else 0
        if n_afford <= 0:
            return []
        # rank every candidate device of every tile by its distance, keep the n_afford worst
        cands = []
        significance = getattr(view, "significance", (1.0,))
        for job, _ in self.select(view, report):
            if job.target_pos_us is not None or job.target_neg_us is not None:
                continue  # pairs="lsp": retargeted devices are not ranked, see below
            tr = report.pairs[job.pair][job.tile]
            dev = self.deviations(view, report.at_s, tr)
            for a, idx in ((POS, job.pos), (NEG, job.neg)):
                if idx.size:
                    local = np.searchsorted(tr.rows, idx // view.tile_cols)
                    dist = significance[job.pair] * np.abs(dev[a][local, idx % view.tile_cols])
                    n = idx.size
                    cands.append((np.full(n, job.tile), np.full(n, 2 * job.pair + a), idx, dist))
        if not cands:
            return []
        tiles, arrays, idx, dist = (np.concatenate(x) for x in zip(*cands, strict=True))
        order = np.argsort(-dist, kind="stable")
        keep = self._affordable(view, tiles, arrays // 2, idx, order, n_afford)
        jobs = []
        for t, pair in sorted({(int(t), int(a) // 2) for t, a in zip(tiles[keep], arrays[keep],
                                                                    strict=True)}):  # fmt: skip
            sel = keep[(tiles[keep] == t) & (arrays[keep] // 2 == pair)]
            pos = np.sort(idx[sel][arrays[sel] == 2 * pair + POS])
            neg = np.sort(idx[sel][arrays[sel] == 2 * pair + NEG])
            why = f"budget: {sel.size} worst devices within {left:.3g} pJ left today"
            job = CorrectionJob(t, pos=pos, neg=neg, reason=why, pair=pair)
            jobs.append(self.rewritten(view, report, job))
        return jobs

    def _affordable(
        self,
        view: ChipView,
        tiles: np.ndarray,
        pairs: np.ndarray,
        idx: np.ndarray,
        order: np.ndarray,
        n: int,
    ) -> np.ndarray:
        """The candidates (in ``order``, worst first) whose rewrite units (a device, or the
        column or tile of its pair ``rewrite`` takes with it) fit in ``n`` devices in all."""
        if self.rewrite in ("devices", "matched"):
            return order[:n]
        cols = view.tile_cols
        taken: dict[tuple[int, int, int], bool] = {}
        keep, total = [], 0
        for i in order:
            col = int(idx[i] % cols) if self.rewrite == "columns" else -1
            unit = (int(tiles[i]), int(pairs[i]), col)
            if unit not in taken:
                size = group_size(view, unit[0], None if col < 0 else col, unit[1])
                taken[unit] = total + size <= n
                total += size if taken[unit] else 0
            if taken[unit]:
                keep.append(i)
        return np.asarray(keep, np.int64)

    def on_job_done(self, view: ChipView, outcome: JobOutcome) -> None:
        energy = outcome.energy_pj + outcome.controller_energy_pj
        self._spent.append((outcome.end_s, energy))
        self._energy_pj += energy
        self._devices += outcome.job.devices
        if self._devices:
            self.pj_per_device = max(self._energy_pj / self._devices, 1e-3)

    def describe(self) -> dict:
        return super().describe() | {"budget_pj_per_day": self.budget_pj_per_day}
