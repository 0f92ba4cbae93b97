"""Every call into a policy goes through here: exceptions and nonsense become ``PolicyError``.

A policy is user code. The controller never acts on what a policy returns before checking it:
the types, the tiles (they must hold the network), the device indices (in range, distinct),
the numbers (finite, positive where they must be). The error names the policy, the method and
what it returned, so that a firmware author sees at once what went wrong.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from numbers import Real
from typing import Any

import numpy as np

from controller.firmware.errors import PolicyError
from controller.firmware.policies.base import (
    COMPENSATIONS,
    DIFF,
    NEG,
    POS,
    ChipView,
    CorrectionJob,
    JobOutcome,
    MonitorReport,
    Policy,
    ProbePlan,
    PulseScheme,
)


class GuardedPolicy:
    """Wraps a policy; same methods, checked answers (see the module docstring)."""

    def __init__(self, policy: Policy) -> None:
        self.policy = policy
        self.name = str(getattr(policy, "name", type(policy).__name__))

    @property
    def compensation(self) -> str | None:
        comp = getattr(self.policy, "compensation", None)
        if comp is not None and comp not in COMPENSATIONS:
            expected = f"None or one of {', '.join(COMPENSATIONS)}"
            raise PolicyError(self.name, "compensation", expected, comp)
        return comp

    def describe(self) -> dict[str, Any]:
        describe = getattr(self.policy, "describe", None)
        if callable(describe):
            try:
                return dict(describe())
            except Exception:  # describing is cosmetic: never stop a run for it
                pass
        return {"name": self.name}

    def _call(self, method: str, *args: Any) -> Any:
        fn = getattr(self.policy, method, None)
        if fn is None:
            return None
        try:
            return fn(*args)
        except PolicyError:
            raise
        except Exception as exc:
            raise PolicyError(
                self.name, method, f"raised {type(exc).__name__}: {exc}", returned=False
            ) from exc

    # --- the protocol, checked ------------------------------------------------------------
    def start(self, view: ChipView) -> None:
        self._call("start", view)

    def next_wake_s(self, view: ChipView) -> float | None:
        v = self._call("next_wake_s", view)
        if v is None:
            return None
        if isinstance(v, bool) or not isinstance(v, Real) or not math.isfinite(float(v)):
            raise PolicyError(self.name, "next_wake_s", "expected seconds > 0 or None", v)
        if float(v) <= 0:
            raise PolicyError(self.name, "next_wake_s", "the interval must be > 0 seconds", v)
        return float(v)

    def probe_plan(self, view: ChipView) -> ProbePlan | None:
        plan = self._call("probe_plan", view)
        if plan is None:
            return None
        if not isinstance(plan, ProbePlan):
            raise PolicyError(self.name, "probe_plan", "expected a ProbePlan or None", plan)
        if plan.tiles is not None:
            for t in plan.tiles:
                self._check_tile("probe_plan", t, view, plan)
        arrays = tuple(plan.arrays)
        if (
            not arrays
            or any(a not in (POS, NEG, DIFF) for a in arrays)
            or (len(set(arrays)) != len(arrays))
        ):
            raise PolicyError(
                self.name, "probe_plan", "arrays must be distinct values of POS, NEG, DIFF", plan
            )
        if plan.pairs is not None:
            pairs = tuple(plan.pairs)
            if not pairs or len(set(pairs)) != len(pairs):
                raise PolicyError(self.name, "probe_plan", "pairs must be distinct", plan)
            for k in pairs:
                self._check_pair("probe_plan", k, view, plan)
        f = plan.rows_fraction
        if f is not None and (
            isinstance(f, bool) or not isinstance(f, Real) or not 0 < float(f) <= 1
        ):
            raise PolicyError(self.name, "probe_plan", "rows_fraction must be in (0, 1]", plan)
        return plan

    def decide(self, view: ChipView, report: MonitorReport | None) -> list[CorrectionJob]:
        jobs = self._call("decide", view, report)
        if jobs is None:
            return []
        if isinstance(jobs, CorrectionJob | str | bytes) or not isinstance(jobs, Sequence):
            raise PolicyError(self.name, "decide", "expected a list of CorrectionJob", jobs)
        out = []
        n = view.tile_rows * view.tile_cols
        for job in jobs:
            if not isinstance(job, CorrectionJob):
                raise PolicyError(self.name, "decide", "expected a list of CorrectionJob", jobs)
            self._check_tile("decide", job.tile, view, job)
            self._check_pair("decide", job.pair, view, job)
            pos = self._check_devices(job, job.pos, "pos", n)
            neg = self._check_devices(job, job.neg, "neg", n)
            tp = self._check_targets(job, job.target_pos_us, pos, "target_pos_us", view)
            tn = self._check_targets(job, job.target_neg_us, neg, "target_neg_us", view)
            if pos.size + neg.size:
                out.append(CorrectionJob(int(job.tile), pos, neg, str(job.reason), tp, tn,
                                         int(job.pair)))  # fmt: skip
        return out

    def pulse_scheme(self, view: ChipView, job: CorrectionJob) -> PulseScheme:
        s = self._call("pulse_scheme", view, job)
        if s is None:
            return PulseScheme()
        if not isinstance(s, PulseScheme):
            raise PolicyError(self.name, "pulse_scheme", "expected a PulseScheme", s)
        ok = (
            s.method in ("auto", "pulse", "program")
            and s.loop in ("twin", "steps")
            and _finite_pos(s.tolerance)
            and _finite_pos(s.gain)
            and all(
                isinstance(v, int) and not isinstance(v, bool) and v >= 1
                for v in (s.max_iterations, s.max_pulses, s.max_pulses_per_step, s.verify_reads)
            )
            and isinstance(s.max_reprograms, int)
            and s.max_reprograms >= 0
        )
        if not ok:
            raise PolicyError(
                self.name,
                "pulse_scheme",
                "method must be auto/pulse/program; loop twin/steps; tolerance and gain > 0; "
                "max_iterations, max_pulses, max_pulses_per_step, verify_reads >= 1; "
                "max_reprograms >= 0",
                s,
            )
        return s

    def on_job_done(self, view: ChipView, outcome: JobOutcome) -> None:
        self._call("on_job_done", view, outcome)

    # --- checks -----------------------------------------------------------------------------
    def _check_pair(self, method: str, pair: Any, view: ChipView, value: Any) -> None:
        n = getattr(view, "pairs_per_weight", 1)
        if isinstance(pair, bool) or not isinstance(pair, int | np.integer) or not 0 <= pair < n:
            raise PolicyError(
                self.name, method, f"pair {pair!r}: the chip has pairs 0..{n - 1} per weight",
                value,
            )  # fmt: skip

    def _check_tile(self, method: str, tile: Any, view: ChipView, value: Any) -> None:
        if isinstance(tile, bool) or not isinstance(tile, int | np.integer):
            raise PolicyError(self.name, method, f"tile {tile!r} is not an integer", value)
        if int(tile) not in view.tiles:
            raise PolicyError(
                self.name,
                method,
                f"unknown tile {int(tile)}: the network is on tiles {list(view.tiles)}",
                value,
            )

    def _check_devices(self, job: CorrectionJob, idx: Any, name: str, n: int) -> np.ndarray:
        a = np.asarray(idx)
        if a.size == 0:
            return np.zeros(0, np.int64)
        if a.ndim != 1 or a.dtype.kind not in "iu":
            raise PolicyError(
                self.name, "decide", f"{name} must be a 1-D array of integer device indices", job
            )
        if a.min() < 0 or a.max() >= n:
            raise PolicyError(self.name, "decide", f"{name} out of range 0..{n - 1}", job)
        a = a.astype(np.int64)
        # policies mostly hand sorted indices (np.flatnonzero): an O(n) check, sort otherwise
        if a.size > 1 and not np.all(a[1:] > a[:-1]):
            s = np.sort(a)
            if np.any(s[1:] == s[:-1]):
                raise PolicyError(self.name, "decide", f"{name} contains duplicates", job)
        return a

    def _check_targets(
        self, job: CorrectionJob, tgt: Any, idx: np.ndarray, name: str, view: ChipView
    ) -> np.ndarray | None:
        if tgt is None:
            return None
        t = np.asarray(tgt, dtype=np.float64)
        if (
            t.shape != idx.shape
            or not np.all(np.isfinite(t))
            or (t.size and (t.min() < 0 or t.max() > view.g_max_us))
        ):
            raise PolicyError(
                self.name,
                "decide",
                f"{name} must hold one finite target per device in [0, {view.g_max_us}] uS",
                job,
            )
        return t.astype(np.float32)


def _finite_pos(v: Any) -> bool:
    return isinstance(v, Real) and not isinstance(v, bool) and math.isfinite(v) and v > 0
