"""Scheduled evaluations: the chip measured at given device times, one timeline row each.

An evaluation scheduled at T runs, once the network is programmed, as a forward pass of
:class:`~controller.firmware.onchip.OnChip` at T: the evaluator gets the MVM function and the
drift compensation and returns its metrics (e.g. ``{"accuracy": 0.93}``). Its row is
``phase="before_correction"``: the drift monitor's wake-up at T waits for it (``due``) before
it probes. If that wake-up corrected anything, every evaluation scheduled at T runs again once
the corrections have ended (``after_correction``), recorded with ``phase="after_correction"``.
Rows are made by the ``make_row`` callback (the model's counters at the end of the pass).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import simpy

from controller.firmware.context import OnError
from controller.firmware.onchip import OnChip
from controller.firmware.quantities import AFTER_CORRECTION, BEFORE_CORRECTION, EVALUATION

#: An evaluator measures the chip: gets an MVM function and the compensation (or None,
#: calibrated right after programming: measure it first, as workloads' ``evaluate`` does).
Evaluator = Callable[[Callable[..., np.ndarray], Any], dict[str, float]]
#: make_row(scheduled_s, measured_s, label, phase, metrics) -> a timeline row
MakeRow = Callable[[float, float, str, str, dict[str, float]], dict[str, Any]]


@dataclass
class ScheduledEvaluation:
    at_s: float
    label: str
    done: simpy.Event
    rows: list[dict[str, Any]] = field(default_factory=list)


class Evaluations:
    """The evaluations of one chip and the timeline they make (see the module docstring)."""

    def __init__(
        self,
        env: simpy.Environment,
        on_chip: OnChip,
        programmed: simpy.Event,
        make_row: MakeRow,
        on_error: OnError,
        evaluator: Evaluator | None = None,
    ) -> None:
        self.env = env
        self.on_chip = on_chip
        self.programmed = programmed
        self.make_row = make_row
        self.on_error = on_error
        self.evaluator = evaluator
        self.scheduled: list[ScheduledEvaluation] = []
        self.timeline: list[dict[str, Any]] = []

    def schedule(self, at_s: float, label: str | None = None) -> ScheduledEvaluation:
        """Measure the chip at device time ``at_s``."""
        at = float(at_s)
        if not math.isfinite(at) or at < self.env.now:
            raise ValueError(
                f"evaluation time {at_s!r} is not a finite time >= now ({self.env.now})"
            )
        ev = ScheduledEvaluation(at, label if label is not None else f"{at:g} s", self.env.event())
        self.scheduled.append(ev)
        self.env.process(self._scheduled(ev))
        return ev

    def due(self, at_s: float) -> list[simpy.Event]:
        """Completion events of the evaluations due at or before ``at_s`` not done yet."""
        return [e.done for e in self.scheduled if e.at_s <= at_s and not e.done.triggered]

    def after_correction(self, at_s: float) -> Generator[simpy.Event, Any, None]:
        """Every evaluation scheduled at ``at_s``, again (the corrections of ``at_s`` done)."""
        for e in self.scheduled:
            if abs(e.at_s - at_s) <= 1e-9 * max(1.0, abs(at_s)):
                row = yield from self._evaluate(e.at_s, e.label, AFTER_CORRECTION)
                e.rows.append(row)

    def _scheduled(self, ev: ScheduledEvaluation) -> Generator[simpy.Event, Any, None]:
        if ev.at_s > self.env.now:
            yield self.env.timeout(ev.at_s - self.env.now)
        if not self.programmed.triggered:
            yield self.programmed
        try:
            row = yield from self._evaluate(ev.at_s, ev.label, BEFORE_CORRECTION)
            ev.rows.append(row)
        except Exception as exc:  # an evaluator or twin failure stops the run, reported
            self.on_error(exc)
        finally:
            ev.done.succeed()

    def _evaluate(
        self, scheduled_s: float, label: str, phase: str
    ) -> Generator[simpy.Event, Any, dict[str, Any]]:
        metrics: dict[str, float] = {}
        measured_s = self.env.now
        if self.evaluator is not None:
            evaluator = self.evaluator

            def fn(mvm: Callable[..., np.ndarray], comp: Any) -> dict[str, float]:
                return dict(evaluator(mvm, comp))

            ran = yield from self.on_chip.run(fn, EVALUATION, {"label": label, "phase": phase})
            metrics, measured_s = ran.value, ran.start_s
        row = self.make_row(scheduled_s, measured_s, label, phase, metrics)
        self.timeline.append(row)
        return row
