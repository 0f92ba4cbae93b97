"""Durable twin state: a write-ahead log and atomic snapshots in a state directory.

``DurableRegistry`` is the ``ChipRegistry`` the gRPC server uses. Every operation runs under
its chip's lock and, with a ``StateStore``, is recorded in the write-ahead log before it is
acknowledged. The log stores *results, not operations*: a write is recorded as the device
values it left (``DeviceWrites``: g_prog, nu, t_write), which ``Chip.apply_writes`` replays
without random draws; every record also carries what the operation did to the chip's clock
(``now_s``), random state (``op_counter``: randomness is counter based, so this integer is the
whole generator state), tile version and energy ledger. A restored chip therefore continues
exactly as if the server had never stopped.

Durability, per kind of call:

- create/delete chip and device writes (program, program_devices, apply_pulses): the record
  is written and ``fsync``-ed before the call returns: an acknowledged write survives a
  SIGKILL of the server and a power loss.
- reads (read_devices, probe, mvm): they change no device, but advance ``op_counter``,
  ``now_s`` and the ledger. Their record is appended with a plain ``write`` (no fsync) before
  the call returns: it survives a SIGKILL (the data is in the kernel's page cache) but not a
  power loss, after which the chip may resume a few reads earlier (with the same devices, but
  later reads draw different noise than the lost run did). Any later fsync (the next device
  write) makes all earlier records durable too, since the log is one append-only file.

Retries: a call may carry a ``request_id``. Each chip remembers the results of its last
requests (``RECENT_RESULTS``, ``RECENT_RESULT_BYTES``), in the log and snapshots too, so a
retried request whose first attempt took effect (say, the server was killed after logging it
but before replying) returns the recorded result instead of acting twice. Read results are
logged with their values for this reason.

Layout of the state directory::

    LOCK                  flock-ed by the server that owns the directory
    snapshot.ptw          the last snapshot (written to a temp file, fsync-ed, renamed)
    wal-00000007.log ...  log segments; the snapshot names the first segment it does not cover

A snapshot is taken in the background when the log has grown by ``snapshot_wal_bytes`` or
``snapshot_interval_s`` has passed with something logged, and on a clean shutdown. Taking one
briefly pauses all operations (a read-write gate): the log is rotated to a new segment and
the state of every chip is copied in memory; the copy is then written while operations
continue, and the older segments are deleted once the snapshot is safely renamed into place.
A torn record at the end of the last segment (a crash in the middle of an append, never
acknowledged) is cut off on restore.

Every record is framed as ``magic | payload length | crc32 | payload`` with payload
``header length | header JSON | raw little-endian arrays``; no pickle anywhere, so a state
directory cannot make the server execute code.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import re
import struct
import threading
import time
import uuid
import zlib
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from device_twin.chip import Chip, DeviceWrites, OpResult
from device_twin.config import ChipConfig
from device_twin.energy import EnergyLedger, LedgerEntry
from device_twin.errors import TwinError
from device_twin.registry import DEFAULT_MAX_CHIPS, DEFAULT_STATE_BUDGET_BYTES, ChipRegistry

log = logging.getLogger(__name__)

#: Results remembered per chip for retried requests (the last one is always kept; older
#: ones only while their data stays under ``RECENT_RESULT_BYTES``).
RECENT_RESULTS = 16
RECENT_RESULT_BYTES = 8 * 1024**2
#: Creations and deletions remembered for retried requests.
RECENT_CHIP_CALLS = 64
DEFAULT_SNAPSHOT_WAL_BYTES = 256 * 1024**2
DEFAULT_SNAPSHOT_INTERVAL_S = 300.0

_MAGIC = b"PTW1"
_FRAME = struct.Struct("<4sQI")  # magic, payload length, crc32 of the payload
_HEADER_LEN = struct.Struct("<I")
_SEGMENT_RE = re.compile(r"^wal-(\d{8})\.log$")
_SNAPSHOT = "snapshot.ptw"
_FORMAT_VERSION = 1


class StateStoreError(TwinError):
    """The state directory cannot be used (busy, corrupt, or a write failed)."""

    code = "DATA_LOSS"


class StateDirBusy(StateStoreError):
    code = "FAILED_PRECONDITION"


# --- records ---------------------------------------------------------------------------------
def _le(a: np.ndarray) -> np.ndarray:
    a = np.ascontiguousarray(a)
    return a.astype(a.dtype.newbyteorder("<"), copy=False)


def encode_record(header: dict[str, Any], arrays: dict[str, np.ndarray] | None = None) -> list:
    """The byte pieces of one framed record (written in order, without copying arrays)."""
    specs, blobs = [], []
    for name, a in (arrays or {}).items():
        a = _le(np.asarray(a))
        specs.append([name, a.dtype.str, list(a.shape)])
        blobs.append(memoryview(a.reshape(-1)).cast("B"))
    hb = json.dumps({**header, "arrays": specs}, separators=(",", ":")).encode()
    parts: list = [_HEADER_LEN.pack(len(hb)), hb, *blobs]
    crc, length = 0, 0
    for p in parts:
        crc = zlib.crc32(p, crc)
        length += len(p)
    return [_FRAME.pack(_MAGIC, length, crc), *parts]


class TornRecord(Exception):
    """The file ends inside a record, or a record fails its checksum, at ``offset``."""

    def __init__(self, offset: int) -> None:
        super().__init__(f"torn or corrupt record at byte {offset}")
        self.offset = offset


def read_records(f: BinaryIO) -> Iterator[tuple[dict[str, Any], dict[str, np.ndarray]]]:
    """Records of a file, in order; raises ``TornRecord`` at the first bad one."""
    size = os.fstat(f.fileno()).st_size
    while True:
        start = f.tell()
        head = f.read(_FRAME.size)
        if not head:
            return
        if len(head) < _FRAME.size:
            raise TornRecord(start)
        magic, length, crc = _FRAME.unpack(head)
        if magic != _MAGIC or start + _FRAME.size + length > size:
            raise TornRecord(start)
        payload = f.read(length)
        if len(payload) < length or zlib.crc32(payload) != crc:
            raise TornRecord(start)
        (hlen,) = _HEADER_LEN.unpack_from(payload)
        header = json.loads(payload[4 : 4 + hlen])
        arrays, off = {}, 4 + hlen
        for name, dtype, shape in header.pop("arrays"):
            dt = np.dtype(dtype)
            n = int(np.prod(shape, dtype=np.int64))
            arrays[name] = np.frombuffer(payload, dt, n, off).reshape(shape)
            off += n * dt.itemsize
        yield header, arrays


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# --- (de)serialising chip state ----------------------------------------------------------
def _result_header(r: OpResult) -> dict[str, Any]:
    return {
        "kind": r.kind, "tile": int(r.tile), "at_s": float(r.at_s), "devices": int(r.devices),
        "pulses": int(r.pulses), "iterations": int(r.iterations),
        "energy_pj": float(r.energy_pj), "latency_s": float(r.latency_s),
        "scale_us": None if r.scale_us is None else float(r.scale_us),
    }  # fmt: skip


def _result_from(h: dict[str, Any], values: np.ndarray | None) -> OpResult:
    return OpResult(
        h["kind"], h["tile"], h["at_s"], devices=h["devices"], pulses=h["pulses"],
        iterations=h["iterations"], energy_pj=h["energy_pj"], latency_s=h["latency_s"],
        values=None if values is None else values.copy(), scale_us=h["scale_us"],
    )  # fmt: skip


@dataclass
class _ChipExtra:
    """What the durable registry keeps per chip besides the Chip itself."""

    recent: OrderedDict[str, OpResult] = field(default_factory=OrderedDict)

    def remember(self, request_id: str, result: OpResult) -> None:
        if not request_id:
            return
        self.recent[request_id] = result
        self.recent.move_to_end(request_id)
        n_bytes = sum(0 if r.values is None else r.values.nbytes for r in self.recent.values())
        while len(self.recent) > RECENT_RESULTS or (
            len(self.recent) > 1 and n_bytes > RECENT_RESULT_BYTES
        ):
            _, old = self.recent.popitem(last=False)
            n_bytes -= 0 if old.values is None else old.values.nbytes


@dataclass
class _ChipCopy:
    """A consistent in-memory copy of one chip, taken for a snapshot."""

    chip_id: str
    meta: dict[str, Any]
    tiles: list[tuple[int, np.ndarray, np.ndarray, np.ndarray]]
    recent: list[tuple[str, OpResult]]


def _copy_chip(chip_id: str, chip: Chip, extra: _ChipExtra) -> _ChipCopy:
    meta = {
        "t": "chip", "chip": chip_id, "config": chip.config.model_dump_json(),
        "now_s": float(chip.now_s), "op_counter": int(chip.op_counter),
        "programmed": [bool(p) for p in chip.programmed],
        "tile_version": [int(v) for v in chip.tile_version],
        "ledger": chip.ledger.to_dict(),
    }  # fmt: skip
    tiles = [
        (int(t), chip.g_prog_us[t].copy(), chip.nu[t].copy(), chip.t_write_s[t].copy())
        for t in np.flatnonzero(chip.programmed)
    ]
    return _ChipCopy(chip_id, meta, tiles, list(extra.recent.items()))


def _restore_chip(
    meta: dict[str, Any], tiles: list[tuple[dict, dict[str, np.ndarray]]]
) -> tuple[Chip, _ChipExtra]:
    chip = Chip(ChipConfig.model_validate_json(meta["config"]))
    chip.now_s = float(meta["now_s"])
    chip.op_counter = int(meta["op_counter"])
    chip.programmed[:] = np.asarray(meta["programmed"], bool)
    chip.tile_version[:] = np.asarray(meta["tile_version"], np.int64)
    chip.ledger = EnergyLedger.from_dict(meta["ledger"])
    for h, arrays in tiles:
        t = h["tile"]
        chip.g_prog_us[t] = arrays["g_prog_us"]
        chip.nu[t] = arrays["nu"]
        chip.t_write_s[t] = arrays["t_write_s"]
    return chip, _ChipExtra()


# --- the state directory -----------------------------------------------------------------
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
    def write_snapshot(self, next_segment: int, copies: list[_ChipCopy]) -> None:
        """Write a snapshot atomically: temp file, fsync, rename, fsync the directory."""
        tmp = self.dir / (_SNAPSHOT + ".tmp")
        with open(tmp, "wb") as f:

            def put(header: dict, arrays: dict | None = None) -> None:
                for p in encode_record(header, arrays):
                    f.write(p)

            put({"t": "snapshot", "version": _FORMAT_VERSION, "next_segment": next_segment,
                 "chips": [c.chip_id for c in copies]})  # fmt: skip
            for c in copies:
                recent = [{"rid": rid, **_result_header(r)} for rid, r in c.recent]
                values = {
                    f"v{i}": r.values for i, (_, r) in enumerate(c.recent) if r.values is not None
                }
                put({**c.meta, "recent": recent}, values)
                for t, g, nu, tw in c.tiles:
                    put({"t": "tile", "chip": c.chip_id, "tile": t},
                        {"g_prog_us": g, "nu": nu, "t_write_s": tw})  # fmt: skip
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


class _Gate:
    """Many operations at once, or one snapshot copy alone (writers first)."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._active = 0
        self._exclusive = False
        self._waiting = 0

    @contextlib.contextmanager
    def shared(self) -> Iterator[None]:
        with self._cond:
            while self._exclusive or self._waiting:
                self._cond.wait()
            self._active += 1
        try:
            yield
        finally:
            with self._cond:
                self._active -= 1
                if self._active == 0:
                    self._cond.notify_all()

    @contextlib.contextmanager
    def exclusive(self) -> Iterator[None]:
        with self._cond:
            self._waiting += 1
            while self._exclusive or self._active:
                self._cond.wait()
            self._waiting -= 1
            self._exclusive = True
        try:
            yield
        finally:
            with self._cond:
                self._exclusive = False
                self._cond.notify_all()


@dataclass
class RestoreReport:
    chips: int = 0
    snapshot: bool = False
    records_replayed: int = 0
    torn_bytes_cut: int = 0
    seconds: float = 0.0


class DurableRegistry(ChipRegistry):
    """A ``ChipRegistry`` that logs every operation (with a store) and answers retries.

    Without a store (no state dir) nothing is written, but retried requests are still
    recognised by their ``request_id``.
    """

    def __init__(
        self,
        state_budget_bytes: int = DEFAULT_STATE_BUDGET_BYTES,
        max_chips: int = DEFAULT_MAX_CHIPS,
        store: StateStore | None = None,
        snapshot_wal_bytes: int = DEFAULT_SNAPSHOT_WAL_BYTES,
        snapshot_interval_s: float = DEFAULT_SNAPSHOT_INTERVAL_S,
    ) -> None:
        super().__init__(state_budget_bytes=state_budget_bytes, max_chips=max_chips)
        self.store = store
        self.snapshot_wal_bytes = int(snapshot_wal_bytes)
        self.snapshot_interval_s = float(snapshot_interval_s)
        self._gate = _Gate()
        self._extra: dict[str, _ChipExtra] = {}
        self._busy_cond = threading.Condition()
        self._busy_ids: set[str] = set()
        self._created: OrderedDict[str, str] = OrderedDict()  # request_id -> chip_id
        self._deleted: OrderedDict[str, str] = OrderedDict()  # request_id -> chip_id
        self._snapshot_lock = threading.Lock()
        self._last_snapshot_s = time.monotonic()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # --- chips ------------------------------------------------------------------------------
    @contextlib.contextmanager
    def _membership_change(self, chip_id: str) -> Iterator[None]:
        """Hold ``chip_id`` while it is created or deleted, until its record is logged.

        Operations on that id wait, so the log never holds an operation before the creation
        of its chip, nor a creation before the deletion of an older chip of the same id.
        """
        with self._busy_cond:
            while chip_id in self._busy_ids:
                self._busy_cond.wait()
            self._busy_ids.add(chip_id)
        try:
            yield
        finally:
            with self._busy_cond:
                self._busy_ids.discard(chip_id)
                self._busy_cond.notify_all()

    def _wait_membership(self, chip_id: str) -> None:
        with self._busy_cond:
            while chip_id in self._busy_ids:
                self._busy_cond.wait()

    def create_chip(
        self, config: ChipConfig, chip_id: str | None = None, request_id: str = ""
    ) -> str:
        with self._gate.shared():
            if request_id and request_id in self._created:
                done = self._created[request_id]
                if done in self._chips:
                    return done
            chip_id = chip_id or uuid.uuid4().hex[:12]
            with self._membership_change(chip_id):
                chip_id = super().create_chip(config, chip_id)
                self._extra[chip_id] = _ChipExtra()
                if self.store is not None:
                    try:
                        record = {"t": "create", "chip": chip_id, "rid": request_id,
                                  "config": config.model_dump_json()}  # fmt: skip
                        self.store.append(record, None, sync=True)
                    except StateStoreError:
                        ChipRegistry.delete_chip(self, chip_id)
                        raise
                _remember(self._created, request_id, chip_id)
            return chip_id

    def delete_chip(self, chip_id: str, request_id: str = "") -> None:
        with self._gate.shared(), self._membership_change(chip_id):
            retried = request_id and self._deleted.get(request_id) == chip_id
            if retried and chip_id not in self._chips:
                return
            super().delete_chip(chip_id)
            self._extra.pop(chip_id, None)
            if self.store is not None:
                record = {"t": "delete", "chip": chip_id, "rid": request_id}
                self.store.append(record, None, sync=True)
            _remember(self._deleted, request_id, chip_id)

    # --- operations -------------------------------------------------------------------------
    def execute(self, chip_id: str, request_id: str, op: Callable[[Chip], OpResult]) -> OpResult:
        """Run ``op`` on the chip under its lock, log its result, remember it for retries."""
        with self._gate.shared():
            self._wait_membership(chip_id)

            def run(chip: Chip) -> OpResult:
                extra = self._extra.setdefault(chip_id, _ChipExtra())
                if request_id and request_id in extra.recent:
                    return extra.recent[request_id]
                if self.store is not None and self.store.failed:
                    raise StateStoreError(self.store.failed)
                k = chip.op_counter
                result = op(chip)
                if self.store is not None:
                    self._log_op(chip_id, chip, k, result, request_id)
                extra.remember(request_id, result)
                return result

            return self.with_chip(chip_id, run)

    def _log_op(self, chip_id: str, chip: Chip, k: int, r: OpResult, request_id: str) -> None:
        assert self.store is not None
        tile = int(r.tile)
        header = {
            "t": "op", "chip": chip_id, "rid": request_id, "k": k, **_result_header(r),
            "now_s": float(chip.now_s), "op_counter": int(chip.op_counter),
            "programmed": bool(chip.programmed[tile]),
            "tile_version": int(chip.tile_version[tile]),
            "ledger": chip.ledger.to_dict().get(r.kind),
        }  # fmt: skip
        arrays: dict[str, np.ndarray] = {}
        w = r.writes
        if w is not None:
            header["t_write_s"] = float(w.t_write_s)
            arrays = {"array": w.array, "index": w.index, "g_prog_us": w.g_prog_us, "nu": w.nu}
        elif r.values is not None:
            arrays = {"values": r.values}
        self.store.append(header, arrays, sync=w is not None)

    def program(self, chip_id, tile, g_target_pos_us, g_target_neg_us, at_s, request_id=""):
        return self.execute(
            chip_id, request_id, lambda c: c.program(tile, g_target_pos_us, g_target_neg_us, at_s)
        )

    def program_devices(self, chip_id, tile, array, devices, g_target_us, at_s, request_id=""):
        return self.execute(
            chip_id, request_id,
            lambda c: c.program_devices(tile, array, devices, g_target_us, at_s),
        )  # fmt: skip

    def apply_pulses(self, chip_id, tile, array, devices, kind, count, at_s, request_id=""):
        return self.execute(
            chip_id, request_id, lambda c: c.apply_pulses(tile, array, devices, kind, count, at_s)
        )

    def read_devices(self, chip_id, tile, array, devices, at_s, request_id=""):
        return self.execute(
            chip_id, request_id, lambda c: c.read_devices(tile, array, devices, at_s)
        )

    def probe(self, chip_id, tile, rows, array, at_s, col_start=0, col_count=None, request_id=""):
        return self.execute(
            chip_id, request_id,
            lambda c: c.probe(tile, rows, array, at_s, col_start, col_count),
        )  # fmt: skip

    def mvm(self, chip_id, tile, x, at_s, row_start=0, col_start=0, col_count=None, request_id=""):
        return self.execute(
            chip_id, request_id, lambda c: c.mvm(tile, x, at_s, row_start, col_start, col_count)
        )

    # --- restore ----------------------------------------------------------------------------
    def restore(self) -> RestoreReport:
        """Load the snapshot and replay the log; then compact if anything was replayed."""
        report = RestoreReport()
        if self.store is None:
            return report
        t0 = time.monotonic()
        store = self.store
        next_segment = 0
        records = store.read_snapshot()
        if records is not None:
            next_segment = self._load_snapshot(records)
            report.snapshot = True
        segments = [i for i in store.segments() if i >= next_segment]
        for n, i in enumerate(segments):
            path = store.segment_path(i)
            with open(path, "rb") as f:
                try:
                    for header, arrays in read_records(f):
                        self._replay(header, arrays)
                        report.records_replayed += 1
                except TornRecord as exc:
                    if n != len(segments) - 1:
                        raise StateStoreError(f"log segment {path} is corrupt: {exc}") from None
                    size = os.fstat(f.fileno()).st_size
                    report.torn_bytes_cut = size - exc.offset
                    log.warning("cutting a torn record (%d bytes) off the end of %s",
                                report.torn_bytes_cut, path)  # fmt: skip
                    os.truncate(path, exc.offset)
        last = max([next_segment - 1, *segments], default=-1)
        store.open_segment(last + 1)
        report.chips = len(self._chips)
        if report.records_replayed or report.torn_bytes_cut:
            self.snapshot()
        report.seconds = time.monotonic() - t0
        return report

    def _load_snapshot(self, records: Iterator[tuple[dict, dict[str, np.ndarray]]]) -> int:
        head, _ = next(records)
        if head.get("t") != "snapshot" or head.get("version") != _FORMAT_VERSION:
            raise StateStoreError(f"unsupported snapshot header {head!r}")
        metas: dict[str, tuple[dict, dict]] = {}
        tiles: dict[str, list] = {}
        ended = False
        for h, arrays in records:
            if h["t"] == "chip":
                metas[h["chip"]] = (h, arrays)
            elif h["t"] == "tile":
                tiles.setdefault(h["chip"], []).append((h, arrays))
            elif h["t"] == "end":
                ended = True
        if not ended:
            raise StateStoreError("snapshot has no end record")
        for chip_id, (meta, values) in metas.items():
            chip, extra = _restore_chip(meta, tiles.get(chip_id, []))
            for i, rh in enumerate(meta["recent"]):
                extra.remember(rh["rid"], _result_from(rh, values.get(f"v{i}")))
            self.add_chip(chip_id, chip)
            self._extra[chip_id] = extra
        return int(head["next_segment"])

    def _replay(self, h: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
        kind, chip_id = h["t"], h["chip"]
        if kind == "create":
            self.add_chip(chip_id, Chip(ChipConfig.model_validate_json(h["config"])))
            self._extra[chip_id] = _ChipExtra()
            _remember(self._created, h["rid"], chip_id)
            return
        if kind == "delete":
            ChipRegistry.delete_chip(self, chip_id)
            self._extra.pop(chip_id, None)
            _remember(self._deleted, h["rid"], chip_id)
            return
        chip = self._chips[chip_id]
        if chip.op_counter != h["k"]:
            raise StateStoreError(
                f"log out of order for chip {chip_id!r}: record of operation {h['k']}, "
                f"chip at operation {chip.op_counter}"
            )
        tile = h["tile"]
        if "t_write_s" in h:
            chip.apply_writes(DeviceWrites(
                tile, arrays["array"], arrays["index"], arrays["g_prog_us"], arrays["nu"],
                h["t_write_s"],
            ))  # fmt: skip
        chip.programmed[tile] = h["programmed"]
        chip.tile_version[tile] = h["tile_version"]
        chip.now_s = h["now_s"]
        chip.op_counter = h["op_counter"]
        if h["ledger"] is not None:
            chip.ledger.by_kind[h["kind"]] = LedgerEntry(**h["ledger"])
        extra = self._extra.setdefault(chip_id, _ChipExtra())
        extra.remember(h["rid"], _result_from(h, arrays.get("values")))

    # --- snapshots --------------------------------------------------------------------------
    def snapshot(self) -> None:
        """Write a snapshot of every chip and drop the log segments it covers."""
        store = self.store
        if store is None:
            return
        with self._snapshot_lock:
            with self._gate.exclusive():
                next_segment = store.segment_index + 1
                store.open_segment(next_segment)
                store.bytes_since_snapshot = 0
                copies = [
                    _copy_chip(cid, chip, self._extra.setdefault(cid, _ChipExtra()))
                    for cid, chip in sorted(self._chips.items())
                ]
            store.write_snapshot(next_segment, copies)
            store.remove_segments_before(next_segment)
            self._last_snapshot_s = time.monotonic()

    def start_snapshots(self, poll_s: float = 1.0) -> None:
        """Take snapshots in the background when the log has grown or time has passed."""
        if self.store is None or self._thread is not None:
            return

        def loop() -> None:
            while not self._stop.wait(poll_s):
                store = self.store
                assert store is not None
                due = store.bytes_since_snapshot >= self.snapshot_wal_bytes or (
                    store.bytes_since_snapshot > 0
                    and time.monotonic() - self._last_snapshot_s >= self.snapshot_interval_s
                )
                if due and not store.failed:
                    try:
                        self.snapshot()
                    except Exception:  # keep serving; the log still holds everything
                        log.exception("snapshot failed")

        self._thread = threading.Thread(target=loop, name="twin-snapshots", daemon=True)
        self._thread.start()

    def close(self) -> None:
        """Stop background snapshots, write a final one, release the state dir."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if self.store is not None:
            if self.store.bytes_since_snapshot and not self.store.failed:
                self.snapshot()
            self.store.close()


def _remember(d: OrderedDict[str, str], request_id: str, chip_id: str) -> None:
    if request_id:
        d[request_id] = chip_id
        while len(d) > RECENT_CHIP_CALLS:
            d.popitem(last=False)
