"""The chip host's event streams: one queue of ledger events per subscriber, and the set.

A :class:`Subscription` is what one ``StreamEvents`` call reads: the kept events after its
``after_seq``, then every new one, in order, until it is closed (its network was replaced,
unloaded or lost: ``ended`` says why; it fell more than ``SUBSCRIBER_QUEUE`` events behind:
``overflow``; the host closed). :class:`Subscribers` publishes each new ledger event to every
subscription (on the thread that runs the simulation, under the host's lock) and forgets a
subscription when its reader stops.
"""

from __future__ import annotations

import contextlib
import queue
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from controller.firmware import Event

#: Events a slow stream subscriber may fall behind by before its stream is ended.
SUBSCRIBER_QUEUE = 100_000


class Subscription:
    """A live view of the ledger (see the module docstring); ``on_end(self)`` is called when
    its reader stops."""

    _END = object()

    def __init__(self, on_end: Callable[[Subscription], None]) -> None:
        self.on_end = on_end
        self.queue: queue.Queue = queue.Queue(maxsize=SUBSCRIBER_QUEUE)
        self.overflow = False
        #: why its network's events ended (replaced, unloaded, lost), None: not ended so
        self.ended: str | None = None
        self.closed = threading.Event()

    @property
    def replaced(self) -> bool:
        """Its network's events ended (replaced, unloaded or lost): the next network's events
        start again from seq 1."""
        return self.ended is not None

    def push(self, ev: Event) -> None:
        try:
            self.queue.put_nowait(ev)
        except queue.Full:
            self.overflow = True
            self.close()

    def close(self) -> None:
        self.closed.set()
        with contextlib.suppress(queue.Full):
            self.queue.put_nowait(self._END)

    def events(self, poll_s: float = 0.25, alive: Any = None) -> Iterator[Event]:
        """Events in order until closed; ``alive()`` False (a cancelled call) stops it too."""
        try:
            while True:
                try:
                    item = self.queue.get(timeout=poll_s)
                except queue.Empty:
                    if alive is not None and not alive():
                        return
                    continue
                if item is self._END:
                    return
                yield item
        finally:
            self.on_end(self)


class Subscribers:
    """Every open subscription of a host; ``lock`` is the host's (the simulation's) lock."""

    def __init__(self, lock: Any) -> None:
        self._lock = lock
        self._subs: list[Subscription] = []

    def add(self, replay: Iterable[Event]) -> Subscription:
        """A new subscription holding ``replay`` first (call under the lock)."""
        sub = Subscription(self._remove)
        for ev in replay:
            sub.push(ev)
        self._subs.append(sub)
        return sub

    def publish(self, ev: Event) -> None:
        for sub in self._subs:
            sub.push(ev)

    def end_all(self, reason: str | None) -> None:
        """Close every subscription; ``reason``: why its network's events ended (None: the
        host closes)."""
        for sub in list(self._subs):
            sub.ended = reason
            sub.close()

    def _remove(self, sub: Subscription) -> None:
        with self._lock:
            if sub in self._subs:
                self._subs.remove(sub)
