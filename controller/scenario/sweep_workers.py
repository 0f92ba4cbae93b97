"""Where a sweep's grid points run: one after the other in this process, in spawned worker
processes, or on a Dask cluster, and how a finished point is checked.

Every point writes its own run folder (an absolute path, decided by the client). A point
counts as done only when the client itself sees its run complete there (``COMPLETE`` holding
the point's key): a Dask worker that wrote the run somewhere the client cannot see (its own
disk, another working directory) makes the point fail, saying so, instead of the sweep
reporting files it never wrote. Before anything runs on Dask, every worker is asked whether it
sees the sweep folder (:func:`check_shared_folder`); if one does not, the sweep is refused.

Ctrl-C: local worker processes ignore SIGINT (:func:`~controller.scenario.pool.
children_ignore_sigint`) and are stopped at once by this process; Dask futures are cancelled.
Points complete by then are kept (a sweep run again skips them).
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import Any

from controller.scenario.pool import children_ignore_sigint, stop_children
from controller.scenario.results import is_complete

#: Runs one point: (scenario mapping, run folder, twin address, policy folder) -> where it ran.
RunFn = Callable[..., Any]


@dataclass(frozen=True)
class PointJob:
    """One grid point to run: its name, scenario mapping, absolute run folder and key."""

    name: str
    scenario: dict[str, Any]
    out_dir: Path
    key: str


class SweepFolderNotShared(ValueError):
    """Dask workers that cannot see the sweep folder (it must be on a shared file system)."""


def _visible(path: str) -> tuple[str, bool]:
    """On a worker: its host name and whether it sees ``path`` (the probe the client wrote)."""
    return socket.gethostname(), os.path.isfile(path)


def check_shared_folder(client: Any, out_dir: Path) -> None:
    """Refuse (:class:`SweepFolderNotShared`) unless every worker of ``client`` sees the
    sweep folder ``out_dir`` at the same absolute path as this process."""
    probe = out_dir / f".pcm-twin-visible-{uuid.uuid4().hex}"
    probe.write_text("a sweep client checks that its workers see this folder\n")
    try:
        seen = client.run(_visible, str(probe))
    finally:
        probe.unlink(missing_ok=True)
    blind = {addr: host for addr, (host, ok) in seen.items() if not ok}
    if blind:
        where = ", ".join(f"{addr} (host {host})" for addr, host in sorted(blind.items()))
        raise SweepFolderNotShared(
            f"Dask worker(s) {where} do not see the sweep folder {out_dir}: the run folders "
            "must be on a file system that this client and every worker share, at the same "
            "path (give --out such a folder)"
        )


def _not_there(job: PointJob, where: Any) -> str:
    host = where.get("host") if isinstance(where, dict) else None
    return (
        f"the run finished{f' on host {host}' if host else ''} but {job.out_dir} holds no "
        "complete run as seen from here: the sweep folder must be shared by the client and "
        "every worker"
    )


def execute(
    jobs: Sequence[PointJob], run_fn: RunFn, *, sweep_dir: Path, workers: int, dask: Any,
    twin_address: str | None, policy_dir: str | None,
    on_done: Callable[[str, str | None], None],
) -> None:  # fmt: skip
    """Run ``jobs`` (their run folders in ``sweep_dir``); ``on_done(name, error or None)`` as
    each ends (in this process)."""

    def done(job: PointJob, error: BaseException | None, where: Any = None) -> None:
        if error is not None:
            on_done(job.name, f"{type(error).__name__}: {error}")
        elif not is_complete(job.out_dir, job.key):
            on_done(job.name, _not_there(job, where))
        else:
            on_done(job.name, None)

    args = [(j.scenario, str(j.out_dir), twin_address, policy_dir) for j in jobs]
    if dask is not None:
        _on_dask(jobs, args, run_fn, dask, sweep_dir, done)
    elif workers <= 1:
        for job, a in zip(jobs, args, strict=True):
            try:
                where = run_fn(*a)
            except Exception as exc:  # one failed point must not lose the others
                done(job, exc)
            else:
                done(job, None, where)
    else:
        _in_processes(jobs, args, run_fn, workers, done)


def _in_processes(jobs, args, run_fn, workers, done) -> None:  # noqa: ANN001
    pool = None
    try:
        # spawned: torch and gRPC do not survive fork() of a process that used them
        with children_ignore_sigint():
            pool = ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn"))
            futs = {pool.submit(run_fn, *a): j for j, a in zip(jobs, args, strict=True)}
        for fut in as_completed(futs):
            exc = fut.exception()
            done(futs[fut], exc, None if exc else fut.result())
    except KeyboardInterrupt:
        stop_children(pool)
        pool = None
        raise
    finally:
        if pool is not None:
            pool.shutdown(wait=True)


def _on_dask(jobs, args, run_fn, dask, sweep_dir, done) -> None:  # noqa: ANN001
    # dask is optional (only ``--dask``) and slow to import: here, not at the top
    from dask.distributed import Client
    from dask.distributed import as_completed as dask_completed

    client = dask if isinstance(dask, Client) else Client(dask)
    futures: dict[Any, PointJob] = {}
    try:
        if jobs:
            check_shared_folder(client, sweep_dir)
        futures = {
            client.submit(run_fn, *a, key=f"pcm-twin-{j.name}-{j.key}", pure=False): j
            for j, a in zip(jobs, args, strict=True)
        }
        for fut in dask_completed(futures):
            exc = fut.exception()
            done(futures[fut], exc, None if exc else fut.result())
    except KeyboardInterrupt:
        client.cancel(list(futures))
        raise
    finally:
        if client is not dask:
            client.close()
