"""The built-in correction policies.

=================== ===========================================================================
``none``            never probes, never corrects, no drift compensation: the raw chip.
``gdc``             never corrects; inference uses global drift compensation (one factor per
                    tile, DESIGN.md §5).
``periodic_refresh`` every ``interval_s`` re-programs every device of the network, no probing.
``threshold``       the paper: probe every ``interval_s`` (hourly), correct every device whose
                    distance from its level exceeds ``threshold`` (0.05 weight units), or with
                    ``scope="tile"`` every device of a tile whose mean |y_t - y_0| exceeds it.
``drift_aware``     like ``threshold``, but each read is first divided by the drift expected
                    for that device's age and level, so that the ordinary, front-loaded drift
                    right after a write does not trigger a rewrite.
``adaptive``        drift-aware checks at an interval that grows with the log of the time since
                    the devices were written (drift slows down as log time).
``budget``          threshold checks, but corrections are limited to an energy budget per day,
                    worst devices first (:mod:`~controller.firmware.policies.budget`).
``column_refresh``  probe every ``interval_s`` (daily); rewrite whole every column whose error,
                    once compensated as inference compensates it (one factor per column),
                    exceeds ``threshold``: what inference sees decides, and no rewrite leaves
                    fresh devices beside drifted ones. It needs no drift model (any device
                    family).
=================== ===========================================================================

On a chip with several pairs per weight (Mackin 2022) the probing policies read every pair
and, with ``pairs="all"`` (the default), bring each pair's devices back to their own targets,
a device of pair k counting f_k = F^k times against the threshold; with ``pairs="lsp"`` they
write the least significant pair only: where a weight's error (all pairs read together)
exceeds the threshold, its LSP devices get new targets that absorb it (``lsp_targets``).
``periodic_refresh`` re-programs every pair.

Each is built from its parameter model (:mod:`controller.firmware.policies.params`: types,
units, defaults, limits and meanings; ``pcm-twin policies`` lists them). Every correction
policy takes ``compensation`` ("per_column" by default, "gdc" as in the paper's set-up,
"adabs", "gdc_adabs" or none; ``none`` and ``gdc`` take it too), ``recalibrate`` and the pulse
scheme's ``tolerance`` (weight units); those that probe
also ``rewrite`` (what a correction rewrites: whole columns by default, so that compensation
stays valid, :mod:`~controller.firmware.policies.rewrites`), ``method`` and ``rows_fraction``
(share of rows probed per wake-up, round-robin).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np

from controller.firmware.policies.base import (
    NEG,
    POS,
    BasePolicy,
    ChipView,
    CorrectionJob,
    MonitorReport,
    ProbePlan,
    PulseScheme,
    TileReading,
    expected_drift_factor,
    flat_indices,
)
from controller.firmware.policies.lsp import lsp_targets
from controller.firmware.policies.params import (
    AdaptiveParams,
    ColumnRefreshParams,
    DriftAwareParams,
    GDCParams,
    NoneParams,
    PeriodicRefreshParams,
    PolicyParams,
    ThresholdParams,
)
from controller.firmware.policies.rewrites import (
    column_errors,
    column_jobs,
    expand,
    group_decay,
    matched_targets,
)


def _pairs(view: ChipView) -> int:
    return int(getattr(view, "pairs_per_weight", 1))


class _Configured(BasePolicy):
    """A built-in policy built from its parameter model (``Params``): keyword arguments are
    validated by it (a ``pydantic.ValidationError``, a ``ValueError``, names every bad one)."""

    Params: ClassVar[type[PolicyParams]] = NoneParams

    def __init__(self, **params: Any) -> None:
        self.params = self.Params.model_validate(params)
        self.compensation = self.params.compensation  # type: ignore[attr-defined]


class NonePolicy(_Configured):
    """No monitoring, no correction, no compensation."""

    name = "none"
    Params = NoneParams


class GDCPolicy(_Configured):
    """No correction; global drift compensation at inference."""

    name = "gdc"
    Params = GDCParams


class _CorrectingPolicy(_Configured):
    """What the policies that pulse share: a wake-up interval, the pulse scheme, and for those
    that probe, the share of rows probed."""

    Params: ClassVar[type[PolicyParams]] = ThresholdParams

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        p: Any = self.params
        self.interval_s = float(self._interval_s(p))
        self.scheme = PulseScheme(
            method=getattr(p, "method", "program"),
            tolerance=p.tolerance,
            max_iterations=p.max_iterations,
            verify_reads=p.verify_reads,
            loop=p.loop,
        )
        self.rows_fraction = getattr(p, "rows_fraction", None)
        self.recalibrate = bool(getattr(p, "recalibrate", False))

    def _interval_s(self, p: Any) -> float:
        return p.interval_s

    def next_wake_s(self, view: ChipView) -> float | None:
        return self.interval_s

    def probe_plan(self, view: ChipView) -> ProbePlan | None:
        return ProbePlan(arrays=(POS, NEG), rows_fraction=self.rows_fraction)

    def pulse_scheme(self, view: ChipView, job: CorrectionJob) -> PulseScheme:
        return self.scheme

    def describe(self) -> dict:
        return {
            "name": self.name,
            "compensation": self.compensation,
            "interval_s": self.interval_s,
            "tolerance": self.scheme.tolerance,
            "method": self.scheme.method,
            "recalibrate": self.recalibrate,
        }


class PeriodicRefreshPolicy(_CorrectingPolicy):
    """Every ``interval_s`` (default daily), re-program every device of the network."""

    name = "periodic_refresh"
    Params = PeriodicRefreshParams

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        self.scheme = PulseScheme(
            method="program",
            tolerance=self.scheme.tolerance,
            max_iterations=self.scheme.max_iterations,
            verify_reads=self.scheme.verify_reads,
            rewrite_all=True,
            loop=self.scheme.loop,
        )

    def probe_plan(self, view: ChipView) -> ProbePlan | None:
        return None

    def decide(self, view: ChipView, report: MonitorReport | None) -> Sequence[CorrectionJob]:
        jobs = []
        cols = view.tile_cols
        all_rows = np.arange(view.tile_rows)
        for t in view.tiles:
            idx = flat_indices(view.used[t], all_rows, cols)
            for k in range(_pairs(view)):
                jobs.append(CorrectionJob(t, pos=idx, neg=idx, reason="periodic refresh", pair=k))
        return jobs


class ThresholdPolicy(_CorrectingPolicy):
    """Probe every ``interval_s``; correct what lies further than ``threshold`` from its level.

    ``scope="device"``: every device whose |read - level|/g_max exceeds ``threshold``.
    ``scope="tile"``: when a tile's drift metric (mean |y_t - y_0| per weight) exceeds
    ``threshold``, every device of that tile outside the pulse tolerance.
    ``expected_drift=True`` divides each read by the drift expected for the device's age and
    level first (this is ``drift_aware``). ``rewrite`` says what a correction then rewrites
    (:mod:`~controller.firmware.policies.rewrites`).
    """

    name = "threshold"
    Params = ThresholdParams

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        p: Any = self.params
        self.threshold = p.threshold
        self.scope = p.scope
        self.expected_drift = p.expected_drift
        self.pairs = p.pairs
        self.rewrite = p.rewrite
        # rewrite="matched": the factor each device was last written to (times its level),
        # per (tile, array 2*pair + sign, row, col)
        self._scale: np.ndarray | None = None

    def deviations(self, view: ChipView, at_s: float, tr: TileReading) -> dict[int, np.ndarray]:
        """Signed deviation per device of a reading from its level (times the factor a
        ``matched`` rewrite gave it; fractions of g_max), drift-corrected if
        ``expected_drift``."""
        if not self.expected_drift:
            out = {a: tr.deviation[a] for a in (POS, NEG) if a in tr.deviation}
        else:
            out = {}
            for a in (POS, NEG):
                if a not in tr.g_us:
                    continue
                out[a] = (self.expected_read(view, at_s, tr, a) - tr.target_us[a]) / view.g_max_us
        if self._scale is not None:
            for a, d in out.items():
                scale = self._scale[tr.tile, 2 * tr.pair + a, tr.rows]
                out[a] = d - (scale - 1.0) * tr.target_us[a] / view.g_max_us
        return out

    def expected_read(self, view: ChipView, at_s: float, tr: TileReading, a: int) -> np.ndarray:
        """A reading's conductances (uS), divided by the drift expected for each device's age
        and level if ``expected_drift``."""
        if not self.expected_drift:
            return tr.g_us[a]
        target = tr.target_us[a]
        age = at_s - view.last_write_s[tr.tile, 2 * tr.pair + a, tr.rows]
        return tr.g_us[a] / expected_drift_factor(age, target, view.g_max_us, view.t0_s)

    def select(self, view: ChipView, report: MonitorReport) -> list[tuple[CorrectionJob, float]]:
        """Candidate jobs (the devices to correct, before ``rewrite``) with, per job, the worst
        distance (used by ``budget``)."""
        if self.pairs == "lsp" and _pairs(view) > 1:
            return self.select_lsp(view, report)
        jobs = []
        significance = getattr(view, "significance", (1.0,))
        for pair, tiles in report.pairs.items():
            f = significance[pair]
            for t, tr in tiles.items():
                dev = self.deviations(view, report.at_s, tr)
                if not dev:
                    continue
                if self.scope == "tile":
                    if not f * tr.drift_metric > self.threshold:
                        continue
                    limit = self.scheme.tolerance
                else:
                    limit = self.threshold / f
                masks = {a: (np.abs(d) > limit) & tr.used for a, d in dev.items()}
                none = np.zeros_like(tr.used)
                pos = flat_indices(masks.get(POS, none), tr.rows, view.tile_cols)
                neg = flat_indices(masks.get(NEG, none), tr.rows, view.tile_cols)
                if pos.size + neg.size:
                    worst = f * max(float(np.abs(d[masks[a]]).max(initial=0))
                                    for a, d in dev.items())  # fmt: skip
                    why = f"{self.name}: {pos.size + neg.size} devices beyond {limit:g}"
                    if pair:
                        why += f" (pair {pair})"
                    job = CorrectionJob(t, pos=pos, neg=neg, reason=why, pair=pair)
                    jobs.append((job, worst))
        return jobs

    def select_lsp(
        self, view: ChipView, report: MonitorReport
    ) -> list[tuple[CorrectionJob, float]]:
        """``pairs="lsp"``: per tile, the weights whose error (every pair read, raw) exceeds
        the threshold get LSP targets that absorb it (``lsp_targets``)."""
        jobs = []
        for t in report.pairs.get(0, {}):
            readings = [report.pairs.get(k, {}).get(t) for k in range(_pairs(view))]
            if any(r is None or POS not in r.g_us or NEG not in r.g_us for r in readings):
                continue  # the weight's error needs both devices of every pair
            job, worst = lsp_targets(view, readings, self.threshold, self.name)
            if job is not None:
                jobs.append((job, worst))
        return jobs

    def pulse_scheme(self, view: ChipView, job: CorrectionJob) -> PulseScheme:
        # a group rewrite writes every device of the group, those within tolerance too: the
        # group's devices must share their age (then verifies as usual)
        if self.rewrite in ("columns", "tile"):
            return dataclasses.replace(self.scheme, rewrite_all=True)
        return self.scheme

    def rewritten(self, view: ChipView, report: MonitorReport, job: CorrectionJob) -> CorrectionJob:
        """What a job selecting ``job``'s devices rewrites (``rewrite``), with its targets; the
        factors of ``matched`` rewrites are remembered for later checks. A job with its own
        targets (``pairs="lsp"``) is left as it is."""
        if job.target_pos_us is not None or job.target_neg_us is not None:
            return job
        if self.rewrite == "matched":
            tr = report.pairs[job.pair][job.tile]
            decay = group_decay(view, tr, self.compensation == "per_column")
            out, f_pos, f_neg = matched_targets(view, job, decay)
        else:
            out = expand(view, job, self.rewrite)
            f_pos, f_neg = np.ones(out.pos.size), np.ones(out.neg.size)
        if self.rewrite == "matched" or self._scale is not None:
            if self._scale is None:
                shape = (view.n_tiles, 2 * _pairs(view), view.tile_rows, view.tile_cols)
                self._scale = np.ones(shape, np.float32)
            k = 2 * out.pair
            self._scale[out.tile, k + POS].reshape(-1)[out.pos] = f_pos
            self._scale[out.tile, k + NEG].reshape(-1)[out.neg] = f_neg
        return out

    def decide(self, view: ChipView, report: MonitorReport | None) -> Sequence[CorrectionJob]:
        if report is None:
            return []
        return [self.rewritten(view, report, job) for job, _ in self.select(view, report)]

    def describe(self) -> dict:
        return super().describe() | {
            "threshold": self.threshold,
            "scope": self.scope,
            "expected_drift": self.expected_drift,
            "pairs": self.pairs,
            "rewrite": self.rewrite,
        }


class DriftAwarePolicy(ThresholdPolicy):
    """``threshold`` on reads divided by the drift expected for each device's age and level."""

    name = "drift_aware"
    Params = DriftAwareParams


class AdaptivePolicy(ThresholdPolicy):
    """Checks at ``base_interval_s * (1 + growth * ln(1 + age / base_interval_s))``.

    ``age`` is the median time since the network's devices were last written: drift slows as
    log time, so the checks thin out as the devices age, and come back when many devices are
    rewritten (with whole-column rewrites, that is at every check whose device checks find a
    device to correct in most columns: the checks then stay near ``base_interval_s``). Checks
    are drift-aware by default (``expected_drift``); the interval is capped at
    ``max_interval_s``.
    """

    name = "adaptive"
    Params = AdaptiveParams

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        p: Any = self.params
        self.max_interval_s = p.max_interval_s
        self.growth = p.growth

    def _interval_s(self, p: Any) -> float:
        return p.base_interval_s

    def next_wake_s(self, view: ChipView) -> float | None:
        base = self.interval_s
        written = np.stack([view.used[list(view.tiles)]] * (2 * _pairs(view)), axis=1)
        last = view.last_write_s[list(view.tiles)][written]
        age = view.now_s - float(np.median(last)) if last.size else 0.0
        interval = base * (1.0 + self.growth * math.log1p(max(age, 0.0) / base))
        return min(interval, self.max_interval_s)

    def describe(self) -> dict:
        return super().describe() | {"max_interval_s": self.max_interval_s, "growth": self.growth}


class ColumnRefreshPolicy(_CorrectingPolicy):
    """Probe every ``interval_s``; rewrite whole the columns that inference sees wrong.

    Per column of each probed tile, the rms error of its weights once compensated as inference
    will compensate them (:func:`~controller.firmware.policies.rewrites.column_errors`: one
    factor per column with ``compensation: per_column``, per tile with ``gdc``). A column
    beyond ``threshold`` is rewritten whole: every device of it holding a level above 0 uS,
    both arrays (:func:`~controller.firmware.policies.rewrites.column_jobs`), so that its
    devices share their age and its compensation factor stays right for all of them.

    Unlike the device checks of ``threshold`` and ``drift_aware`` it asks how wrong the
    outputs are, not how far each device lies from its level: drift common to a column, which
    compensation undoes, triggers nothing, and devices that drift apart in opposite directions
    are caught as the error they make together. It needs no drift model, so it runs as it is
    on any device family.
    """

    name = "column_refresh"
    Params = ColumnRefreshParams

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        p: Any = self.params
        self.threshold = p.threshold
        self.baseline = p.baseline
        self.scheme = dataclasses.replace(self.scheme, rewrite_all=True)
        # per (pair, tile): each column's error at the first check after its last write (NaN:
        # none yet)
        self._base: dict[tuple[int, int], np.ndarray] = {}

    def drift_errors(self, view: ChipView, tile: tuple[int, int], err: np.ndarray) -> np.ndarray:
        """What a column's error counts as: with ``baseline``, the part drift added since the
        column's last rewrite, sqrt(err^2 - base^2) (the first check after a rewrite sets the
        base: it counts as 0); without, ``err`` itself."""
        if not self.baseline:
            return err
        base = self._base.setdefault(tile, np.full(err.shape, np.nan))
        new = np.isnan(base)
        base[new] = err[new]
        return np.sqrt(np.maximum(err**2 - base**2, 0.0))

    def decide(self, view: ChipView, report: MonitorReport | None) -> Sequence[CorrectionJob]:
        if report is None:
            return []
        per_column = self.compensation != "gdc"
        significance = getattr(view, "significance", (1.0,))
        jobs = []
        for pair, tiles in report.pairs.items():
            for t, tr in tiles.items():
                if POS not in tr.g_us or NEG not in tr.g_us:
                    continue
                err = significance[pair] * column_errors(view, tr, per_column)
                err = self.drift_errors(view, (pair, t), err)
                bad = np.flatnonzero(err > self.threshold)
                if bad.size:
                    why = (f"column_refresh: {bad.size} columns beyond {self.threshold:g} "
                           f"(worst {float(err[bad].max()):.3g})")  # fmt: skip
                    job = column_jobs(view, t, bad, why, pair)
                    if job.devices:
                        jobs.append(job)
                        if self.baseline:
                            self._base[(pair, t)][bad] = np.nan  # measured at the next check
        return jobs

    def describe(self) -> dict:
        return super().describe() | {"threshold": self.threshold, "baseline": self.baseline}
