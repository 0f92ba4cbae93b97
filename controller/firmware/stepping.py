"""Moving a SimPy environment forward: to a device time or until an event, within a budget.

One loop serves every way the chip model moves time (a scenario's run to its duration, a
host's bounded AdvanceTime, waiting for an inference, the realtime driver's slices): it steps
the environment until the awaited event has been processed, and stops early when the run has
``failed()`` (stop on error) or when the wall clock passes ``deadline`` (a
``time.monotonic()`` instant; None: no budget). A realtime environment's ``step`` sleeps until
each event is due, so the same loop paces against the wall clock.

Advancing to a time T puts a no-op *urgent* event at T, as ``env.run(until=T)`` does: it is
processed before the events due at T, so ``inclusive=False`` stops with everything before T
done and everything due at T still waiting (a host's request made at T then runs first).
"""

from __future__ import annotations

import time
from collections.abc import Callable

import simpy
from simpy.core import EmptySchedule
from simpy.events import URGENT


def _out_of_time(deadline: float | None) -> bool:
    # every step: a look at the clock costs ~0.1 us, a step from microseconds to the
    # milliseconds of its twin calls (a few dozen of those between looks stalled a host's
    # other calls for a second)
    return deadline is not None and time.monotonic() > deadline


def step_until(
    env: simpy.Environment,
    until: simpy.Event,
    failed: Callable[[], bool],
    deadline: float | None = None,
) -> bool:
    """Process events until ``until`` has been processed, the run has ``failed()`` or nothing
    is left to happen. False if the wall clock passed ``deadline`` first (call again to go on).
    """
    while not until.processed and not failed():
        if _out_of_time(deadline):
            return False
        try:
            env.step()
        except EmptySchedule:
            return True
    return True


def urgent_event_at(env: simpy.Environment, t: float) -> simpy.Event:
    """A no-op event at device time ``t``, processed before the events due at ``t``."""
    ev = env.event()
    ev._ok, ev._value = True, None
    env.schedule(ev, URGENT, t - env.now)
    return ev


def advance_to(
    env: simpy.Environment,
    t: float,
    inclusive: bool,
    failed: Callable[[], bool],
    deadline: float | None = None,
) -> bool:
    """Process every event due before device time ``t`` (``inclusive``: and those due at
    ``t``, including the ones they schedule at ``t``). False if the wall clock passed
    ``deadline`` first (the no-op event at ``t`` is then left behind: harmless)."""
    if (
        t > env.now
        and not failed()
        and not step_until(env, urgent_event_at(env, t), failed, deadline)
    ):
        return False
    while inclusive and not failed() and env.peek() <= t:
        if _out_of_time(deadline):
            return False
        env.step()
    return True
