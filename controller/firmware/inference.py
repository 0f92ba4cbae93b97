"""The inference path: host requests queue, wait for busy tiles, run on the twin.

Requests are served one at a time in arrival order, once the network is programmed. A request
runs as a forward pass of :class:`~controller.firmware.onchip.OnChip` (it waits until no tile
of the network is under correction, probing or programming). The recorded latency of a
request runs from its arrival to its end, queueing included.
"""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass
from typing import Any

import simpy

from controller.firmware.onchip import ChipFn, OnChip
from controller.firmware.quantities import INFERENCE


@dataclass
class InferenceResult:
    """What an inference request returned, and when and at what cost it ran."""

    y: Any
    submitted_s: float
    start_s: float
    end_s: float
    energy_pj: float  # twin energy of its MVMs


@dataclass
class InferenceStats:
    requests: int = 0
    latency_s_sum: float = 0.0
    latency_s_max: float = 0.0


class InferenceQueue:
    """Host inference requests, first come first served, on ``on_chip`` once ``programmed``
    has happened."""

    def __init__(self, env: simpy.Environment, on_chip: OnChip, programmed: simpy.Event) -> None:
        self.env = env
        self.on_chip = on_chip
        self.programmed = programmed
        self.store: simpy.Store = simpy.Store(env)
        self.stats = InferenceStats()
        self._pending: list[tuple[float, simpy.Event]] = []
        self.process = env.process(self._serve())

    def submit(self, fn: ChipFn, label: str = "") -> simpy.Event:
        """Queue a request; the returned event's value is an :class:`InferenceResult` holding
        what ``fn`` returned."""
        done = self.env.event()
        self.store.put((fn, label, self.env.now, done))
        self._pending.append((self.env.now, done))
        return done

    def pending_before(self, at_s: float) -> list[simpy.Event]:
        """Completion events of the requests that arrived at or before ``at_s`` and are not
        done yet."""
        self._pending = [(t, d) for t, d in self._pending if not d.triggered]
        return [d for t, d in self._pending if t <= at_s]

    def _serve(self) -> Generator[simpy.Event, Any, None]:
        while True:
            fn, label, submitted_s, done = yield self.store.get()
            if not self.programmed.triggered:
                yield self.programmed
            detail = {"label": label, "submitted_s": submitted_s}
            try:
                ran = yield from self.on_chip.run(fn, INFERENCE, detail, submitted_s)
            except Exception as exc:  # a bad request fails alone; the queue goes on
                done.fail(exc)
                continue
            latency = self.env.now - submitted_s
            s = self.stats
            s.requests += 1
            s.latency_s_sum += latency
            s.latency_s_max = max(s.latency_s_max, latency)
            done.succeed(InferenceResult(ran.value, submitted_s, ran.start_s, ran.end_s,
                                         ran.energy_pj))  # fmt: skip
