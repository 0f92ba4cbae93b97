"""The framing of every record in the state directory (log segments and snapshots alike).

A record is ``magic | payload length | crc32 | payload`` with payload
``header length | header JSON | raw little-endian arrays``; no pickle anywhere, so a state
directory cannot make the server execute code. ``read_records`` stops at the first record
that is cut short or fails its checksum (``TornRecord``), so a crash in the middle of an
append is recognised on restore.
"""

from __future__ import annotations

import json
import os
import struct
import zlib
from collections.abc import Iterator
from typing import Any, BinaryIO

import numpy as np

_MAGIC = b"PTW1"
_FRAME = struct.Struct("<4sQI")  # magic, payload length, crc32 of the payload
_HEADER_LEN = struct.Struct("<I")


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
