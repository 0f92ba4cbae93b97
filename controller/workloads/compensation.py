"""Drift compensation in the inference path (aihwkit's and Joshi 2020's methods).

A PCM device loses conductance as ((t + t0)/t0)^-nu, so every MVM output shrinks with time.
Compensation reads a known input through each tile right after programming (``calibrate``)
and again at inference time (``measure``), and scales that tile's outputs by the ratio:

- ``global``: one factor per tile, mean |y| over the whole read (aihwkit's
  ``GlobalDriftCompensation``);
- ``per_column``: one factor per output column (aihwkit's ``PerColumnDriftCompensation``).

The read is ``identity`` (one-hot inputs on every row of the block, aihwkit's choice: each
output is one weight) or ``ones`` (one all-ones input: column sums, cheaper but a column whose
weights cancel reads near 0). Reads go through the same ``MVMFn`` as inference, so on the twin
they cost MVM energy and time like any other.

Both kinds come from the same read: the reference is kept per column (mean |y| of each block
column; the global value is their mean), so the firmware may switch ``kind`` with a new policy
without a new reference. ``recalibrate`` re-takes the reference of chosen columns (after a
correction has rewritten them: their new programming-noise draw becomes their reference).

Adaptive batch-norm statistics (Joshi 2020, "AdaBS"), alone or on top of these factors, are
:mod:`controller.workloads.adabs`, which also builds every compensation by name.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal

import numpy as np
import torch

from controller.workloads.mapping import MappedNetwork, MVMFn

_MIN_READOUT = 1e-4  # aihwkit's clamp: a dead tile must not produce an infinite factor


CompensationKind = Literal["global", "per_column"]


class DriftCompensation:
    """Per-tile (or per-column) output scaling measured on the chip."""

    def __init__(
        self,
        mapped: MappedNetwork,
        kind: CompensationKind = "global",
        read: Literal["identity", "ones"] = "identity",
    ) -> None:
        if read not in ("identity", "ones"):
            raise ValueError(f"unknown compensation read {read!r}: expected identity or ones")
        self.mapped = mapped
        self.kind = kind
        self.read = read
        self._reference_cols: dict[int, np.ndarray] | None = None
        self.factors: dict[int, np.ndarray] = {}
        self.bn_stats: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}  # none: not AdaBS

    @property
    def kind(self) -> CompensationKind:
        return self._kind

    @kind.setter
    def kind(self, kind: CompensationKind) -> None:
        if kind not in ("global", "per_column"):
            raise ValueError(f"unknown drift compensation {kind!r}: expected global or per_column")
        self._kind = kind

    def column_readout(
        self, mvm: MVMFn, positions: Iterable[int] | None = None
    ) -> dict[int, np.ndarray]:
        """The compensation read of every tile (or of the tiles at ``positions`` of
        ``mapped.tiles``): mean |y| of each block column (unclamped)."""
        out: dict[int, np.ndarray] = {}
        wanted = None if positions is None else set(positions)
        for pos, tm in enumerate(self.mapped.tiles):
            if wanted is not None and pos not in wanted:
                continue
            k = tm.block_rows
            x = (
                np.eye(k, dtype=np.float32)
                if self.read == "identity"
                else np.ones((1, k), np.float32)
            )
            a = np.abs(self.mapped.block_mvm(pos, x, mvm).astype(np.float64))
            out[pos] = a.mean(axis=0)
        return out

    def _by_kind(self, cols: dict[int, np.ndarray]) -> dict[int, np.ndarray]:
        if self.kind == "global":
            return {p: np.maximum(np.asarray(v.mean()), _MIN_READOUT) for p, v in cols.items()}
        return {p: np.maximum(v, _MIN_READOUT) for p, v in cols.items()}

    def readout(self, mvm: MVMFn) -> dict[int, np.ndarray]:
        """The compensation read of every tile: mean |y| (global: a scalar; per column: one
        value per block column)."""
        return self._by_kind(self.column_readout(mvm))

    @property
    def reference(self) -> dict[int, np.ndarray] | None:
        """The reference read, for the current ``kind`` (None before ``calibrate``)."""
        return None if self._reference_cols is None else self._by_kind(self._reference_cols)

    def calibrate(self, mvm: MVMFn) -> None:
        """The reference read, taken right after programming; factors start at 1."""
        self._reference_cols = self.column_readout(mvm)
        self.factors = {pos: np.ones_like(v) for pos, v in self.reference.items()}  # type: ignore[union-attr]

    def recalibrate(self, mvm: MVMFn, columns: dict[int, np.ndarray]) -> None:
        """Re-take the reference of some columns now: ``columns[pos]`` is a boolean mask over
        the block columns of ``mapped.tiles[pos]`` (columns just rewritten from scratch)."""
        if self._reference_cols is None:
            raise RuntimeError("drift compensation is not calibrated: call calibrate(mvm) first")
        now = self.column_readout(mvm, columns)  # only the tiles holding such columns
        for pos, mask in columns.items():
            ref = self._reference_cols[pos].copy()
            ref[np.asarray(mask, bool)] = now[pos][np.asarray(mask, bool)]
            self._reference_cols[pos] = ref

    def measure(self, mvm: MVMFn) -> None:
        """Read again now and set the factors (reference / now)."""
        reference = self.reference
        if reference is None:
            raise RuntimeError(
                "drift compensation is not calibrated: call calibrate(mvm) right after programming"
            )
        now = self.readout(mvm)
        self.factors = {pos: (reference[pos] / now[pos]).astype(np.float32) for pos in now}

    def apply(self, pos: int, y: np.ndarray) -> np.ndarray:
        """Scale the outputs ``y`` (batch, block_cols) of ``mapped.tiles[pos]``."""
        f = self.factors.get(pos)
        return y if f is None else y * f
