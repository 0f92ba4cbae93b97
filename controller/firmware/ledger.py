"""The controller's ledger: one event per action (time, kind, tile, devices, pulses, energy).

An action is what the firmware does as one unit: programming a tile, probing a tile at a
wake-up, a correction job, an inference, an evaluation. Its ``energy_pj`` is the sum of the
energies the twin reported for the operations it made (the same numbers as the twin's own
ledger; ``twin_energy_by_op`` keeps them by operation kind too); ``controller_energy_pj`` is the
controller's own digital work (:mod:`controller.firmware.config`). Events are numbered in the order
they end (``seq``), which is also the order of ``end_s``, the device time they ended at.

Every event is tagged with the policy running when it was recorded (``Ledger.policy``, set by
the model when it installs a policy). Its kind is one of
:data:`~controller.firmware.quantities.EVENT_KINDS`.

Subscribers (``subscribe``) are called with each new event, in order, on the thread that runs
the simulation.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from controller.firmware.quantities import EVENT_KINDS
from device_twin.chip import OpResult


@dataclass(slots=True)
class Event:
    """One action of the firmware."""

    seq: int
    kind: str  # one of controller.firmware.quantities.EVENT_KINDS
    start_s: float  # device time the action began (got its tiles)
    end_s: float  # device time the action ended
    tile: int  # -1: not one tile
    devices: int
    pulses: int
    energy_pj: float  # twin energy of the action's operations
    controller_energy_pj: float  # the controller's digital work
    policy: str = ""
    detail: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        # by hand: dataclasses.asdict deep-copies every detail value, a real cost over the
        # tens of thousands of events of a year
        return {
            "seq": self.seq, "kind": self.kind, "start_s": self.start_s, "end_s": self.end_s,
            "tile": self.tile, "devices": self.devices, "pulses": self.pulses,
            "energy_pj": self.energy_pj, "controller_energy_pj": self.controller_energy_pj,
            "policy": self.policy, "detail": dict(self.detail),
        }  # fmt: skip


@dataclass
class KindTotals:
    """Running totals of one event kind."""

    events: int = 0
    devices: int = 0
    pulses: int = 0
    energy_pj: float = 0.0
    controller_energy_pj: float = 0.0
    duration_s: float = 0.0


class OpAccumulator:
    """Collects the twin operations of one action (their energy, latency and pulses)."""

    __slots__ = ("_ledger", "energy_pj", "latency_s", "pulses", "ops")

    def __init__(self, ledger: Ledger) -> None:
        self._ledger = ledger
        self.energy_pj = 0.0
        self.latency_s = 0.0
        self.pulses = 0
        self.ops = 0

    def add(self, result: OpResult) -> OpResult:
        self.energy_pj += result.energy_pj
        self.latency_s += result.latency_s
        self.pulses += result.pulses
        self.ops += 1
        self._ledger._record_op(result)
        return result


class Ledger:
    """Events and running totals (see the module docstring)."""

    def __init__(self, keep_events: bool = True) -> None:
        self.keep_events = keep_events
        #: the name of the policy running: every new event is tagged with it
        self.policy = ""
        self.events: list[Event] = []
        self.totals: dict[str, KindTotals] = {}
        self.twin_energy_by_op: dict[str, float] = {}
        self.twin_calls_by_op: dict[str, int] = {}
        self._seq = 0
        self._subscribers: list[Callable[[Event], None]] = []

    # --- recording ------------------------------------------------------------------------
    def action(self) -> OpAccumulator:
        return OpAccumulator(self)

    def _record_op(self, r: OpResult) -> None:
        self.twin_energy_by_op[r.kind] = self.twin_energy_by_op.get(r.kind, 0.0) + r.energy_pj
        self.twin_calls_by_op[r.kind] = self.twin_calls_by_op.get(r.kind, 0) + 1

    def add(
        self,
        kind: str,
        start_s: float,
        end_s: float,
        tile: int = -1,
        devices: int = 0,
        ops: OpAccumulator | None = None,
        controller_energy_pj: float = 0.0,
        detail: dict[str, Any] | None = None,
    ) -> Event:
        """Record a finished action; its twin energy and pulses come from ``ops``."""
        if kind not in EVENT_KINDS:
            raise ValueError(f"unknown event kind {kind!r}: add it to quantities.EVENT_KINDS")
        self._seq += 1
        ev = Event(
            seq=self._seq,
            end_s=float(end_s),
            kind=kind,
            tile=int(tile),
            devices=int(devices),
            pulses=ops.pulses if ops else 0,
            energy_pj=ops.energy_pj if ops else 0.0,
            controller_energy_pj=float(controller_energy_pj),
            start_s=float(start_s),
            policy=self.policy,
            detail=detail or {},
        )
        t = self.totals.setdefault(kind, KindTotals())
        t.events += 1
        t.devices += ev.devices
        t.pulses += ev.pulses
        t.energy_pj += ev.energy_pj
        t.controller_energy_pj += ev.controller_energy_pj
        t.duration_s += ev.end_s - ev.start_s
        if self.keep_events:
            self.events.append(ev)
        for fn in list(self._subscribers):
            fn(ev)
        return ev

    # --- reading --------------------------------------------------------------------------
    @property
    def last_seq(self) -> int:
        return self._seq

    def subscribe(self, fn: Callable[[Event], None]) -> Callable[[], None]:
        """Call ``fn(event)`` for every new event; returns a function that unsubscribes."""
        self._subscribers.append(fn)

        def unsubscribe() -> None:
            if fn in self._subscribers:
                self._subscribers.remove(fn)

        return unsubscribe

    def events_after(self, seq: int) -> list[Event]:
        """Kept events with a sequence number above ``seq`` (needs ``keep_events``)."""
        if not self.events:
            return []
        first = self.events[0].seq
        return self.events[max(seq + 1 - first, 0) :]

    @property
    def twin_energy_pj(self) -> float:
        return sum(t.energy_pj for t in self.totals.values())

    @property
    def controller_energy_pj(self) -> float:
        return sum(t.controller_energy_pj for t in self.totals.values())

    def energy_by_kind_pj(self) -> dict[str, float]:
        """Twin plus controller energy, by event kind."""
        return {k: t.energy_pj + t.controller_energy_pj for k, t in sorted(self.totals.items())}

    def totals_dict(self) -> dict[str, dict[str, float]]:
        return {k: asdict(t) for k, t in sorted(self.totals.items())}
