"""A fair, reentrant lock: the chip host's one lock around its simulation.

Python's ``threading.RLock`` is not fair: a thread that releases it and takes it again at
once (an AdvanceTime running slice after slice) usually wins against threads that have been
waiting, so a GetStatus or an Infer sent during a long AdvanceTime could wait for seconds.
:class:`FairLock` hands the lock to waiting threads in the order they asked for it, so a call
that arrives during an AdvanceTime runs after the slice under way. It is reentrant (the
owner may take it again) and ``acquire`` takes a ``timeout``, like ``RLock``'s.

:func:`acquire_for_call` is how a call waits for the lock: it gives up at its deadline or when
the client cancels, and refuses at once when the twin is known to be unreachable.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable

from controller.host.errors import Cancelled, DeadlineExceeded

#: Wall seconds between two looks at the deadline, the twin and cancellation while a call
#: waits for the lock.
LOCK_POLL_S = 0.05


class FairLock:
    """A reentrant lock granted first come, first served (see the module docstring)."""

    def __init__(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._owner: int | None = None
        self._depth = 0
        self._queue: deque[object] = deque()

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        me = threading.get_ident()
        with self._cond:
            if self._owner == me:
                self._depth += 1
                return True
            if self._owner is None and not self._queue:
                self._owner, self._depth = me, 1
                return True
            if not blocking:
                return False
            ticket = object()
            self._queue.append(ticket)
            granted = self._cond.wait_for(
                lambda: self._owner is None and self._queue[0] is ticket,
                None if timeout < 0 else timeout,
            )
            if not granted:
                self._queue.remove(ticket)
                self._cond.notify_all()  # the next in line may be free to go now
                return False
            self._queue.popleft()
            self._owner, self._depth = me, 1
            return True

    def release(self) -> None:
        with self._cond:
            if self._owner != threading.get_ident():
                raise RuntimeError("cannot release a lock this thread does not hold")
            self._depth -= 1
            if self._depth == 0:
                self._owner = None
                self._cond.notify_all()

    def held(self) -> bool:
        """Whether the calling thread holds the lock."""
        return self._owner == threading.get_ident()

    def __enter__(self) -> FairLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def acquire_for_call(
    lock: FairLock,
    deadline: float | None = None,
    cancelled: Callable[[], bool] | None = None,
    check: Callable[[], None] | None = None,
) -> None:
    """Take ``lock`` for a call: ``check()`` (raises to refuse: the twin is unreachable)
    first and while waiting; ``DeadlineExceeded`` past ``deadline`` (monotonic), ``Cancelled``
    once ``cancelled()``."""
    if check is not None:
        check()
    while not lock.acquire(timeout=LOCK_POLL_S):
        if check is not None:
            check()
        if deadline is not None and time.monotonic() > deadline:
            raise DeadlineExceeded("deadline reached while the chip was busy with another call")
        if cancelled is not None and cancelled():
            raise Cancelled("the call was cancelled while the chip was busy")
