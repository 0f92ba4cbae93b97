"""The chips a twin holds, by id, with one lock per chip and the server's limits.

``ChipRegistry`` is the in-process twin: it offers the same calls as the gRPC client
(``controller.rpc.client.TwinClient``), each naming its chip first, so the controller can run
against either. The gRPC servicer is a thin layer over it.
"""

from __future__ import annotations

import re
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import numpy as np

from device_twin.chip import Chip, OpResult
from device_twin.config import ChipConfig
from device_twin.errors import AlreadyExists, InvalidArgument, NotFound, ResourceExhausted

T = TypeVar("T")
_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")

#: Default memory budget for device state across all chips of one twin (bytes).
DEFAULT_STATE_BUDGET_BYTES = 4 * 1024**3
DEFAULT_MAX_CHIPS = 64


@dataclass(frozen=True)
class ChipInfo:
    chip_id: str
    config: ChipConfig
    now_s: float
    programmed_tiles: tuple[int, ...]
    state_bytes: int
    op_counter: int


class ChipRegistry:
    """Chips by id; every call on a chip holds that chip's lock for its whole duration."""

    def __init__(
        self,
        state_budget_bytes: int = DEFAULT_STATE_BUDGET_BYTES,
        max_chips: int = DEFAULT_MAX_CHIPS,
    ) -> None:
        self.state_budget_bytes = int(state_budget_bytes)
        self.max_chips = int(max_chips)
        self._chips: dict[str, Chip] = {}
        self._locks: dict[str, threading.RLock] = {}
        self._lock = threading.Lock()

    # --- chips ------------------------------------------------------------------------------
    def create_chip(self, config: ChipConfig, chip_id: str | None = None) -> str:
        chip_id = chip_id or uuid.uuid4().hex[:12]
        if not _ID_RE.match(chip_id):
            raise InvalidArgument(
                f"chip_id {chip_id!r} is not valid: 1-64 characters of letters, digits, _ . -",
                field="chip_id",
            )
        with self._lock:
            if chip_id in self._chips:
                raise AlreadyExists(f"chip {chip_id!r} already exists")
            if len(self._chips) >= self.max_chips:
                raise ResourceExhausted(f"this twin holds at most {self.max_chips} chips")
            used = sum(c.config.state_bytes for c in self._chips.values())
            if used + config.state_bytes > self.state_budget_bytes:
                raise ResourceExhausted(
                    f"chip state of {config.state_bytes} bytes does not fit: "
                    f"{used} of {self.state_budget_bytes} bytes already in use"
                )
            self._chips[chip_id] = Chip(config)
            self._locks[chip_id] = threading.RLock()
        return chip_id

    def add_chip(self, chip_id: str, chip: Chip) -> None:
        """Register a restored chip (persistence)."""
        with self._lock:
            self._chips[chip_id] = chip
            self._locks[chip_id] = threading.RLock()

    def delete_chip(self, chip_id: str) -> None:
        with self._lock:
            self._get(chip_id)
            lock = self._locks[chip_id]
        with lock, self._lock:
            self._chips.pop(chip_id, None)
            self._locks.pop(chip_id, None)

    def list_chips(self) -> list[str]:
        with self._lock:
            return sorted(self._chips)

    def _get(self, chip_id: str) -> Chip:
        chip = self._chips.get(chip_id)
        if chip is None:
            raise NotFound(f"chip {chip_id!r} not found", field="chip_id")
        return chip

    def with_chip(self, chip_id: str, fn: Callable[[Chip], T]) -> T:
        """Run ``fn(chip)`` under the chip's lock."""
        with self._lock:
            chip = self._get(chip_id)
            lock = self._locks[chip_id]
        with lock:
            if self._chips.get(chip_id) is not chip:  # deleted while we waited
                raise NotFound(f"chip {chip_id!r} not found", field="chip_id")
            return fn(chip)

    def chip_info(self, chip_id: str) -> ChipInfo:
        def info(c: Chip) -> ChipInfo:
            return ChipInfo(
                chip_id, c.config, c.now_s, tuple(int(t) for t in np.flatnonzero(c.programmed)),
                c.state_bytes, c.op_counter,
            )  # fmt: skip

        return self.with_chip(chip_id, info)

    def energy_ledger(self, chip_id: str) -> dict[str, dict]:
        return self.with_chip(chip_id, lambda c: c.ledger.to_dict())

    # --- operations (same names and arguments as the Chip, chip id first) -----------------
    def program(
        self, chip_id: str, tile, g_target_pos_us, g_target_neg_us, at_s, pair=0
    ) -> OpResult:
        return self.with_chip(
            chip_id, lambda c: c.program(tile, g_target_pos_us, g_target_neg_us, at_s, pair)
        )

    def program_devices(
        self, chip_id: str, tile, array, devices, g_target_us, at_s, pair=0
    ) -> OpResult:
        return self.with_chip(
            chip_id, lambda c: c.program_devices(tile, array, devices, g_target_us, at_s, pair)
        )

    def apply_pulses(
        self, chip_id: str, tile, array, devices, kind, count, at_s, pair=0
    ) -> OpResult:
        return self.with_chip(
            chip_id, lambda c: c.apply_pulses(tile, array, devices, kind, count, at_s, pair)
        )

    def program_verify(
        self, chip_id: str, tile, arrays, devices, g_target_us, job, at_s, g_read_us=None
    ) -> OpResult:
        return self.with_chip(
            chip_id,
            lambda c: c.program_verify(tile, arrays, devices, g_target_us, job, at_s, g_read_us),
        )

    def read_devices(self, chip_id: str, tile, array, devices, at_s, pair=0) -> OpResult:
        return self.with_chip(chip_id, lambda c: c.read_devices(tile, array, devices, at_s, pair))

    def probe(
        self, chip_id: str, tile, rows, array, at_s, col_start=0, col_count=None, pair=0
    ) -> OpResult:
        return self.with_chip(
            chip_id, lambda c: c.probe(tile, rows, array, at_s, col_start, col_count, pair)
        )

    def mvm(
        self, chip_id: str, tile, x, at_s, row_start=0, col_start=0, col_count=None
    ) -> OpResult:
        return self.with_chip(
            chip_id, lambda c: c.mvm(tile, x, at_s, row_start, col_start, col_count)
        )

    def conv_mvm(
        self, chip_id: str, tile, x, at_s, geometry, patch_start, k, row_start=0, col_start=0,
        col_count=None, rows_per_mvm=0,
    ) -> OpResult:  # fmt: skip
        return self.with_chip(
            chip_id,
            lambda c: c.conv_mvm(tile, x, at_s, geometry, patch_start, k, row_start, col_start,
                                 col_count, rows_per_mvm),
        )  # fmt: skip
