"""Device time of the chip host: AdvanceTime in slices of wall time, and waiting for the
model to do a piece of work (run it, or, in realtime mode, wait for the driver to).

:class:`TimeCalls` is a part of :class:`~controller.host.chip_host.ChipHost` (its base class):
it holds the calls that move device time, and relies on the host's lock, loaded network and
status (the attributes and methods it names below). Threads and the lock are described in
:mod:`~controller.host.chip_host`; progress records in :mod:`~controller.host.advancing`.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import simpy

from controller.host.advancing import (
    CANCELLED,
    DEADLINE_EXCEEDED,
    DONE,
    FAILED,
    RUNNING,
    AdvanceProgress,
    advance_target,
)
from controller.host.errors import Aborted, Cancelled, DeadlineExceeded
from device_twin.errors import FailedPrecondition

if TYPE_CHECKING:
    import contextlib

    from controller.firmware import ChipModel
    from controller.host.chip_host import _Loaded
    from controller.host.locking import FairLock

#: Wall seconds an AdvanceTime runs the model before it lets other calls in and checks its
#: deadline and whether it was cancelled.
ADVANCE_SLICE_WALL_S = 0.05
#: The latest device time a host may ask for (about 31,700 years): beyond it float64 time
#: steps are coarser than 0.1 ms, a thousand SET pulses.
MAX_DEVICE_TIME_S = 1e12


class TimeCalls:
    """AdvanceTime, and waiting for the model (a base class of ``ChipHost``)."""

    # what the host provides
    realtime: float | None
    _lock: FairLock
    _loaded: _Loaded | None
    _advancing: bool
    _acquire: Callable[..., None]
    _enter: Callable[..., contextlib.AbstractContextManager[None]]
    _model: Callable[[], ChipModel]
    _check_running: Callable[[ChipModel], None]
    _publish: Callable[[], None]
    _status_locked: Callable[[], dict[str, Any]]

    def advance(self, to_s: float | None = None, by_s: float | None = None,
                deadline: float | None = None,
                cancelled: Callable[[], bool] | None = None) -> dict[str, Any]:  # fmt: skip
        """Advance device time to ``to_s`` (or by ``by_s``); the model runs in slices of wall
        time, and stops after the first slice past ``deadline`` (a monotonic time) or once
        ``cancelled()`` (the client went away). Its progress, and where it stopped, is in
        ``status()["advance"]``.

        Everything due before the target happens; what is due exactly at it (a monitor
        wake-up) happens when time next moves on, after the requests made at the target, so
        that an inference at T sees the chip before the correction scheduled at T."""
        with self._enter(deadline, cancelled):
            model = self._model()
            if self.realtime is not None:
                raise FailedPrecondition(
                    "time is paced against the wall clock (--realtime): it cannot be advanced"
                )
            self._check_running(model)
            target = advance_target(model.env.now, to_s, by_s, MAX_DEVICE_TIME_S)
            loaded = self._loaded
            assert loaded is not None
            if self._advancing:
                p = loaded.advance
                raise Aborted(f"another AdvanceTime is running (from {p.from_s:g} s to "
                              f"{p.target_s:g} s): wait for it, or cancel it")  # fmt: skip
            self._advancing = True
            progress = loaded.advance = AdvanceProgress.start(model.env.now, target,
                                                              model.monitor.wakeups)  # fmt: skip
        try:
            return self._advance_slices(loaded, target, deadline, cancelled)
        finally:
            with self._lock:
                self._advancing = False
                if progress.state == RUNNING:  # stopped by an error of the host's
                    progress.finish(FAILED, progress.reached_s, model.monitor.wakeups)

    def _advance_slices(self, loaded: _Loaded, target: float, deadline: float | None,
                        cancelled: Callable[[], bool] | None) -> dict[str, Any]:  # fmt: skip
        model, progress = loaded.model, loaded.advance

        def stop(state: str, why: str, error: type[DeadlineExceeded]) -> DeadlineExceeded:
            with self._lock:
                progress.finish(state, model.env.now, model.monitor.wakeups)
            return error(f"{why}: advanced to {progress.reached_s!r} s of {target!r} s (from "
                         f"{progress.from_s!r} s)", progress.error_info())  # fmt: skip

        while True:
            try:
                self._acquire(deadline, cancelled, need_twin=False)
            except Cancelled:  # (a subclass: first)
                raise stop(CANCELLED, "the call was cancelled", Cancelled) from None
            except DeadlineExceeded:
                raise stop(DEADLINE_EXCEEDED, "deadline reached", DeadlineExceeded) from None
            try:
                if self._loaded is not loaded:
                    raise Aborted("the network was replaced or unloaded while time advanced")
                # what is due exactly at the target waits: a request made now (at the
                # target) sees the chip before the corrections due then
                try:
                    reached = model.advance(target, inclusive=False, wall_s=ADVANCE_SLICE_WALL_S)
                except Exception:
                    progress.finish(FAILED, model.env.now, model.monitor.wakeups)
                    self._check_running(model)
                    raise
                progress.update(model.env.now, model.monitor.wakeups)
                if reached:
                    progress.finish(DONE, model.env.now, model.monitor.wakeups)
                    return self._status_locked()
                self._publish()
            finally:
                self._lock.release()
            # the deadline first: a client whose deadline passed has gone away too
            if deadline is not None and time.monotonic() > deadline:
                raise stop(DEADLINE_EXCEEDED, "deadline reached", DeadlineExceeded)
            if cancelled is not None and cancelled():
                raise stop(CANCELLED, "the call was cancelled", Cancelled)

    def _wait(self, model: ChipModel, ev: simpy.Event, deadline: float | None) -> Any:
        """Have ``ev`` processed: run the model (fast) or wait for the driver (realtime)."""
        if self.realtime is None:
            with self._enter(deadline, need_twin=False):
                try:
                    return model.wait(ev)
                except Exception:
                    self._check_running(model)
                    raise
        done = threading.Event()
        with self._lock:
            if ev.processed:
                done.set()
            else:
                ev.callbacks.append(lambda _e: done.set())
        while not done.wait(0.05):
            if model.error is not None:
                with self._lock:
                    self._check_running(model)
            if deadline is not None and time.monotonic() > deadline:
                raise DeadlineExceeded("deadline reached before the chip did the work")
        if not ev.ok:
            raise ev.value
        return ev.value
