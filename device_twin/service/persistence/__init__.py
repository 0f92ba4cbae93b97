"""Durable twin state: a write-ahead log and atomic snapshots in a state directory.

``DurableRegistry`` is the ``ChipRegistry`` the gRPC server uses. Every operation runs under
its chip's lock and, with a ``StateStore``, is recorded in the write-ahead log before it is
acknowledged. The log stores *results, not operations*: a write is recorded as the device
values it left (``DeviceWrites``: g_prog, nu, t_write, write count), which
``Chip.apply_writes`` replays without random draws; every record also carries what the
operation did to the chip's clock (``now_s``), operation count, tile version and energy
ledger. Randomness is keyed by what is drawn (a write by the device's write count, read noise
by the instant, periphery noise by the call's number at its instant), so a restored chip
continues exactly as if the server had never stopped.

Durability, per kind of call:

- create/delete chip and device writes (program, program_devices, apply_pulses): the record
  is written and ``fsync``-ed before the call returns: an acknowledged write survives a
  SIGKILL of the server and a power loss.
- reads (read_devices, probe, mvm): they change no device, but advance ``op_counter``,
  ``now_s`` and the ledger. Their record is appended with a plain ``write`` (no fsync) before
  the call returns: it survives a SIGKILL (the data is in the kernel's page cache) but not a
  power loss, after which the chip may resume a few reads earlier (with the same devices and
  the same read noise; only a repeated probe or MVM at that very instant would be numbered
  differently). Any later fsync (the next device write) makes all earlier records durable
  too, since the log is one append-only file.

Retries: a call may carry a ``request_id``. Each chip remembers the results of its last
requests (``RECENT_RESULTS``, ``RECENT_RESULT_BYTES``), in the log and snapshots too, so a
retried request whose first attempt took effect (say, the server was killed after logging it
but before replying) returns the recorded result instead of acting twice. Read results are
logged with their values for this reason. A digest of each request is kept with its id: the
same id sent with another request (another operation, tile, time or data) is refused with
INVALID_ARGUMENT instead of being answered with the first request's result.

A snapshot is taken in the background when the log has grown by ``snapshot_wal_bytes`` or
``snapshot_interval_s`` has passed with something logged, and on a clean shutdown. Taking one
briefly pauses all operations (a read-write gate): the log is rotated to a new segment and
the state of every chip is copied in memory; the copy is then written while operations
continue, and the older segments are deleted once the snapshot is safely renamed into place.
A torn record at the end of the last segment (a crash in the middle of an append, never
acknowledged) is cut off on restore.

Modules: ``records`` (the framing of every record: no pickle, checksummed), ``store`` (the
state directory: lock, log segments, snapshot file), ``chip_state`` (what is stored of a chip
and how a record becomes chip state again), ``registry`` (``DurableRegistry``).
"""

from device_twin.service.persistence.chip_state import RECENT_RESULT_BYTES, RECENT_RESULTS
from device_twin.service.persistence.registry import (
    DEFAULT_SNAPSHOT_INTERVAL_S,
    DEFAULT_SNAPSHOT_WAL_BYTES,
    RECENT_CHIP_CALLS,
    DurableRegistry,
    RestoreReport,
)
from device_twin.service.persistence.store import StateDirBusy, StateStore, StateStoreError

__all__ = [
    "DEFAULT_SNAPSHOT_INTERVAL_S",
    "DEFAULT_SNAPSHOT_WAL_BYTES",
    "RECENT_CHIP_CALLS",
    "RECENT_RESULTS",
    "RECENT_RESULT_BYTES",
    "DurableRegistry",
    "RestoreReport",
    "StateDirBusy",
    "StateStore",
    "StateStoreError",
]
