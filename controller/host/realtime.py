"""The realtime driver of a chip host: runs the model back to back in short slices of wall
time, paced against the wall clock by the environment (``--realtime``).

Every slice runs under the host's lock, so calls get in between slices. ``stop()`` is called
under that lock; the driver checks its stop event under the lock too, so once ``stop`` has
returned it never touches its model again (joining it there would deadlock: it may be waiting
for the lock).
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from controller.firmware import PolicyError

log = logging.getLogger(__name__)

#: Wall seconds per slice of the realtime driver (calls wait at most this for the lock).
REALTIME_SLICE_WALL_S = 0.05


class RealtimeDriver:
    """Drives ``model`` at ``factor`` simulated seconds per wall second (see the module
    docstring); ``lock`` is the host's."""

    def __init__(self, lock: Any, model: Any, factor: float) -> None:
        self.lock = lock
        self.model = model
        self.slice_s = REALTIME_SLICE_WALL_S * factor
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._drive, name="chip-host-realtime",
                                       daemon=True)  # fmt: skip
        self.thread.start()

    def stop(self) -> threading.Thread:
        """Stop (under the lock); returns the thread, to join outside the lock if need be."""
        self._stop.set()
        return self.thread

    def _drive(self) -> None:
        model, stop = self.model, self._stop
        with self.lock:
            if stop.is_set():
                return
            model.env.sync()
        while True:
            with self.lock:
                if stop.is_set():
                    return
                if model.error is None:
                    try:
                        model.advance(model.env.now + self.slice_s, resync=False)
                    except PolicyError:
                        pass  # model.error holds it: status reports it until SetPolicy
                    except Exception as exc:  # e.g. the chip host closed: stop, and say why
                        log.warning("realtime run stopped: %s", exc)
                        if model.error is None:
                            model.fail(exc)
                stopped = model.error is not None
            if stopped:
                stop.wait(REALTIME_SLICE_WALL_S)
