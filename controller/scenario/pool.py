"""Where the (variant, seed) runs run: one after the other in this process, or in a pool of
worker processes, each with a twin of its own (embedded, or the given address).

Results do not depend on which worker ran what: every run has its own chip and seed. Workers
report progress through a queue; :func:`run_all` hands each result to its caller as soon as
the run finishes (the runner checkpoints it then).
"""

from __future__ import annotations

import multiprocessing as mp
import queue as queue_mod
import signal
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from contextlib import contextmanager
from multiprocessing.util import Finalize
from typing import Any

import torch
from threadpoolctl import threadpool_limits

from controller.scenario.prepare import PreparedVariant
from controller.scenario.progress import ProgressFn
from controller.scenario.results import SeedResult
from controller.scenario.seed_run import run_seed
from controller.scenario.twin import twin_client

#: Torch threads while simulating (see ``sim_threads``).
SIM_TORCH_THREADS = 1

#: One (variant, seed) run to do: its index in the run's task list, its variant, its seed.
Task = tuple[int, PreparedVariant, int]


@contextmanager
def sim_threads(n: int = SIM_TORCH_THREADS) -> Iterator[None]:
    """Torch intra-op threads and numpy's BLAS threads while simulating: the MVMs and reads
    are small, and on a busy machine a second thread costs far more in waking up than it saves
    (measured: a 72-row probe takes 2 ms with one thread and 47 ms with two on 2 loaded cores;
    a spare BLAS thread spinning after the energy model's small dot products doubled the CPU
    time of a wake-up at the same wall time, bench/README.md)."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        with threadpool_limits(limits=n, user_api="blas"):
            yield
    finally:
        torch.set_num_threads(before)


# --- Ctrl-C -------------------------------------------------------------------------------------
@contextmanager
def children_ignore_sigint() -> Iterator[None]:
    """Processes started inside ignore SIGINT, as ``SIG_IGN`` survives ``exec`` (a handler
    would not). A terminal's Ctrl-C reaches the whole process group: the workers, busy
    importing torch or in a run, would each print a traceback. This process alone hears it,
    and stops them (:func:`stop_children`). A Ctrl-C while the workers are being started
    (the submits: milliseconds) is not heard."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    before = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, before)


def stop_children(pool: ProcessPoolExecutor | None, grace_s: float = 2.0) -> None:
    """Drop the runs not started and end every child process now (SIGTERM, then SIGKILL
    after ``grace_s``): what they were doing is lost, what they finished is checkpointed."""
    if pool is not None:
        pool.shutdown(wait=False, cancel_futures=True)
    children = mp.active_children()
    for child in children:
        child.terminate()
    deadline = time.monotonic() + grace_s
    for child in children:
        child.join(max(0.0, deadline - time.monotonic()))
        if child.is_alive():
            child.kill()
            child.join(1.0)


# --- worker processes --------------------------------------------------------------------------
# Each worker process runs seed-runs with a twin of its own (embedded, or the given address)
# and reports progress through a queue.
_worker: dict[str, Any] = {}


def _worker_init(twin_address: str | None, queue: Any) -> None:
    torch.set_num_threads(SIM_TORCH_THREADS)
    threadpool_limits(limits=SIM_TORCH_THREADS, user_api="blas")  # for the worker's life
    ctx = twin_client(twin_address)
    _worker["client"] = ctx.__enter__()
    _worker["queue"] = queue
    # Close the client (and stop the embedded twin) when the worker's work loop ends, BEFORE
    # the interpreter joins non-daemon threads: an open session stream holds one of the
    # embedded twin's server threads, and joining it first (``atexit`` runs after that join)
    # hangs the worker, and the pool's shutdown with it, until the stream times out.
    Finalize(None, ctx.__exit__, args=(None, None, None), exitpriority=10)


def _worker_run(prep: PreparedVariant, k: int, scenario_seed: int) -> SeedResult:
    queue = _worker["queue"]
    last = [0.0]

    def report(variant: str, kk: int, now_s: float, end_s: float) -> None:
        # a few updates per second are plenty for a progress bar
        if time.monotonic() - last[0] > 0.25 or now_s >= end_s:
            last[0] = time.monotonic()
            queue.put((variant, kk, now_s, end_s))

    return run_seed(_worker["client"], prep, k, scenario_seed, report if queue else None)


def run_all(
    tasks: list[Task], twin_address: str | None, workers: int, report: ProgressFn | None,
    on_result: Callable[[int, SeedResult], None],
) -> None:  # fmt: skip
    """Run ``tasks``; ``on_result(index, result)`` is called (in this process) as each one
    finishes. If a run fails, the runs not yet started are dropped, those running are
    finished (and reported), then the first error is raised."""
    if workers <= 1 or len(tasks) <= 1:
        if not tasks:
            return
        with twin_client(twin_address) as client, sim_threads():
            for i, p, k in tasks:
                on_result(i, run_seed(client, p, k, p.variant.core.seed, report))
        return
    ctx = mp.get_context("spawn")  # torch and gRPC do not survive fork()
    manager = pool = q = None
    error: BaseException | None = None
    try:
        with children_ignore_sigint():
            manager = ctx.Manager() if report is not None else None
            q = manager.Queue() if manager is not None else None
            n = min(workers, len(tasks))
            pool = ProcessPoolExecutor(n, ctx, initializer=_worker_init, initargs=(twin_address, q))
            # longest first: the makespan is set by the runs with the most wake-ups
            order = sorted(tasks, key=lambda t: -t[1].expected_wakeups())
            futures = {pool.submit(_worker_run, p, k, p.variant.core.seed): i
                       for i, p, k in order}  # fmt: skip
        pending = set(futures)
        while pending:
            # progress twice a second is plenty; the workers need the CPU
            done, pending = wait(pending, timeout=0.5, return_when=FIRST_COMPLETED)
            while q is not None:
                try:
                    update = q.get_nowait()
                except queue_mod.Empty:
                    break
                if report is not None:
                    report(*update)
            for f in done:
                if f.cancelled():
                    continue
                try:
                    result = f.result()
                except BaseException as exc:  # noqa: BLE001 - re-raised below
                    if error is None:
                        error = exc
                        for other in pending:
                            other.cancel()  # not started yet: dropped
                    continue
                on_result(futures[f], result)
    except KeyboardInterrupt:
        stop_children(pool)  # at once: a run cut off restarts from its seed's start anyway
        pool = None
        raise
    finally:
        if pool is not None:
            pool.shutdown(wait=True)
        if manager is not None:
            manager.shutdown()
    if error is not None:
        raise error
