"""User policies that misbehave, loaded by dotted path in the ChipHost tests."""

from __future__ import annotations

from controller.firmware.policies import ThresholdPolicy


class NegativeInterval(ThresholdPolicy):
    """Wakes once after an hour, then asks to wake -5 s later."""

    name = "negative_interval"

    def __init__(self) -> None:
        super().__init__(interval_s=3600.0)
        self.calls = 0

    def next_wake_s(self, view):
        self.calls += 1
        return 3600.0 if self.calls == 1 else -5.0


class RaisesInDecide(ThresholdPolicy):
    """Raises at its first decision."""

    name = "raises_in_decide"

    def decide(self, view, report):
        raise ZeroDivisionError("firmware bug")
