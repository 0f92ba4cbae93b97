"""``DurableRegistry``: the ``ChipRegistry`` of the gRPC server, with a log and snapshots.

Every operation runs under its chip's lock and, with a ``StateStore``, is recorded in the
write-ahead log before it is acknowledged (``chip_state.op_record``); retried requests are
answered from the results remembered per chip. ``restore`` loads the snapshot and replays the
log; ``snapshot`` (in the background, and on close) writes a new snapshot and drops the log
segments it covers. The durability contract is in the package docstring.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from device_twin.chip import Chip, OpResult
from device_twin.config import ChipConfig
from device_twin.registry import DEFAULT_MAX_CHIPS, DEFAULT_STATE_BUDGET_BYTES, ChipRegistry
from device_twin.service.persistence.chip_state import (
    ChipExtra,
    check_same_request,
    copy_chip,
    op_record,
    replay_op,
    restore_chip,
    result_from,
)
from device_twin.service.persistence.records import TornRecord, read_records
from device_twin.service.persistence.store import READABLE_VERSIONS, StateStore, StateStoreError

log = logging.getLogger(__name__)

#: Creations and deletions remembered for retried requests.
RECENT_CHIP_CALLS = 64
DEFAULT_SNAPSHOT_WAL_BYTES = 256 * 1024**2
DEFAULT_SNAPSHOT_INTERVAL_S = 300.0


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
        self._extra: dict[str, ChipExtra] = {}
        self._busy_cond = threading.Condition()
        self._busy_ids: set[str] = set()
        # request_id -> (chip_id, digest of the request)
        self._created: OrderedDict[str, tuple[str, str]] = OrderedDict()
        self._deleted: OrderedDict[str, tuple[str, str]] = OrderedDict()
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
        self, config: ChipConfig, chip_id: str | None = None, request_id: str = "",
        request_digest: str = "",
    ) -> str:  # fmt: skip
        with self._gate.shared():
            if request_id and request_id in self._created:
                done, digest = self._created[request_id]
                check_same_request(request_id, digest, request_digest, "CreateChip")
                if done in self._chips:
                    return done
            chip_id = chip_id or uuid.uuid4().hex[:12]
            with self._membership_change(chip_id):
                chip_id = super().create_chip(config, chip_id)
                self._extra[chip_id] = ChipExtra()
                if self.store is not None:
                    try:
                        record = {"t": "create", "chip": chip_id, "rid": request_id,
                                  "digest": request_digest,
                                  "config": config.model_dump_json()}  # fmt: skip
                        self.store.append(record, None, sync=True)
                    except StateStoreError:
                        ChipRegistry.delete_chip(self, chip_id)
                        raise
                _remember(self._created, request_id, chip_id, request_digest)
            return chip_id

    def delete_chip(self, chip_id: str, request_id: str = "", request_digest: str = "") -> None:
        with self._gate.shared(), self._membership_change(chip_id):
            if request_id and request_id in self._deleted:
                done, digest = self._deleted[request_id]
                check_same_request(request_id, digest, request_digest, "DeleteChip")
                if done == chip_id and chip_id not in self._chips:
                    return
            super().delete_chip(chip_id)
            self._extra.pop(chip_id, None)
            if self.store is not None:
                record = {"t": "delete", "chip": chip_id, "rid": request_id,
                          "digest": request_digest}  # fmt: skip
                self.store.append(record, None, sync=True)
            _remember(self._deleted, request_id, chip_id, request_digest)

    # --- operations -------------------------------------------------------------------------
    def execute(
        self, chip_id: str, request_id: str, op: Callable[[Chip], OpResult], digest: str = ""
    ) -> OpResult:
        """Run ``op`` on the chip under its lock, log its result, remember it for retries
        (``digest``: of the request, so that a request id reused for another request is
        refused)."""
        with self._gate.shared():
            self._wait_membership(chip_id)

            def run(chip: Chip) -> OpResult:
                extra = self._extra.setdefault(chip_id, ChipExtra())
                retried = extra.answer(request_id, digest)
                if retried is not None:
                    return retried
                if self.store is not None and self.store.failed:
                    raise StateStoreError(self.store.failed)
                k = chip.op_counter
                result = op(chip)
                if self.store is not None:
                    header, arrays, sync = op_record(chip_id, chip, k, result, request_id, digest)
                    self.store.append(header, arrays, sync=sync)
                extra.remember(request_id, result, digest)
                return result

            return self.with_chip(chip_id, run)

    def program(self, chip_id, tile, g_target_pos_us, g_target_neg_us, at_s, request_id="",
                pair=0, request_digest=""):  # fmt: skip
        return self.execute(
            chip_id, request_id,
            lambda c: c.program(tile, g_target_pos_us, g_target_neg_us, at_s, pair),
            request_digest,
        )  # fmt: skip

    def program_verify(self, chip_id, tile, arrays, devices, g_target_us, job, at_s,
                       g_read_us=None, request_id="", request_digest=""):  # fmt: skip
        return self.execute(
            chip_id, request_id,
            lambda c: c.program_verify(tile, arrays, devices, g_target_us, job, at_s, g_read_us),
            request_digest,
        )  # fmt: skip

    def program_devices(self, chip_id, tile, array, devices, g_target_us, at_s, request_id="",
                        pair=0, request_digest=""):  # fmt: skip
        return self.execute(
            chip_id, request_id,
            lambda c: c.program_devices(tile, array, devices, g_target_us, at_s, pair),
            request_digest,
        )  # fmt: skip

    def apply_pulses(self, chip_id, tile, array, devices, kind, count, at_s, request_id="",
                     pair=0, request_digest=""):  # fmt: skip
        return self.execute(
            chip_id, request_id,
            lambda c: c.apply_pulses(tile, array, devices, kind, count, at_s, pair),
            request_digest,
        )  # fmt: skip

    def read_devices(self, chip_id, tile, array, devices, at_s, request_id="", pair=0,
                     request_digest=""):  # fmt: skip
        return self.execute(
            chip_id, request_id, lambda c: c.read_devices(tile, array, devices, at_s, pair),
            request_digest,
        )  # fmt: skip

    def probe(self, chip_id, tile, rows, array, at_s, col_start=0, col_count=None, request_id="",
              pair=0, request_digest=""):  # fmt: skip
        return self.execute(
            chip_id, request_id,
            lambda c: c.probe(tile, rows, array, at_s, col_start, col_count, pair),
            request_digest,
        )  # fmt: skip

    def mvm(self, chip_id, tile, x, at_s, row_start=0, col_start=0, col_count=None, request_id="",
            request_digest=""):  # fmt: skip
        return self.execute(
            chip_id, request_id,
            lambda c: c.mvm(tile, x, at_s, row_start, col_start, col_count), request_digest,
        )  # fmt: skip

    def conv_mvm(
        self, chip_id, tile, x, at_s, geometry, patch_start, k, row_start=0, col_start=0,
        col_count=None, rows_per_mvm=0, request_id="", request_digest="",
    ):  # fmt: skip
        return self.execute(
            chip_id, request_id,
            lambda c: c.conv_mvm(tile, x, at_s, geometry, patch_start, k, row_start, col_start,
                                 col_count, rows_per_mvm),
            request_digest,
        )  # fmt: skip

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
        if head.get("t") != "snapshot" or head.get("version") not in READABLE_VERSIONS:
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
            chip, extra = restore_chip(meta, tiles.get(chip_id, []))
            for i, rh in enumerate(meta["recent"]):
                extra.remember(rh["rid"], result_from(
                    rh, values.get(f"v{i}"), values.get(f"f{i}"), values.get(f"w{i}")
                ), rh.get("digest", ""))  # fmt: skip
            self.add_chip(chip_id, chip)
            self._extra[chip_id] = extra
        return int(head["next_segment"])

    def _replay(self, h: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
        kind, chip_id = h["t"], h["chip"]
        if kind == "create":
            self.add_chip(chip_id, Chip(ChipConfig.model_validate_json(h["config"])))
            self._extra[chip_id] = ChipExtra()
            _remember(self._created, h["rid"], chip_id, h.get("digest", ""))
            return
        if kind == "delete":
            ChipRegistry.delete_chip(self, chip_id)
            self._extra.pop(chip_id, None)
            _remember(self._deleted, h["rid"], chip_id, h.get("digest", ""))
            return
        chip = self._chips[chip_id]
        if chip.op_counter != h["k"]:
            raise StateStoreError(
                f"log out of order for chip {chip_id!r}: record of operation {h['k']}, "
                f"chip at operation {chip.op_counter}"
            )
        result = replay_op(chip, h, arrays)
        self._extra.setdefault(chip_id, ChipExtra()).remember(h["rid"], result, h.get("digest", ""))

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
                    copy_chip(cid, chip, self._extra.setdefault(cid, ChipExtra()))
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


def _remember(
    d: OrderedDict[str, tuple[str, str]], request_id: str, chip_id: str, digest: str
) -> None:
    if request_id:
        d[request_id] = (chip_id, digest)
        while len(d) > RECENT_CHIP_CALLS:
            d.popitem(last=False)
