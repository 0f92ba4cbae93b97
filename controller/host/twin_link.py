"""The chip host's link to its twin: the twin its model uses, and a watch on the twin.

:class:`ModelTwin` is the twin as a loaded network's model sees it: the host's own client
while the network is being loaded (a load fails, and changes nothing, if the twin goes away),
then the client's patient view (``TwinClient.patient``) once the network runs, so that a twin
that stops or restarts only makes the model wait: the run goes on where it was when the twin
is back, and a transport error never becomes a stopped run.

:class:`TwinWatch` checks the twin's health every ``interval_s`` (the calls the model makes
tell the client too) and, when the twin answers again after an outage, asks ``on_back`` to
check that the twin still holds the chip (a twin restarted without its state directory does
not); at the other looks it asks ``on_up`` for the same check (the host makes it only while
its model is idle), so that a twin restarted between two looks is noticed too. An
in-process twin (``ChipRegistry``) is never lost: it has neither ``patient`` nor ``ping``,
and nothing is watched.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from controller.host.errors import Unavailable

log = logging.getLogger(__name__)

#: Wall seconds between two health checks of the twin.
WATCH_INTERVAL_S = 1.0
#: Wall seconds a health check may take before the twin counts as not answering. A twin that
#: is gone refuses the connection at once; this only bounds a twin that hangs, and is long
#: enough that a busy machine (or a twin busy with a large MVM) is not taken for an outage.
PING_TIMEOUT_S = 10.0


class ModelTwin:
    """The twin a model calls (see the module docstring): ``bounded`` until ``running()``,
    then ``patient``."""

    def __init__(self, bounded: Any, patient: Any) -> None:
        self.bounded, self.patient = bounded, patient
        self.use = bounded

    def running(self) -> None:
        """The network is loaded: from now on, wait for a lost twin instead of failing."""
        self.use = self.patient

    def __getattr__(self, name: str) -> Any:
        return getattr(self.use, name)


def patient_view(twin: Any) -> Any:
    """The twin's patient view, if it has one (a ``TwinClient``), else the twin itself."""
    patient = getattr(twin, "patient", None)
    return patient() if callable(patient) else twin


def reachable(twin: Any) -> tuple[bool, float | None]:
    """Whether the twin answered lately, and since when (``time.monotonic()``) it has not."""
    return bool(getattr(twin, "reachable", True)), getattr(twin, "unreachable_since", None)


def check_reachable(twin: Any) -> None:
    """``Unavailable`` while the twin is known not to answer (a call that needs the chip is
    refused at once rather than queued behind a model that waits for the twin)."""
    up, since = reachable(twin)
    if not up:
        away = "" if since is None else f" for {time.monotonic() - since:.0f} s"
        raise Unavailable(
            f"the twin at {getattr(twin, 'address', '?')} cannot be reached{away}: the chip "
            "waits for it and goes on where it was when it is back; retry"
        )


class TwinWatch:
    """Checks the twin's health in the background (see the module docstring)."""

    def __init__(self, twin: Any, on_back: Callable[[], None],
                 on_up: Callable[[], None] | None = None,
                 interval_s: float = WATCH_INTERVAL_S) -> None:  # fmt: skip
        self.twin = twin
        self.on_back = on_back
        self.on_up = on_up
        self.interval_s = interval_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        if callable(getattr(twin, "ping", None)):
            self._thread = threading.Thread(target=self._run, name="chip-host-twin-watch",
                                            daemon=True)  # fmt: skip
            self._thread.start()

    def _run(self) -> None:
        was_up = True
        while not self._stop.wait(self.interval_s):
            try:
                up = bool(self.twin.ping(timeout_s=PING_TIMEOUT_S))
            except Exception:  # a twin that fails its check is not up
                up = False
            if up and not was_up:
                log.info("the twin at %s answers again", getattr(self.twin, "address", "?"))
                try:
                    self.on_back()
                except Exception:  # keep watching: the next outage needs it too
                    log.exception("checking the twin after an outage failed")
            elif up and self.on_up is not None:
                try:
                    self.on_up()
                except Exception as exc:  # the twin went away meanwhile: the next look says
                    log.debug("checking the chip on the twin failed: %s", exc)
            elif not up and was_up:
                log.warning("the twin at %s does not answer: the chip waits for it",
                            getattr(self.twin, "address", "?"))  # fmt: skip
            was_up = up

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join()
