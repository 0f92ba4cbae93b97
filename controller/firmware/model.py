"""The chip model: the emulated firmware of one chip, as SimPy processes over a twin.

A :class:`ChipModel` ties together the firmware state (:mod:`~controller.firmware.firmware`),
the drift monitor (:mod:`~controller.firmware.monitor`), the correction trigger
(:mod:`~controller.firmware.trigger`), the pulse generator
(:mod:`~controller.firmware.pulsegen`), the inference queue
(:mod:`~controller.firmware.inference`), tile availability (:mod:`~controller.firmware.tiles`)
and the ledger (:mod:`~controller.firmware.ledger`). The SimPy clock
is device time in seconds; every twin call carries ``at_s = env.now``.

How a scenario runner drives a run::

    env = make_environment()                       # or make_environment(realtime=1.0)
    model = ChipModel(env, twin, chip_id, mapped, load_policy("threshold"),
                      evaluator=my_accuracy)        # evaluator(mvm, compensation) -> dict
    model.schedule_evaluations([1, 3600, 86400, 2.6e6, 3.156e7])
    model.start()                                   # program the network now, then monitor
    model.run(until_s=3.156e7, progress=lambda now_s, until_s: ...)
    res = model.results()      # res.timeline (rows), res.events (ledger), res.totals

Order of events at one instant T (documented contract):

1. evaluations scheduled at T, and host inferences that arrived by T, run first: they see
   the chip as it is before any correction scheduled at T (the worst point of the cycle);
2. then the monitor wake-up at T probes and the trigger starts the corrections it decides;
3. when those corrections have finished, every evaluation scheduled at T runs again and is
   recorded with ``phase="after_correction"`` (its ``t_s`` is the time the corrections ended).

An evaluation always waits for tiles under correction (tiles are unavailable meanwhile), so an
evaluation at T that meets a job started before T sees the chip after that job.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Generator, Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import simpy
import simpy.rt
from simpy.core import StopSimulation

from controller.firmware.config import ControllerConfig
from controller.firmware.errors import PolicyError
from controller.firmware.firmware import Firmware, FirmwareView
from controller.firmware.guard import GuardedPolicy
from controller.firmware.inference import ChipFn, InferenceQueue
from controller.firmware.ledger import Event, Ledger, OpAccumulator
from controller.firmware.monitor import DriftMonitor
from controller.firmware.policies.base import JobOutcome, Policy, PulseScheme
from controller.firmware.pulsegen import PulseGenerator
from controller.firmware.tiles import TileLocks
from controller.firmware.trigger import CorrectionTrigger

#: An evaluator measures the chip: gets an MVM function and the compensation (or None,
#: calibrated right after programming: measure it first, as workloads' ``evaluate`` does).
Evaluator = Callable[[Callable[..., np.ndarray], Any], dict[str, float]]
#: Builds a drift compensation object for a mapped network (e.g. "gdc" -> GDC object).
CompensationFactory = Callable[[str, Any], Any]
Progress = Callable[[float, float], None]


def make_environment(
    realtime: float | None = None, initial_time_s: float = 0.0
) -> simpy.Environment:
    """A SimPy environment: as fast as possible, or paced at ``realtime`` simulated seconds
    per wall-clock second (1.0 = real time; 3600 = one simulated hour per second)."""
    if realtime is None:
        return simpy.Environment(initial_time=initial_time_s)
    if not (isinstance(realtime, int | float) and math.isfinite(realtime) and realtime > 0):
        raise ValueError(f"realtime factor must be a number > 0, got {realtime!r}")
    return simpy.rt.RealtimeEnvironment(
        initial_time=initial_time_s, factor=1.0 / realtime, strict=False
    )


@dataclass
class ScheduledEvaluation:
    at_s: float
    label: str
    done: simpy.Event
    rows: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class RunResults:
    """What a run produced: ``timeline`` rows (one per evaluation, flat dicts of scalars),
    ``events`` (the ledger, in order) and ``totals`` (counts and energy so far)."""

    timeline: list[dict[str, Any]]
    events: list[Event]
    totals: dict[str, Any]


def default_compensation_factory(kind: str, mapped: Any) -> Any:
    """Drift compensation of the workloads package: "gdc" is one factor per tile from an
    identity read (``DriftCompensation(mapped, "global", "identity")``, DESIGN.md §5)."""
    from controller.workloads.compensation import DriftCompensation

    if kind == "gdc":
        return DriftCompensation(mapped, "global", "identity")
    raise ValueError(f"unknown drift compensation {kind!r}")


class ChipModel:
    """The emulated firmware of one chip (see the module docstring)."""

    def __init__(
        self,
        env: simpy.Environment,
        twin: Any,
        chip_id: str,
        mapped: Any,
        policy: Policy,
        config: ControllerConfig | None = None,
        evaluator: Evaluator | None = None,
        compensation_factory: CompensationFactory | None = default_compensation_factory,
        chip_config: Any = None,
    ) -> None:
        self.env = env
        self.twin = twin
        self.chip_id = chip_id
        self.mapped = mapped
        self.config = config or ControllerConfig()
        self.chip_config = (
            chip_config if chip_config is not None else twin.chip_info(chip_id).config
        )
        cc = self.chip_config
        self.firmware = Firmware(cc.n_tiles, cc.tile_rows, cc.tile_cols, cc.g_max_us)
        self.firmware.load(mapped)
        self.ledger = Ledger(keep_events=self.config.keep_events)
        self.locks = TileLocks(env)
        self.evaluator = evaluator
        self.compensation_factory = compensation_factory
        self.compensation: Any = None
        self.error: Exception | None = None
        self.corrections = 0
        self.devices_corrected = 0
        self.failed_devices = 0
        self.programmed_at_s = float("nan")
        self.programmed = env.event()
        self.timeline: list[dict[str, Any]] = []
        self._evals: list[ScheduledEvaluation] = []
        self._stop = env.event()
        self.view = FirmwareView(
            self.firmware,
            now=lambda: self.env.now,
            t0_s=cc.device.t0_s,
            energy=self.ledger.energy_by_kind_pj,
            corrections=lambda: self.corrections,
            programmed_at=lambda: self.programmed_at_s,
        )
        self.guard = GuardedPolicy(policy)
        self.pulses = PulseGenerator(self, self.config.pulse_channels)
        self.trigger = CorrectionTrigger(self)
        self.monitor = DriftMonitor(self)
        self.inference = InferenceQueue(self)
        self._started = False

    # --- lifecycle ------------------------------------------------------------------------
    @property
    def policy_name(self) -> str:
        return self.guard.name

    def start(self) -> simpy.Process:
        """Program the network now, calibrate drift compensation, then start monitoring."""
        if self._started:
            raise RuntimeError("the model has already been started")
        self._started = True
        return self.env.process(self._startup())

    def _startup(self) -> Generator[simpy.Event, Any, None]:
        self.programmed_at_s = self.env.now
        yield self.env.all_of([self.pulses.program_tile(t) for t in self.firmware.tiles])
        if self.compensation_factory is not None and hasattr(self.mapped, "forward"):
            comp = self.compensation_factory("gdc", self.mapped)
            calibrate = getattr(comp, "calibrate", None)
            if calibrate is not None:
                yield from self._on_chip(lambda mvm, _c: calibrate(mvm), "calibration", {})
            self.compensation = comp
        self.programmed.succeed()
        try:
            self.guard.start(self.view)
        except Exception as exc:
            self._fail(exc)
            return
        self.monitor.start(anchor_s=self.programmed_at_s)

    def _fail(self, exc: Exception) -> None:
        """Stop the run after an error (policy or twin): record it, stop monitoring."""
        self.error = exc
        self.ledger.add(
            "policy_error" if isinstance(exc, PolicyError) else "error",
            self.env.now,
            self.env.now,
            policy=self.policy_name,
            detail={"message": str(exc)},
        )
        if not self._stop.triggered:
            self._stop.succeed()

    def set_policy(self, policy: Policy) -> None:
        """Replace the policy: monitoring restarts, anchored at the current time. The new
        policy is started first: one that fails to start raises ``PolicyError`` and leaves the
        running policy (and everything else) as it was."""
        guard = GuardedPolicy(policy)
        if self.programmed.triggered:
            guard.start(self.view)
        self.monitor.stop()
        self.monitor = DriftMonitor(self)
        old = self.policy_name
        self.guard = guard
        self.error = None
        self._stop = self.env.event()
        self.ledger.add(
            "policy",
            self.env.now,
            self.env.now,
            policy=self.policy_name,
            detail={"previous": old, "policy": self.guard.describe()},
        )
        if self.programmed.triggered:
            self.monitor.start(anchor_s=self.env.now)

    # --- evaluations ----------------------------------------------------------------------
    def schedule_evaluation(self, at_s: float, label: str | None = None) -> ScheduledEvaluation:
        """Measure the chip at device time ``at_s`` (see the module docstring for the order)."""
        at = float(at_s)
        if not math.isfinite(at) or at < self.env.now:
            raise ValueError(
                f"evaluation time {at_s!r} is not a finite time >= now ({self.env.now})"
            )
        ev = ScheduledEvaluation(at, label if label is not None else f"{at:g} s", self.env.event())
        self._evals.append(ev)
        self.env.process(self._scheduled_evaluation(ev))
        return ev

    def schedule_evaluations(
        self, times_s: Iterable[float], labels: Iterable[str] | None = None
    ) -> list[ScheduledEvaluation]:
        times = list(times_s)
        names = list(labels) if labels is not None else [None] * len(times)
        return [self.schedule_evaluation(t, n) for t, n in zip(times, names, strict=True)]

    def _scheduled_evaluation(self, ev: ScheduledEvaluation) -> Generator[simpy.Event, Any, None]:
        if ev.at_s > self.env.now:
            yield self.env.timeout(ev.at_s - self.env.now)
        if not self.programmed.triggered:
            yield self.programmed
        try:
            row = yield from self._evaluate(ev.at_s, ev.label, "scheduled")
            ev.rows.append(row)
        except Exception as exc:  # an evaluator or twin failure stops the run, reported
            self._fail(exc)
        finally:
            ev.done.succeed()

    def _evaluations_due(self, at_s: float) -> Generator[simpy.Event, Any, None]:
        """Wait for the evaluations due at or before ``at_s`` and the host inferences that
        arrived by then: they see the chip before the corrections of this instant."""
        due = [e.done for e in self._evals if e.at_s <= at_s and not e.done.triggered]
        due += self.inference.pending_before(at_s)
        if due:
            yield self.env.all_of(due)

    def _evaluations_after_correction(self, at_s: float) -> Generator[simpy.Event, Any, None]:
        for e in self._evals:
            if abs(e.at_s - at_s) <= 1e-9 * max(1.0, abs(at_s)):
                row = yield from self._evaluate(e.at_s, e.label, "after_correction")
                e.rows.append(row)

    def _evaluate(
        self, scheduled_s: float, label: str, phase: str
    ) -> Generator[simpy.Event, Any, dict[str, Any]]:
        metrics: dict[str, float] = {}
        if self.evaluator is not None:
            evaluator = self.evaluator

            def fn(mvm: Callable[..., np.ndarray], comp: Any) -> dict[str, float]:
                return dict(evaluator(mvm, comp))

            info = {"label": label, "phase": phase}
            metrics = yield from self._on_chip(fn, "evaluation", info)
            measured_s = info.get("measured_s", self.env.now)
        else:
            measured_s = self.env.now
        row = self._timeline_row(scheduled_s, label, phase, metrics, measured_s)
        self.timeline.append(row)
        return row

    # --- running work on the chip ---------------------------------------------------------------
    def _mvm_fn(self, ops: OpAccumulator, at_s: float) -> Callable[..., np.ndarray]:
        twin, chip = self.twin, self.chip_id

        def mvm(
            tile: int, x: Any, row_start: int = 0, col_start: int = 0, col_count: int | None = None
        ) -> np.ndarray:
            if hasattr(x, "detach"):
                x = x.detach().cpu().numpy()
            x = np.ascontiguousarray(x, dtype=np.float32)
            r = ops.add(
                twin.mvm(
                    chip,
                    int(tile),
                    x,
                    at_s,
                    int(row_start),
                    int(col_start),
                    None if col_count is None else int(col_count),
                )
            )
            return r.values

        return mvm

    def _on_chip(
        self, fn: ChipFn, kind: str, detail: dict[str, Any]
    ) -> Generator[simpy.Event, Any, Any]:
        """Run ``fn(mvm, compensation)`` on every tile of the network at one instant, holding
        the tiles for the latency the twin reports."""
        holds = self.locks.hold_many(self.firmware.tiles, kind)
        try:
            yield self.env.all_of([h.request for h in holds])
            start = self.env.now
            detail["measured_s"] = start
            ops = self.ledger.action()
            comp = self.compensation if self.guard.compensation == "gdc" else None
            if kind == "calibration":
                comp = None
            value = fn(self._mvm_fn(ops, start), comp)
            yield self.env.timeout(ops.latency_s)
        finally:
            for h in holds:
                h.release()
        queued = start - detail.get("submitted_s", start)
        detail_out = {**detail, "mvm_calls": ops.ops, "queued_s": queued}
        detail["energy_pj"] = ops.energy_pj
        self.ledger.add(
            kind,
            start,
            self.env.now,
            devices=0,
            ops=ops,
            policy=self.policy_name,
            detail=detail_out,
        )
        return value

    def infer(self, x: np.ndarray, label: str = "") -> simpy.Event:
        """Queue a host inference on a batch ``x``; the event's value is an
        :class:`~controller.firmware.inference.InferenceResult` (``.y``: the network output).

        With drift compensation, its read is taken first, at the same instant (its cost is
        part of the inference)."""
        import torch

        mapped = self.mapped
        xt = torch.as_tensor(np.asarray(x, dtype=np.float32))

        def fn(mvm: Callable[..., np.ndarray], comp: Any) -> np.ndarray:
            if comp is not None and hasattr(comp, "measure"):
                comp.measure(mvm)  # the compensation read at this instant, as evaluate() does
            with torch.no_grad():
                out = mapped.forward(xt, mvm, comp)
            return out.detach().cpu().numpy() if hasattr(out, "detach") else np.asarray(out)

        return self.inference.submit(fn, label)

    def trigger_correction(
        self, tiles: tuple[int, ...] | None = None, mode: str = "policy"
    ) -> simpy.Process:
        """Run a monitor cycle now: ``mode="policy"`` as the policy would at a wake-up,
        ``mode="all"`` correcting every probed device outside the default tolerance."""
        if mode not in ("policy", "all"):
            raise ValueError(f"mode must be 'policy' or 'all', got {mode!r}")
        if tiles is not None:
            bad = [t for t in tiles if t not in self.firmware.tiles]
            if bad:
                raise ValueError(
                    f"tiles {bad} do not hold the network ({list(self.firmware.tiles)})"
                )
        return self.env.process(self._manual_cycle(tiles, mode))

    def _manual_cycle(
        self, tiles: tuple[int, ...] | None, mode: str
    ) -> Generator[simpy.Event, Any, list[JobOutcome]]:
        if not self.programmed.triggered:
            yield self.programmed
        try:
            return (
                yield from self.monitor.cycle(self.env.now, scheduled=False, mode=mode, tiles=tiles)
            )
        except Exception as exc:
            self._fail(exc)
            return []

    def _job_done(self, o: JobOutcome, ops: OpAccumulator, kind: str, s: PulseScheme) -> None:
        self.corrections += 1
        self.devices_corrected += o.job.devices
        self.failed_devices += o.n_failed
        self.ledger.add(
            kind,
            o.start_s,
            o.end_s,
            tile=o.job.tile,
            devices=o.job.devices,
            ops=ops,
            controller_energy_pj=o.controller_energy_pj,
            policy=self.policy_name,
            detail={
                "reason": o.job.reason,
                "converged": o.n_converged,
                "failed": o.n_failed,
                "reprograms": o.reprograms,
                "iterations": o.iterations,
                "method": s.method,
                "tolerance": s.tolerance,
            },
        )

    # --- running ----------------------------------------------------------------------------
    def run(
        self,
        until_s: float,
        progress: Progress | None = None,
        resync: bool = True,
        inclusive: bool = True,
    ) -> None:
        """Advance to device time ``until_s``: every event due at or before it is processed
        (``inclusive=False``: only those due before it, so that work requested at ``until_s``
        comes first, as a host's AdvanceTime wants).

        Raises the :class:`PolicyError` (or twin error) that stopped the run, if any; the model
        can go on after ``set_policy``. In realtime mode each call paces from the moment it is
        made (``resync``); a driver that runs back to back passes ``resync=False`` so that its
        own overhead is made up for.
        """
        if self.error is not None:
            raise self.error
        target = float(until_s)
        if not math.isfinite(target) or target < self.env.now:
            raise ValueError(f"until_s={until_s!r} is before the current time {self.env.now}")
        if resync and isinstance(self.env, simpy.rt.RealtimeEnvironment):
            self.env.sync()  # pace from now: time spent between runs is not made up for
        steps = self.config.progress_steps if progress is not None else 1
        begin = self.env.now
        for i in range(1, steps + 1):
            last = i == steps
            t = target if last else begin + (target - begin) * i / steps
            self._advance(t, inclusive or not last)
            if progress is not None:
                progress(self.env.now, target)

    def _run_to(self, until: simpy.Event) -> None:
        """``env.run()`` until ``until`` is processed or the model fails (``_stop``).

        Both events stop the run through SimPy's ``StopSimulation.callback``; whichever did not
        fire gets its callback back, so that no stale stop is left for a later run."""
        env = self.env
        watched = [until, self._stop]
        if any(ev.processed for ev in watched):
            return
        for ev in watched:
            ev.callbacks.append(StopSimulation.callback)
        try:
            env.run()
        finally:
            for ev in watched:
                if ev.callbacks is not None and StopSimulation.callback in ev.callbacks:
                    ev.callbacks.remove(StopSimulation.callback)

    def _advance(self, t: float, inclusive: bool = True) -> None:
        env = self.env
        if t > env.now and not self._stop.triggered:
            # like env.run(until=t): an urgent event at t, so events due exactly at t wait
            until = env.event()
            until._ok, until._value = True, None
            env.schedule(until, simpy.events.URGENT, t - env.now)
            self._run_to(until)
        while inclusive and self.error is None and env.peek() <= t:
            env.step()
        if self.error is not None:
            raise self.error

    def advance_bounded(self, until_s: float, wall_s: float, inclusive: bool = True) -> bool:
        """Like :meth:`run`, but give up after about ``wall_s`` seconds of wall time.

        Returns True once device time ``until_s`` is reached (events due at it processed too
        when ``inclusive``), False when the wall-time budget ran out first; call again to go
        on. This is how a server advances far without holding its lock for minutes and
        without missing a deadline."""
        if self.error is not None:
            raise self.error
        env = self.env
        target = float(until_s)
        if not math.isfinite(target) or target < env.now:
            raise ValueError(f"until_s={until_s!r} is before the current time {env.now}")
        stop_at = time.monotonic() + wall_s
        if target > env.now:
            # an urgent event at the target, as env.run(until=target) makes: events due exactly
            # at the target come after it
            until = env.event()
            until._ok, until._value = True, None
            env.schedule(until, simpy.events.URGENT, target - env.now)
            n = 0
            while not until.processed:
                if n % 32 == 0 and time.monotonic() > stop_at:
                    until.callbacks = []  # left in the queue, harmless: a later call makes its own
                    return False
                env.step()
                n += 1
                if self.error is not None:
                    raise self.error
        n = 0
        while inclusive and self.error is None and env.peek() <= target:
            if n % 32 == 0 and time.monotonic() > stop_at:
                return False
            env.step()
            n += 1
        if self.error is not None:
            raise self.error
        return True

    def finish_cycle(self) -> None:
        """Let a monitor wake-up that has begun (at or before now) run to its end: its
        corrections and the evaluations after them. ``run(until_s)`` stops at ``until_s``, in
        the middle of the corrections of a wake-up due then; their cost belongs to the run."""
        done = self.monitor.cycle_done
        if done is not None and not done.processed and self.error is None:
            self.run_until_event(done)

    def run_until_event(self, event: simpy.Event) -> Any:
        """Advance until ``event`` has been processed (an inference, a triggered correction)."""
        if not event.processed:
            self._run_to(event)
        if not event.triggered and self.error is not None:
            raise self.error
        if not event.triggered:
            raise RuntimeError("the simulation ran out of events before the awaited one")
        if not event.ok:
            raise event.value
        return event.value

    # --- results ----------------------------------------------------------------------------
    def availability(self) -> float:
        """Share of the network's tile-time since programming not lost to corrections,
        probes and programming (1.0 before programming)."""
        elapsed = self.env.now - self.programmed_at_s
        tiles = self.firmware.tiles
        if not tiles or not elapsed > 0:
            return 1.0
        return max(0.0, 1.0 - self.locks.unavailable_s(tiles) / (len(tiles) * elapsed))

    def drift_metrics(self) -> dict[int, dict[str, float]]:
        """The latest probe metrics per tile."""
        return dict(self.monitor.tile_metrics)

    def totals(self) -> dict[str, Any]:
        led = self.ledger
        corr = led.totals.get("correction")
        inf = self.inference.stats
        return {
            "t_s": self.env.now,
            "policy": self.guard.describe(),
            "corrections": self.corrections,
            "devices_corrected": self.devices_corrected,
            "failed_devices": self.failed_devices,
            "correction_pulses": corr.pulses if corr else 0,
            "correction_energy_pj": (corr.energy_pj + corr.controller_energy_pj) if corr else 0.0,
            "energy_by_kind_pj": led.energy_by_kind_pj(),
            "twin_energy_pj": led.twin_energy_pj,
            "controller_energy_pj": led.controller_energy_pj,
            "twin_energy_by_op_pj": dict(sorted(led.twin_energy_by_op.items())),
            "ledger": led.totals_dict(),
            "availability": self.availability(),
            "monitor_wakeups": self.monitor.wakeups,
            "inferences": inf.requests,
            "inference_latency_s_mean": inf.latency_s_sum / inf.requests if inf.requests else 0.0,
            "inference_latency_s_max": inf.latency_s_max,
            "error": None if self.error is None else str(self.error),
        }

    def _timeline_row(
        self,
        scheduled_s: float,
        label: str,
        phase: str,
        metrics: dict[str, float],
        measured_s: float,
    ) -> dict[str, Any]:
        """One timeline row: when the chip was measured (``t_s``), what was scheduled, the
        evaluator's metrics, and the chip's counters at the end of the measurement."""
        led = self.ledger
        corr = led.totals.get("correction")
        tm = self.monitor.tile_metrics
        row: dict[str, Any] = {
            "t_s": measured_s,
            "end_s": self.env.now,
            "scheduled_s": scheduled_s,
            "age_s": scheduled_s - self.programmed_at_s,
            "label": label,
            "phase": phase,
            "policy": self.policy_name,
            **metrics,
            "corrections": self.corrections,
            "devices_corrected": self.devices_corrected,
            "failed_devices": self.failed_devices,
            "correction_pulses": corr.pulses if corr else 0,
            "correction_energy_pj": (corr.energy_pj + corr.controller_energy_pj) if corr else 0.0,
            "energy_total_pj": led.twin_energy_pj + led.controller_energy_pj,
            "availability": self.availability(),
            "drift_metric": float(np.mean([v["drift_metric"] for v in tm.values()]))
            if tm
            else float("nan"),
        }
        for kind, e in led.energy_by_kind_pj().items():
            row[f"energy_{kind}_pj"] = e
        for t, v in sorted(tm.items()):
            row[f"drift_metric_tile{t}"] = v["drift_metric"]
        return row

    def results(self) -> RunResults:
        return RunResults(list(self.timeline), list(self.ledger.events), self.totals())
