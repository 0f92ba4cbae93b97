"""The chip model: the emulated firmware of one chip, as SimPy processes over a twin.

A :class:`ChipModel` builds the firmware state (:mod:`~controller.firmware.firmware`) and the
context every process shares (:mod:`~controller.firmware.context`: clock, twin, ledger, tile
locks, read-only view, configuration), then wires the processes to each other and to its
callbacks: the drift monitor (:mod:`~controller.firmware.monitor`) hands reports to the
correction trigger (:mod:`~controller.firmware.trigger`), which hands jobs to the pulse
generator (:mod:`~controller.firmware.pulsegen`); forward passes on the chip
(:mod:`~controller.firmware.onchip`) serve the inference queue
(:mod:`~controller.firmware.inference`), the scheduled evaluations
(:mod:`~controller.firmware.evaluations`) and drift compensation's calibration. No process
sees the model. The SimPy clock is device time in seconds; every twin call carries
``at_s = env.now``. What it measures is named in :mod:`~controller.firmware.quantities`.

One lifecycle (desmod's build -> elaborate -> run -> post-simulate), the same for a scenario
run and for ChipHost:

1. build: ``ChipModel(env, twin, chip_id, mapped, policy, ...)``, then
   ``schedule_evaluations(times)``;
2. ``start()``: program the network now, calibrate drift compensation, start the policy and
   the monitor; returns once the network is programmed;
3. ``advance(until_s)`` (to a device time; ``wall_s``: within a wall-time budget, for a
   server) and ``wait(event)`` (an inference, a triggered correction), as often as wanted;
4. ``finish()``: the work begun by now runs to its end (evaluations due, the monitor wake-up
   under way: its corrections and the evaluations after them); returns the results.

``simulate(until_s)`` is 2-4 in one call (a scenario run)::

    env = make_environment()                       # or make_environment(realtime=1.0)
    model = ChipModel(env, twin, chip_id, mapped, load_policy("threshold"),
                      evaluator=my_accuracy)        # evaluator(mvm, compensation) -> dict
    model.schedule_evaluations([1, 3600, 86400, 2.6e6, 3.156e7])
    res = model.simulate(until_s=3.156e7, progress=lambda now_s, until_s: ...)
    # res.timeline (rows), res.events (ledger), res.totals

A failure (a policy's, the twin's, an evaluator's) stops the run: it is recorded on the ledger
and in ``error``, and ``advance``/``wait`` raise it until ``set_policy`` installs a new policy.

Order of events at one instant T (documented contract):

1. evaluations scheduled at T, and host inferences that arrived by T, run first: they see
   the chip as it is before any correction scheduled at T (the worst point of the cycle);
2. then the monitor wake-up at T probes and the trigger starts the corrections it decides;
3. when those corrections have finished, every evaluation scheduled at T runs again and is
   recorded with ``phase="after_correction"`` (its ``measured_s`` is the time the
   corrections ended).

An evaluation always waits for tiles under correction (tiles are unavailable meanwhile), so an
evaluation at T that meets a job started before T sees the chip after that job. Evaluations
are observations: they take no simulated time and the twin's randomness is keyed by what is
drawn, so adding or moving evaluation times changes no device, pulse or later measurement.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Generator, Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
import simpy
import simpy.rt

from controller.firmware.config import ControllerConfig
from controller.firmware.context import ChipContext
from controller.firmware.errors import PolicyError
from controller.firmware.evaluations import Evaluations, Evaluator, ScheduledEvaluation
from controller.firmware.firmware import Firmware, FirmwareView
from controller.firmware.guard import GuardedPolicy
from controller.firmware.inference import InferenceQueue
from controller.firmware.ledger import Event, Ledger
from controller.firmware.monitor import DriftMonitor
from controller.firmware.onchip import OnChip
from controller.firmware.policies.base import JobOutcome, Policy
from controller.firmware.policies.rewrites import rewritten_columns
from controller.firmware.pulsegen import PulseGenerator
from controller.firmware.quantities import (
    CALIBRATION,
    ERROR,
    POLICY,
    POLICY_ERROR,
    counters,
    timeline_row,
)
from controller.firmware.stepping import advance_to, step_until
from controller.firmware.tiles import TileLocks
from controller.firmware.trigger import CorrectionTrigger

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
class RunResults:
    """What a run produced: ``timeline`` rows (one per evaluation, flat dicts of scalars),
    ``events`` (the ledger, in order), ``counters`` (numbers only) and ``totals`` (the
    counters and more), at the end."""

    timeline: list[dict[str, Any]]
    events: list[Event]
    counters: dict[str, float]
    totals: dict[str, Any]


#: A policy's ``compensation`` -> ``DriftCompensation.kind`` (the kinds one read serves).
_KINDS = {"gdc": "global", "per_column": "per_column"}


def default_compensation_factory(kind: str, mapped: Any) -> Any:
    """Drift compensation of the workloads package (``make_compensation``): "gdc" is one
    factor per tile from an identity read (DESIGN.md §5). AdaBS needs calibration images: a
    runner passes a factory that has them (the scenario runner does)."""
    from controller.workloads.adabs import make_compensation

    return make_compensation(kind, mapped)


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
        self.chip_id = chip_id
        self.mapped = mapped
        self.config = config or ControllerConfig()
        cc = chip_config if chip_config is not None else twin.chip_info(chip_id).config
        self.chip_config = cc
        self.firmware = Firmware(cc.n_tiles, cc.tile_rows, cc.tile_cols, cc.g_max_us,
                                 getattr(cc, "significance", (1.0,)))  # fmt: skip
        self.firmware.load(mapped)
        self.ledger = Ledger(keep_events=self.config.keep_events)
        self.locks = TileLocks(env)
        self.compensation_factory = compensation_factory
        self.compensation: Any = None
        self.error: Exception | None = None
        self.programmed_at_s = float("nan")
        self.programmed = env.event()
        self.guard = GuardedPolicy(policy)
        self.ledger.policy = self.guard.name
        self.view = FirmwareView(
            self.firmware,
            now=lambda: self.env.now,
            t0_s=cc.device.t0_s,
            energy=self.ledger.energy_by_kind_pj,
            corrections=lambda: self.pulses.stats.jobs,
            programmed_at=lambda: self.programmed_at_s,
        )
        # wiring: each process gets the shared context and the collaborators it uses
        ctx = ChipContext(env, twin, chip_id, self.view, self.ledger, self.locks, self.config)
        self.on_chip = OnChip(ctx, self._compensation_now)
        self.pulses = PulseGenerator(ctx, self.firmware, cc, self.config.pulse_channels)
        self.trigger = CorrectionTrigger(ctx, self.pulses)
        self.inference = InferenceQueue(env, self.on_chip, self.programmed)
        self.evaluations = Evaluations(
            env, self.on_chip, self.programmed, self._row, self.fail, evaluator
        )
        self.monitor = DriftMonitor(
            ctx, self.trigger, self._before_probe, self.evaluations.after_correction, self.fail,
            on_corrected=self._recalibrate,
        )  # fmt: skip
        self._started = False

    @property
    def policy_name(self) -> str:
        return self.guard.name

    @property
    def timeline(self) -> list[dict[str, Any]]:
        return self.evaluations.timeline

    # --- callbacks of the processes ---------------------------------------------------------
    def _compensation_now(self) -> Any:
        kind = self.guard.compensation
        comp = self.compensation
        if kind is None or comp is None:
            return None
        # one reference read serves one factor per tile and one per column: a new policy may
        # switch between them
        if kind in _KINDS and getattr(comp, "kind", _KINDS[kind]) != _KINDS[kind]:
            comp.kind = _KINDS[kind]
        return comp

    def _recalibrate(self, outcomes: list[JobOutcome]) -> Generator[simpy.Event, Any, None]:
        """After corrections, when the policy asks (``recalibrate``): re-take the compensation
        reference of the columns they rewrote whole (every device with a level above 0 uS)."""
        comp = self._compensation_now()
        recal = getattr(comp, "recalibrate", None)
        if not getattr(self.guard.policy, "recalibrate", False) or recal is None:
            return
        columns = rewritten_columns(self.view, self.mapped, [o.job for o in outcomes])
        if columns:
            yield from self.on_chip.run(lambda mvm, _c: recal(mvm, columns), CALIBRATION,
                                        {"recalibrate": True})  # fmt: skip

    def _before_probe(self, at_s: float) -> Generator[simpy.Event, Any, None]:
        """The evaluations due at or before ``at_s`` and the host inferences that arrived by
        then: they see the chip before the corrections of this instant."""
        due = self.evaluations.due(at_s) + self.inference.pending_before(at_s)
        if due:
            yield self.env.all_of(due)

    def _row(
        self, scheduled_s: float, measured_s: float, label: str, phase: str,
        metrics: dict[str, float],
    ) -> dict[str, Any]:  # fmt: skip
        """A timeline row: the counters now and the latest drift metrics."""
        return timeline_row(
            scheduled_s=scheduled_s, measured_s=measured_s, label=label, phase=phase,
            policy=self.policy_name, metrics=metrics, counts=self.counters(),
            tile_metrics=self.monitor.tile_metrics,
        )  # fmt: skip

    def fail(self, exc: Exception) -> None:
        """Stop the run after an error (policy, twin, evaluator): record it; ``advance`` and
        ``wait`` stop and raise it until ``set_policy``."""
        self.error = exc
        kind = POLICY_ERROR if isinstance(exc, PolicyError) else ERROR
        self.ledger.add(kind, self.env.now, self.env.now, detail={"message": str(exc)})

    def _failed(self) -> bool:
        return self.error is not None

    # --- lifecycle: start ---------------------------------------------------------------------
    def start(self) -> None:
        """Program the network now, calibrate drift compensation, start the policy and the
        monitor; returns once the network is programmed (a policy that fails to start stops
        the run: see ``error``)."""
        if self._started:
            raise RuntimeError("the model has already been started")
        self._started = True
        self.env.process(self._startup())
        self.wait(self.programmed)

    def _startup(self) -> Generator[simpy.Event, Any, None]:
        self.programmed_at_s = self.env.now
        yield self.env.all_of([self.pulses.program_tile(t) for t in self.firmware.tiles])
        if self.compensation_factory is not None and hasattr(self.mapped, "forward"):
            # without compensation the GDC read is still taken (and booked), as it always was
            comp = self.compensation_factory(self.guard.compensation or "gdc", self.mapped)
            calibrate = getattr(comp, "calibrate", None)
            if calibrate is not None:
                yield from self.on_chip.run(lambda mvm, _c: calibrate(mvm), CALIBRATION, {})
            self.compensation = comp
        self.programmed.succeed()
        try:
            self.guard.start(self.view)
        except Exception as exc:
            self.fail(exc)
            return
        self.monitor.start(self.guard, anchor_s=self.programmed_at_s)

    # --- lifecycle: run -------------------------------------------------------------------------
    def _check_advance(self, until_s: float) -> float:
        if self.error is not None:
            raise self.error
        target = float(until_s)
        if not math.isfinite(target) or target < self.env.now:
            raise ValueError(f"until_s={until_s!r} is before the current time {self.env.now}")
        return target

    def advance(
        self,
        until_s: float,
        *,
        inclusive: bool = True,
        wall_s: float | None = None,
        progress: Progress | None = None,
        resync: bool = True,
    ) -> bool:
        """Advance to device time ``until_s``: every event due before it is processed, and
        those due at it too when ``inclusive`` (``inclusive=False``: work requested at
        ``until_s`` comes first, as a host's AdvanceTime wants).

        ``wall_s``: give up after about that many seconds of wall time and return False
        (call again to go on): a server advances far without holding its lock for minutes or
        missing a deadline. ``progress(now_s, until_s)`` is called ``config.progress_steps``
        times on the way. In realtime mode each call paces from the moment it is made
        (``resync``); a driver that runs back to back passes ``resync=False`` so that its own
        overhead is made up for. Raises the error that stopped the run, if any."""
        target = self._check_advance(until_s)
        if resync and isinstance(self.env, simpy.rt.RealtimeEnvironment):
            self.env.sync()  # pace from now: time spent between runs is not made up for
        deadline = None if wall_s is None else time.monotonic() + wall_s
        steps = self.config.progress_steps if progress is not None else 1
        begin = self.env.now
        for i in range(1, steps + 1):
            last = i == steps
            t = target if last else begin + (target - begin) * i / steps
            reached = advance_to(self.env, t, inclusive or not last, self._failed, deadline)
            if self.error is not None:
                raise self.error
            if progress is not None:
                progress(self.env.now, target)
            if not reached:
                return False
        return True

    def wait(self, event: simpy.Event) -> Any:
        """Advance until ``event`` has been processed (an inference, a triggered correction);
        its value, or its failure raised."""
        if not event.processed:
            step_until(self.env, event, self._failed)
        if not event.triggered and self.error is not None:
            raise self.error
        if not event.triggered:
            raise RuntimeError("the simulation ran out of events before the awaited one")
        if not event.ok:
            raise event.value
        return event.value

    # --- lifecycle: post-simulate ---------------------------------------------------------------
    def finish(self) -> RunResults:
        """Let the work begun by now run to its end, then the results: evaluations due by now
        (an evaluation at the very end takes its MVMs' latency) and the monitor wake-up under
        way (its corrections and the evaluations after them: their cost belongs to the run;
        ``advance`` stops at its target, in the middle of them)."""
        due = self.evaluations.due(self.env.now)
        if due:
            self.wait(self.env.all_of(due))
        done = self.monitor.cycle_done
        if done is not None and not done.processed and self.error is None:
            self.wait(done)
        return self.results()

    def simulate(self, until_s: float, progress: Progress | None = None) -> RunResults:
        """The whole lifecycle of a batch run: start, advance to ``until_s``, finish."""
        if not self._started:
            self.start()
        self.advance(until_s, progress=progress)
        return self.finish()

    # --- what the firmware is asked to do -------------------------------------------------------
    def set_policy(self, policy: Policy) -> None:
        """Replace the policy: monitoring restarts, anchored at the current time. The new
        policy is started first: one that fails to start raises ``PolicyError`` and leaves the
        running policy (and everything else) as it was."""
        guard = GuardedPolicy(policy)
        if self.programmed.triggered:
            guard.start(self.view)
        old = self.policy_name
        self.guard = guard
        self.ledger.policy = guard.name
        self.error = None
        now = self.env.now
        self.ledger.add(POLICY, now, now, detail={"previous": old, "policy": guard.describe()})
        if self.programmed.triggered:
            self.monitor.start(guard, anchor_s=now)

    def schedule_evaluation(self, at_s: float, label: str | None = None) -> ScheduledEvaluation:
        """Measure the chip at device time ``at_s`` (see the module docstring for the order)."""
        return self.evaluations.schedule(at_s, label)

    def schedule_evaluations(
        self, times_s: Iterable[float], labels: Iterable[str] | None = None
    ) -> list[ScheduledEvaluation]:
        times = list(times_s)
        names = list(labels) if labels is not None else [None] * len(times)
        return [self.schedule_evaluation(t, n) for t, n in zip(times, names, strict=True)]

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
        self,
        tiles: tuple[int, ...] | None = None,
        mode: str = "policy",
        on_report: Callable[[Any], None] | None = None,
    ) -> simpy.Process:
        """Run a monitor cycle now: ``mode="policy"`` as the policy would at a wake-up,
        ``mode="all"`` correcting every probed device outside the default tolerance; the
        process's value is the jobs' outcomes, ``on_report`` gets the cycle's probe report
        (its ``energy_pj``: what the probes cost)."""
        if mode not in ("policy", "all"):
            raise ValueError(f"mode must be 'policy' or 'all', got {mode!r}")
        if tiles is not None:
            bad = [t for t in tiles if t not in self.firmware.tiles]
            if bad:
                raise ValueError(
                    f"tiles {bad} do not hold the network ({list(self.firmware.tiles)})"
                )
        return self.env.process(self._manual_cycle(tiles, mode, on_report))

    def _manual_cycle(
        self, tiles: tuple[int, ...] | None, mode: str, on_report: Callable[[Any], None] | None
    ) -> Generator[simpy.Event, Any, list[JobOutcome]]:
        if not self.programmed.triggered:
            yield self.programmed
        try:
            return (yield from self.monitor.cycle(self.guard, self.env.now, scheduled=False,
                                                  mode=mode, tiles=tiles,
                                                  on_report=on_report))  # fmt: skip
        except Exception as exc:
            self.fail(exc)
            return []

    # --- results --------------------------------------------------------------------------------
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

    def counters(self) -> dict[str, float]:
        """The cumulative counters (:func:`~controller.firmware.quantities.counters`)."""
        return counters(self.ledger, self.pulses.stats, self.monitor.wakeups, self.availability())

    def totals(self) -> dict[str, Any]:
        """The counters, and what else a status wants: time, policy, error, the ledger's
        totals by kind and the twin's energy by operation, inference latency."""
        led, inf = self.ledger, self.inference.stats
        return {
            "sim_time_s": self.env.now,
            "policy": self.guard.describe(),
            **self.counters(),
            "energy_by_kind_pj": led.energy_by_kind_pj(),
            "twin_energy_by_op_pj": dict(sorted(led.twin_energy_by_op.items())),
            "ledger": led.totals_dict(),
            "inferences": inf.requests,
            "inference_latency_s_mean": inf.latency_s_sum / inf.requests if inf.requests else 0.0,
            "inference_latency_s_max": inf.latency_s_max,
            "error": None if self.error is None else str(self.error),
        }

    def results(self) -> RunResults:
        return RunResults(list(self.timeline), list(self.ledger.events), self.counters(),
                          self.totals())  # fmt: skip
