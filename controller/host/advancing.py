"""What an AdvanceTime has done: its progress while it runs, and where it stopped.

The chip host keeps one :class:`AdvanceProgress` per network, for the AdvanceTime running or
the last one; GetStatus reports it (``ChipStatus.advance``), so a host can follow a long
advance and learn where a cancelled one, or one stopped at its deadline, left device time.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field

from device_twin.errors import FailedPrecondition, InvalidArgument

#: The states of an AdvanceTime (``pcmtwin.v1.AdvanceState`` without the prefix).
NONE, RUNNING, DONE, DEADLINE_EXCEEDED, CANCELLED, FAILED = (
    "UNSPECIFIED", "RUNNING", "DONE", "DEADLINE_EXCEEDED", "CANCELLED", "FAILED",
)  # fmt: skip


@dataclass
class AdvanceProgress:
    """One AdvanceTime: from where to where, how far it got, in how much wall time."""

    state: str = NONE
    from_s: float = 0.0
    target_s: float = 0.0
    reached_s: float = 0.0
    monitor_wakeups: int = 0  # wake-ups it went through
    wall_s: float = 0.0
    _wall0: float = field(default=0.0, repr=False)
    _wakeups0: int = field(default=0, repr=False)

    @classmethod
    def start(cls, from_s: float, target_s: float, wakeups: int) -> AdvanceProgress:
        return cls(RUNNING, from_s, target_s, from_s, 0, 0.0, time.monotonic(), wakeups)

    @property
    def fraction(self) -> float:
        span = self.target_s - self.from_s
        if self.state == DONE or span <= 0:
            return 1.0 if self.state == DONE else 0.0
        return min(max((self.reached_s - self.from_s) / span, 0.0), 1.0)

    def update(self, reached_s: float, wakeups: int) -> None:
        self.reached_s = float(reached_s)
        self.monitor_wakeups = int(wakeups) - self._wakeups0
        self.wall_s = time.monotonic() - self._wall0

    def finish(self, state: str, reached_s: float, wakeups: int) -> None:
        self.update(reached_s, wakeups)
        self.state = state

    def as_dict(self) -> dict[str, float | int | str]:
        d = {k: v for k, v in asdict(self).items() if not k.startswith("_")}
        if self.state == RUNNING:  # its wall time so far
            d["wall_s"] = time.monotonic() - self._wall0
        return {**d, "fraction": self.fraction}

    def error_info(self) -> tuple[str, dict[str, str]]:
        """Where it stopped, as the ``google.rpc.ErrorInfo`` of a refusal."""
        facts = {"from_s": self.from_s, "reached_s": self.reached_s, "target_s": self.target_s}
        return "ADVANCE_STOPPED", {k: repr(float(v)) for k, v in facts.items()}


def advance_target(now: float, to_s: float | None, by_s: float | None, latest_s: float) -> float:
    """The device time an AdvanceTime asks for (``to_s``, or ``by_s`` from ``now``), checked:
    finite, not before now, not beyond ``latest_s``."""
    if (to_s is None) == (by_s is None):
        raise InvalidArgument("give exactly one of to_s or by_s", field="target")
    field = "to_s" if to_s is not None else "by_s"
    target = float(to_s) if to_s is not None else now + float(by_s)  # type: ignore[arg-type]
    if not math.isfinite(target) or (by_s is not None and by_s < 0):
        given = to_s if to_s is not None else by_s
        raise InvalidArgument(f"the target time must be finite and not in the past, got "
                              f"{field}={given!r}", field=field)  # fmt: skip
    if target > latest_s:
        raise InvalidArgument(
            f"target time {target!r} s is beyond the latest device time this host "
            f"simulates, {latest_s:g} s", field=field,
        )  # fmt: skip
    if target < now:
        raise FailedPrecondition(
            f"time going backwards: to_s={target!r} is before the current time {now!r}",
            field=field,
        )
    return target
