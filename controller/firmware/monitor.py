"""The drift monitor: wakes on the policy's schedule, probes tiles, computes drift metrics.

At each wake-up the monitor asks the policy for a
:class:`~controller.firmware.policies.base.ProbePlan`, takes the next share of the rows of each
tile that hold weights (round-robin, so a fraction of 0.25 covers every such row once in four
wake-ups; rows without weights are never probed), and probes them with identity inputs: one
twin ``probe`` call per tile (G+ and G- together, ``Array.BOTH``, or one per array a plan asks
for separately), whatever the number of rows, converting only the span of columns that hold
weights. ADC codes times the probe's scale are conductances (uS); the metrics are vectorised
numpy over the whole block:

- per device: the signed distance from its stored level, ``(g - level*q)/g_max``;
- per tile: the paper's drift metric, the mean |y_t - y_0| over the weights in use, with
  y = (G+ - G-)/g_max read now and y_0 its programmed level.

On a chip with several pairs per weight each pair the plan names (default: all) is probed on
the same rows, one reading per tile and pair (``report.pairs``).

Wake-ups are anchored at the time the network was programmed: with an hourly interval they
fall at exactly 1 h, 2 h, ... so that evaluations scheduled at those times meet the chip at
the worst point of the cycle. A wake-up first waits for the work that must see the chip before
the corrections of that instant (``before_probe``: the model's evaluations and host inferences
due then), then probes, then hands the report and its policy to the correction trigger, waits
until the corrections it asked for are done, tells ``on_corrected`` what they did (the model
re-takes drift compensation's reference there when the policy asks), and lets the work that
measures the chip after them run (``after_correction``). The monitor lives as long as the
chip: a new policy restarts it (``start``) and its counters, round-robin cursors and latest
metrics carry on.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Generator
from typing import Any

import numpy as np
import simpy

from controller.firmware.context import ChipContext, OnError
from controller.firmware.firmware import FirmwareView
from controller.firmware.guard import GuardedPolicy
from controller.firmware.policies.base import DIFF, NEG, POS, MonitorReport, ProbePlan, TileReading
from controller.firmware.quantities import PROBE
from controller.firmware.trigger import CorrectionTrigger
from device_twin.chip import Array

#: Work to wait for at an instant (``at_s``): a generator of SimPy events.
AtInstant = Callable[[float], Generator[simpy.Event, Any, None]]


def tile_reading(
    fw: FirmwareView, tile: int, rows: np.ndarray, g_us: dict[int, np.ndarray], pair: int = 0
) -> TileReading:
    """Drift metrics of one probed block of rows of a pair (see the module docstring)."""
    g_max = fw.g_max_us
    used = fw.used[tile, rows]
    target = {a: fw.target_us[tile, 2 * pair + a, rows] for a in (POS, NEG)}
    deviation = {a: (g_us[a] - target[a]) / g_max for a in (POS, NEG) if a in g_us}
    y0 = (target[POS] - target[NEG]) / g_max
    if DIFF in g_us:
        target[DIFF] = target[POS] - target[NEG]
        y = g_us[DIFF] / g_max
    elif POS in g_us and NEG in g_us:
        y = (g_us[POS] - g_us[NEG]) / g_max
    else:
        y = None
    n_used = int(used.sum())
    if n_used == 0:
        metric = 0.0
    elif y is not None:
        metric = float(np.abs(y - y0)[used].mean())
    else:
        (d,) = deviation.values()
        metric = float(np.abs(d)[used].mean())
    max_dist = max(
        (float(np.abs(d)[used].max(initial=0.0)) for d in deviation.values()), default=0.0
    )
    keep = {a: v for a, v in target.items() if a in g_us}
    return TileReading(tile, rows, g_us, keep, used, deviation, metric, max_dist, pair)


def _full_width(codes: np.ndarray, scale_us: float, tile_cols: int, c0: int) -> np.ndarray:
    """Probe codes of a column span -> conductances (uS) on the tile's full width (0 elsewhere)."""
    out = np.zeros((codes.shape[0], tile_cols), np.float32)
    out[:, c0 : c0 + codes.shape[1]] = codes.astype(np.float32) * np.float32(scale_us)
    return out


class DriftMonitor:
    """The monitoring process of a chip (see the module docstring).

    ``trigger`` gets each wake-up's report; ``before_probe(at_s)`` and
    ``after_correction(at_s)`` are waited for around the corrections of a scheduled wake-up,
    ``on_corrected(outcomes)`` after the corrections of any wake-up that corrected something;
    ``on_error`` is told about a failure that stops monitoring."""

    def __init__(
        self,
        ctx: ChipContext,
        trigger: CorrectionTrigger,
        before_probe: AtInstant,
        after_correction: AtInstant,
        on_error: OnError,
        on_corrected: Callable[[list], Generator[simpy.Event, Any, None]] | None = None,
    ) -> None:
        self.ctx = ctx
        self.env = ctx.env
        self.trigger = trigger
        self.before_probe = before_probe
        self.after_correction = after_correction
        self.on_error = on_error
        self.on_corrected = on_corrected
        self.cursor = np.zeros(ctx.view.n_tiles, np.int64)
        self.tile_metrics: dict[int, dict[str, float]] = {}
        self.wakeups = 0
        self.process: simpy.Process | None = None
        #: succeeds when the latest wake-up (probe, corrections, evaluations after them) ends
        self.cycle_done: simpy.Event | None = None
        #: device time of the next scheduled wake-up (or of the one under way); None: the
        #: policy does not wake the monitor
        self.next_wake_s: float | None = None

    def start(self, policy: GuardedPolicy, anchor_s: float) -> simpy.Process:
        """Wake up on ``policy``'s schedule, counted from ``anchor_s`` (stops any earlier
        schedule first)."""
        self.stop()
        self.process = self.env.process(self._run(policy, anchor_s))
        return self.process

    def stop(self) -> None:
        if self.process is not None and self.process.is_alive:
            self.process.interrupt("stop")
        self.process = None
        self.next_wake_s = None

    def _run(self, policy: GuardedPolicy, anchor_s: float) -> Generator[simpy.Event, Any, None]:
        env, view = self.env, self.ctx.view
        wake_s = anchor_s
        try:
            interval = policy.next_wake_s(view)
            while interval is not None:
                wake_s += interval
                if wake_s > env.now:
                    self.next_wake_s = wake_s
                    yield env.timeout(wake_s - env.now)
                else:  # the last cycle overran its interval: wake now, keep the anchor
                    wake_s = self.next_wake_s = env.now
                yield from self.cycle(policy, at_s=env.now, scheduled=True)
                interval = policy.next_wake_s(view)
            self.next_wake_s = None
        except simpy.Interrupt:
            return
        except Exception as exc:
            self.next_wake_s = None
            self.on_error(exc)

    def cycle(
        self,
        policy: GuardedPolicy,
        at_s: float,
        scheduled: bool,
        mode: str = "policy",
        tiles: tuple[int, ...] | None = None,
        on_report: Callable[[MonitorReport], None] | None = None,
    ) -> Generator[simpy.Event, Any, list]:
        """One wake-up: the work due first, then probe, decide, correct, and the
        post-correction work. ``mode="all"`` corrects every device outside the pulse
        tolerance, whatever the policy says (a host-triggered correction). ``on_report`` is
        given the probe's report (what this wake-up read, and its energy)."""
        done = self.cycle_done = self.env.event()
        try:
            return (yield from self._cycle(policy, at_s, scheduled, mode, tiles, on_report))
        finally:
            if not done.triggered:
                done.succeed()

    def _cycle(
        self,
        policy: GuardedPolicy,
        at_s: float,
        scheduled: bool,
        mode: str,
        tiles: tuple[int, ...] | None,
        on_report: Callable[[MonitorReport], None] | None = None,
    ) -> Generator[simpy.Event, Any, list]:
        view = self.ctx.view
        yield from self.before_probe(at_s)
        if mode == "all":
            plan: ProbePlan | None = ProbePlan(tiles=tiles, arrays=(POS, NEG), rows_fraction=1.0)
        else:
            plan = policy.probe_plan(view)
            if plan is not None and tiles is not None:
                plan = ProbePlan(tiles=tiles, arrays=plan.arrays, rows_fraction=plan.rows_fraction,
                                 pairs=plan.pairs)  # fmt: skip
        report = None
        if plan is not None:
            report = yield from self.probe(plan)
            view.last_report = report
            if on_report is not None:
                on_report(report)
        self.wakeups += 1
        outcomes = yield self.trigger.submit(report, policy, mode)
        if outcomes and self.on_corrected is not None:
            yield from self.on_corrected(outcomes)
        if outcomes and scheduled:
            yield from self.after_correction(at_s)
        return outcomes

    def _next_rows(self, tile: int, fraction: float) -> np.ndarray:
        """The next share of the tile's rows that hold weights (round-robin), sorted."""
        in_use = self.ctx.view.rows_in_use.get(tile)
        if in_use is None or in_use.size == 0:
            return np.zeros(0, np.int64)
        n = min(in_use.size, max(1, math.ceil(fraction * in_use.size)))
        c = int(self.cursor[tile])
        rows = in_use[(c + np.arange(n)) % in_use.size].astype(np.int64)
        self.cursor[tile] = (c + n) % in_use.size
        rows.sort()
        return rows

    def probe(self, plan: ProbePlan) -> Generator[simpy.Event, Any, MonitorReport]:
        ctx, env = self.ctx, self.env
        fw, twin, chip = ctx.view, ctx.twin, ctx.chip_id
        fraction = ctx.config.rows_fraction if plan.rows_fraction is None else plan.rows_fraction
        pairs = tuple(range(fw.pairs_per_weight)) if plan.pairs is None else tuple(plan.pairs)
        report = MonitorReport(at_s=env.now, tiles={}, pairs={k: {} for k in pairs})
        if 0 in report.pairs:
            report.tiles = report.pairs[0]
        tiles = fw.tiles if plan.tiles is None else tuple(int(t) for t in plan.tiles)
        for t in tiles:
            rows = self._next_rows(t, fraction)  # the same rows of every pair
            if rows.size == 0:
                continue
            with ctx.locks.hold(t, PROBE) as lk:
                yield lk
                start = env.now
                ops = ctx.ledger.action()
                c0, nc = fw.col_span[t]
                readings = []
                for k in pairs:
                    extra = {"pair": k} if k else {}
                    g: dict[int, np.ndarray] = {}
                    arrays = [int(a) for a in plan.arrays]
                    if POS in arrays and NEG in arrays:  # both arrays in one call
                        r = ops.add(twin.probe(chip, t, rows, Array.BOTH, env.now, c0, nc, **extra))
                        g[POS] = _full_width(r.values[0], r.scale_us, fw.tile_cols, c0)
                        g[NEG] = _full_width(r.values[1], r.scale_us, fw.tile_cols, c0)
                        arrays = [a for a in arrays if a not in (POS, NEG)]
                        yield env.timeout(r.latency_s)
                    for a in arrays:
                        r = ops.add(twin.probe(chip, t, rows, a, env.now, c0, nc, **extra))
                        g[a] = _full_width(r.values, r.scale_us, fw.tile_cols, c0)
                        yield env.timeout(r.latency_s)
                    report.pairs[k][t] = tile_reading(fw, t, rows, g, k)
                    readings.append(report.pairs[k][t])
                tr = readings[0]  # the least significant pair probed (pair 0 if it was)
                devices = rows.size * nc * len(plan.arrays) * len(pairs)
                ctrl = ctx.config.digital_energy.check_pj(devices)
                report.energy_pj += ops.energy_pj + ctrl
                self.tile_metrics[t] = {
                    "at_s": start,
                    "drift_metric": tr.drift_metric,
                    "max_distance": tr.max_distance,
                    "rows": int(rows.size),
                }
                detail = {
                    "rows": int(rows.size),
                    "drift_metric": tr.drift_metric,
                    "max_distance": tr.max_distance,
                }
                if fw.pairs_per_weight > 1:
                    detail["pairs"] = list(pairs)
                ctx.ledger.add(PROBE, start, env.now, tile=t, devices=devices, ops=ops,
                               controller_energy_pj=ctrl, detail=detail)  # fmt: skip
        return report
