"""The correction trigger: turns monitor reports into correction jobs, as the policy says.

The trigger is a process fed with reports through a SimPy store, each report with the policy
that asked for it (the drift monitor's). For each report it asks that policy which jobs to
run (``decide``) and how (``pulse_scheme``), hands them to the pulse generator (with the
monitor's reads of the job's devices standing in for the first read of each
program-and-verify loop, unless ``ControllerConfig.reuse_probe_reads`` is off), and when every
job of that report has finished it tells the policy (``on_job_done``) and answers the monitor
with the list of outcomes.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

import numpy as np
import simpy

from controller.firmware.context import ChipContext
from controller.firmware.guard import GuardedPolicy
from controller.firmware.policies.base import NEG, POS, CorrectionJob, MonitorReport, PulseScheme
from controller.firmware.pulsegen import PulseGenerator


class CorrectionTrigger:
    """Reports in, jobs out to ``pulses`` (see the module docstring)."""

    def __init__(self, ctx: ChipContext, pulses: PulseGenerator) -> None:
        self.ctx = ctx
        self.env = ctx.env
        self.pulses = pulses
        self.inbox: simpy.Store = simpy.Store(ctx.env)
        self.process = ctx.env.process(self._run())

    def submit(
        self, report: MonitorReport | None, policy: GuardedPolicy, mode: str = "policy"
    ) -> simpy.Event:
        """Queue a report; the returned event's value is the list of job outcomes."""
        done = self.env.event()
        self.inbox.put((report, policy, mode, done))
        return done

    def jobs_for_all(self, report: MonitorReport | None) -> list[CorrectionJob]:
        """Every probed device outside the default pulse tolerance (host-triggered)."""
        if report is None:
            return []
        tol = PulseScheme().tolerance
        cols = self.ctx.view.tile_cols
        jobs = []
        for pair, tiles in report.pairs.items():
            for t, tr in tiles.items():
                idx = {}
                for a in (POS, NEG):
                    r, c = np.nonzero((np.abs(tr.deviation[a]) > tol) & tr.used)
                    idx[a] = tr.rows[r] * cols + c
                if idx[POS].size + idx[NEG].size:
                    jobs.append(CorrectionJob(t, idx[POS], idx[NEG], reason="triggered by host",
                                              pair=pair))  # fmt: skip
        return jobs

    def probed_values(
        self, report: MonitorReport | None, job: CorrectionJob
    ) -> dict[int, np.ndarray] | None:
        """The report's reads of the job's devices, per array, where it read all of them."""
        tiles = None if report is None else report.pairs.get(job.pair)
        if tiles is None or job.tile not in tiles:
            return None
        tr = tiles[job.tile]
        cols = self.ctx.view.tile_cols
        where = np.full(self.ctx.view.tile_rows, -1, np.int64)
        where[tr.rows] = np.arange(tr.rows.size)
        out = {}
        for a, idx in ((POS, job.pos), (NEG, job.neg)):
            if idx.size == 0 or a not in tr.g_us:
                continue
            local = where[idx // cols]
            if np.all(local >= 0):
                out[a] = tr.g_us[a][local, idx % cols]
        return out

    def _run(self) -> Generator[simpy.Event, Any, None]:
        view = self.ctx.view
        while True:
            report, policy, mode, done = yield self.inbox.get()
            try:
                if mode == "all":
                    jobs = self.jobs_for_all(report)
                    schemes = [PulseScheme() for _ in jobs]
                else:
                    jobs = policy.decide(view, report)
                    schemes = [policy.pulse_scheme(view, j) for j in jobs]
                reuse = self.ctx.config.reuse_probe_reads
                procs = [
                    self.pulses.submit(
                        j, s, first_read_us=self.probed_values(report, j) if reuse else None
                    )
                    for j, s in zip(jobs, schemes, strict=True)
                ]
                outcomes = []
                for p in procs:
                    outcomes.append((yield p))
                for o in outcomes:
                    policy.on_job_done(view, o)
            except Exception as exc:
                done.fail(exc)
                continue
            done.succeed(outcomes)
