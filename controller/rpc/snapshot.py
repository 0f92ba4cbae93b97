"""Stored device state read back from the twin (``Snapshot``): the streamed row blocks of each
tile put together as arrays."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

from pcmtwin.codec import tensor_to_numpy


@dataclass
class ChipState:
    """Stored device state of tiles (``Snapshot``): arrays (2, rows, cols), [G+, G-]."""

    chip_id: str
    now_s: float
    op_counter: int
    programmed_tiles: tuple[int, ...]
    g_prog_us: dict[int, np.ndarray]
    nu: dict[int, np.ndarray]
    t_write_s: dict[int, np.ndarray]


def chip_state_from_chunks(chip_id: str, chunks: Iterable[Any]) -> ChipState | None:
    """The ``SnapshotChunk`` messages of one ``Snapshot`` call as a ``ChipState`` (None when the
    twin sent none: no programmed tile asked for)."""
    parts: dict[int, list] = {}
    head = None
    for c in chunks:
        head = c
        parts.setdefault(c.tile, []).append(
            (c.row_start, *(tensor_to_numpy(t, n, (d,)) for t, n, d in (
                (c.g_prog_us, "g_prog_us", "float32"), (c.nu, "nu", "float32"),
                (c.t_write_s, "t_write_s", "float64"))))
        )  # fmt: skip
    if head is None:
        return None
    state = ChipState(chip_id, head.now_s, int(head.op_counter),
                      tuple(int(t) for t in head.programmed_tiles), {}, {}, {})  # fmt: skip
    for t, blocks in parts.items():
        blocks.sort(key=lambda b: b[0])
        state.g_prog_us[t] = np.concatenate([b[1] for b in blocks], axis=1)
        state.nu[t] = np.concatenate([b[2] for b in blocks], axis=1)
        state.t_write_s[t] = np.concatenate([b[3] for b in blocks], axis=1)
    return state
