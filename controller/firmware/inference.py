"""The inference path: host requests queue, wait for busy tiles, run on the twin.

Requests are served one at a time in arrival order. A request waits until no tile of the
network is under correction, probing or programming, then runs the network's forward pass with
every analog MVM on the twin at that instant, and holds the tiles for the latency the twin
reported (the sum over MVMs: the tiles of a layer chain work one after the other). The
recorded latency of a request runs from its arrival to its end, queueing included.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import simpy

if TYPE_CHECKING:
    from controller.firmware.model import ChipModel

#: What runs on the chip: gets an MVM function and the compensation object (or None).
ChipFn = Callable[[Callable[..., Any], Any], Any]


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
    """Host inference requests, first come first served."""

    def __init__(self, model: ChipModel) -> None:
        self.model = model
        self.env = model.env
        self.store: simpy.Store = simpy.Store(model.env)
        self.stats = InferenceStats()
        self._pending: list[tuple[float, simpy.Event]] = []
        self.process = model.env.process(self._serve())

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
        m = self.model
        while True:
            fn, label, submitted_s, done = yield self.store.get()
            if not m.programmed.triggered:
                yield m.programmed
            info = {"label": label, "submitted_s": submitted_s}
            try:
                value = yield from m._on_chip(fn, "inference", info)
            except Exception as exc:  # a bad request fails alone; the queue goes on
                done.fail(exc)
                continue
            latency = self.env.now - submitted_s
            s = self.stats
            s.requests += 1
            s.latency_s_sum += latency
            s.latency_s_max = max(s.latency_s_max, latency)
            done.succeed(
                InferenceResult(
                    value, submitted_s, info["measured_s"], self.env.now, info["energy_pj"]
                )
            )
