"""The twin client's transport pieces: whether the twin answered lately (``Reachability``,
shared by a client and its patient view) and one open ``Session`` stream (``SessionStream``:
device operations out and their answers back in order, with a watchdog for a hung twin)."""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable

import grpc

from pcmtwin.v1 import twin_pb2, twin_pb2_grpc


class Reachability:
    """Whether a twin answered lately, shared by a client and its patient view."""

    def __init__(self, hook: Callable[[bool], None] | None) -> None:
        self.reachable = True
        self.since: float | None = None
        self.hook = hook
        self._lock = threading.Lock()

    def update(self, ok: bool) -> None:
        with self._lock:
            if ok == self.reachable:
                return
            self.reachable = ok
            self.since = None if ok else time.monotonic()
        if self.hook is not None:
            self.hook(ok)


class SessionBroken(Exception):
    """The session stream failed: its operation must be sent again another way."""


END = object()


class SessionStream:
    """One open ``Session`` stream: a request out, its response back, in order.

    gRPC reads the requests from ``_outbox`` in its own thread; the caller reads the
    response. A watchdog thread cancels the stream when an operation goes unanswered past its
    deadline (a hung twin), which turns the wait into a broken session."""

    def __init__(self, stub: twin_pb2_grpc.CrossbarTwinStub) -> None:
        self._outbox: queue.SimpleQueue = queue.SimpleQueue()
        self._call = stub.Session(iter(self._outbox.get, END))
        self._deadline = float("inf")  # of the operation in flight (monotonic s)
        self._closed = threading.Event()
        self._timed_out = False
        threading.Thread(target=self._watch, name="twin-session-watchdog", daemon=True).start()

    def _watch(self) -> None:
        while not self._closed.wait(0.5):
            if time.monotonic() > self._deadline:
                self._timed_out = True
                self._call.cancel()
                return

    def request(self, request: twin_pb2.SessionRequest, timeout_s: float):
        self._deadline = time.monotonic() + max(timeout_s, 0.0)
        self._outbox.put(request)
        try:
            return next(self._call)
        except StopIteration:
            raise SessionBroken("the twin ended the session") from None
        except grpc.RpcError as exc:
            if self._timed_out:
                raise SessionBroken(f"no answer within {timeout_s:.3g} s") from None
            raise SessionBroken(f"{exc.code().name}: {exc.details()}") from None
        finally:
            self._deadline = float("inf")

    def close(self) -> None:
        self._closed.set()
        self._outbox.put(END)  # the stream's end: the server finishes the session
        self._call.cancel()  # and drop whatever is still in flight
