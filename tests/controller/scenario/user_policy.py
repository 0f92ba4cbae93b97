"""A user policy loaded by dotted path in the scenario tests (``tests.controller.scenario.user_policy``)."""

from __future__ import annotations

from controller.firmware.policies import BasePolicy, ChipView


class DailyCheck(BasePolicy):
    """Wakes every ``interval_s`` and corrects nothing: enough to check loading by path."""

    name = "daily_check"

    def __init__(self, interval_s: float = 86400.0) -> None:
        if not interval_s > 0:
            raise ValueError(f"interval_s must be > 0, got {interval_s!r}")
        self.interval_s = float(interval_s)

    def next_wake_s(self, view: ChipView) -> float | None:
        return self.interval_s


class NegativeInterval(BasePolicy):
    """Asks to wake up in the past: the controller must stop the run and name the policy."""

    name = "negative_interval"

    def next_wake_s(self, view: ChipView) -> float | None:
        return -1.0
