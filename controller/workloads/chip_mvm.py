"""The MVMs of an in-process chip as the functions a mapped network runs on
(:class:`~controller.workloads.mapping.MVMFn`, :class:`~controller.workloads.mapping.ConvMVMFn`):
an in-process ``Chip``, or anything with its ``mvm`` and ``conv_mvm``, at one instant."""

from __future__ import annotations

from typing import Any

import numpy as np

from controller.workloads.mapping import MVMFn
from device_twin.unroll import ConvGeometry


class ChipMVM:
    """The MVMs of an in-process ``Chip`` (or anything with its ``mvm`` and ``conv_mvm``) at
    one instant: an ``MVMFn`` and a ``ConvMVMFn``."""

    def __init__(self, chip: Any, at_s: float) -> None:
        self.chip, self.at_s = chip, at_s

    def __call__(
        self, tile: int, x: np.ndarray, row_start: int = 0, col_start: int = 0,
        col_count: int | None = None,
    ) -> np.ndarray:  # fmt: skip
        return self.chip.mvm(tile, x, self.at_s, row_start, col_start, col_count).values

    def conv(
        self, tile: int, x: np.ndarray, geometry: ConvGeometry, patch_start: int, k: int,
        row_start: int, col_start: int, col_count: int, rows_per_mvm: int,
    ) -> np.ndarray:  # fmt: skip
        return self.chip.conv_mvm(tile, x, self.at_s, geometry, patch_start, k, row_start,
                                  col_start, col_count, rows_per_mvm).values  # fmt: skip


def chip_mvm(chip: Any, at_s: float, unroll_on_chip: bool = True) -> MVMFn:
    """The MVM function of an in-process ``Chip`` at time ``at_s``; ``unroll_on_chip=False``:
    plain MVMs only (convolutions are unrolled by the caller)."""
    mvm = ChipMVM(chip, at_s)
    if unroll_on_chip:
        return mvm
    return lambda tile, x, row_start, col_start, col_count: mvm(
        tile, x, row_start, col_start, col_count
    )
