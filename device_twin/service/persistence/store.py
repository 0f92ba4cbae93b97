"""The state directory: its lock, its log segments and its snapshot file.

Layout::

    LOCK                  flock-ed by the server that owns the directory
    snapshot.ptw          the last snapshot (written to a temp file, fsync-ed, renamed)
    wal-00000007.log ...  log segments; the snapshot names the first segment it does not cover

``StateStore`` appends framed records (``records.py``) to the current segment, with or
without fsync, and writes and reads snapshots atomically; it knows files, not chips.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from device_twin.errors import TwinError
from device_twin.service.persistence.chip_state import ChipCopy, result_header
from device_twin.service.persistence.records import TornRecord, encode_record, read_records

_SEGMENT_RE = re.compile(r"^wal-(\d{8})\.log$")
_SNAPSHOT = "snapshot.ptw"
FORMAT_VERSION = 2
#: Snapshot formats this code restores (1: before per-device write counts).
READABLE_VERSIONS = (1, 2)


class StateStoreError(TwinError):
    """The state directory cannot be used (busy, corrupt, or a write failed)."""

    code = "DATA_LOSS"


class StateDirBusy(StateStoreError):
    code = "FAILED_PRECONDITION"


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class StateStore:
    """Files of one state directory: the log segments, the snapshot, the lock."""

    def __init__(self, state_dir: str | os.PathLike) -> None:
        self.dir = Path(state_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self._lock_fd = os.open(self.dir / "LOCK", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._lock_fd)
            raise StateDirBusy(f"state dir {self.dir} is in use by another twin server") from None
        self._io_lock = threading.Lock()
        self._segment: BinaryIO | None = None
        self.segment_index = 0
        self.bytes_since_snapshot = 0
        self.failed: str | None = None

    # segments
    def segment_path(self, index: int) -> Path:
        return self.dir / f"wal-{index:08d}.log"

    def segments(self) -> list[int]:
        return sorted(int(m[1]) for p in self.dir.iterdir() if (m := _SEGMENT_RE.match(p.name)))

    def open_segment(self, index: int) -> None:
        """Make ``index`` the segment that appends go to (creating it)."""
        with self._io_lock:
            if self._segment is not None:
                self._segment.close()
            self._segment = open(self.segment_path(index), "ab")  # noqa: SIM115
            self.segment_index = index
            _fsync_dir(self.dir)

    def append(
        self, header: dict[str, Any], arrays: dict[str, np.ndarray] | None, sync: bool
    ) -> None:
        """Append one record; with ``sync``, fsync before returning."""
        pieces = encode_record(header, arrays)
        with self._io_lock:
            if self.failed:
                raise StateStoreError(self.failed)
            try:
                assert self._segment is not None, "no open log segment"
                for p in pieces:
                    self._segment.write(p)
                self._segment.flush()
                if sync:
                    os.fsync(self._segment.fileno())
            except OSError as exc:
                # The chip has already changed in memory: the log no longer matches it.
                self.failed = (
                    f"writing the state log in {self.dir} failed ({exc}); this twin no longer "
                    "records its state: restart it"
                )
                raise StateStoreError(self.failed) from exc
            self.bytes_since_snapshot += sum(len(p) for p in pieces)

    # snapshot
    def write_snapshot(self, next_segment: int, copies: list[ChipCopy]) -> None:
        """Write a snapshot atomically: temp file, fsync, rename, fsync the directory."""
        tmp = self.dir / (_SNAPSHOT + ".tmp")
        with open(tmp, "wb") as f:

            def put(header: dict, arrays: dict | None = None) -> None:
                for p in encode_record(header, arrays):
                    f.write(p)

            put({"t": "snapshot", "version": FORMAT_VERSION, "next_segment": next_segment,
                 "chips": [c.chip_id for c in copies]})  # fmt: skip
            for c in copies:
                recent = [{"rid": rid, "digest": c.digests.get(rid, ""), **result_header(r)}
                          for rid, r in c.recent]  # fmt: skip
                values = {
                    f"v{i}": r.values for i, (_, r) in enumerate(c.recent) if r.values is not None
                }
                values.update(
                    {f"f{i}": r.failed for i, (_, r) in enumerate(c.recent) if r.failed is not None}
                )
                values.update(
                    {
                        f"w{i}": r.verify.t_write_s
                        for i, (_, r) in enumerate(c.recent)
                        if r.verify is not None and r.verify.t_write_s is not None
                    }
                )
                put({**c.meta, "recent": recent}, values)
                for t, arrays in c.tiles:
                    put({"t": "tile", "chip": c.chip_id, "tile": t}, arrays)
            put({"t": "end"})
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.dir / _SNAPSHOT)
        _fsync_dir(self.dir)

    def read_snapshot(self) -> Iterator[tuple[dict, dict[str, np.ndarray]]] | None:
        path = self.dir / _SNAPSHOT
        if not path.exists():
            return None

        def records() -> Iterator[tuple[dict, dict[str, np.ndarray]]]:
            with open(path, "rb") as f:
                try:
                    yield from read_records(f)
                except TornRecord as exc:
                    raise StateStoreError(f"snapshot {path} is corrupt: {exc}") from None

        return records()

    def remove_segments_before(self, index: int) -> None:
        for i in self.segments():
            if i < index:
                self.segment_path(i).unlink(missing_ok=True)
        _fsync_dir(self.dir)

    def close(self) -> None:
        with self._io_lock:
            if self._segment is not None:
                self._segment.close()
                self._segment = None
        with contextlib.suppress(OSError):
            fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
            os.close(self._lock_fd)
