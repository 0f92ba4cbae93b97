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

Adaptive batch-norm statistics (Joshi 2020, "AdaBS"), alone or on top of these factors, are
:mod:`controller.workloads.adabs`, which also builds every compensation by name.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch

from controller.workloads.mapping import MappedNetwork, MVMFn

_MIN_READOUT = 1e-4  # aihwkit's clamp: a dead tile must not produce an infinite factor


class DriftCompensation:
    """Per-tile (or per-column) output scaling measured on the chip."""

    def __init__(
        self,
        mapped: MappedNetwork,
        kind: Literal["global", "per_column"] = "global",
        read: Literal["identity", "ones"] = "identity",
    ) -> None:
        if kind not in ("global", "per_column"):
            raise ValueError(f"unknown drift compensation {kind!r}: expected global or per_column")
        if read not in ("identity", "ones"):
            raise ValueError(f"unknown compensation read {read!r}: expected identity or ones")
        self.mapped = mapped
        self.kind = kind
        self.read = read
        self.reference: dict[int, np.ndarray] | None = None
        self.factors: dict[int, np.ndarray] = {}
        self.bn_stats: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}  # none: not AdaBS

    def readout(self, mvm: MVMFn) -> dict[int, np.ndarray]:
        """The compensation read of every tile: mean |y| (global: a scalar; per column: one
        value per block column)."""
        out: dict[int, np.ndarray] = {}
        for pos, tm in enumerate(self.mapped.tiles):
            k = tm.block_rows
            x = (
                np.eye(k, dtype=np.float32)
                if self.read == "identity"
                else np.ones((1, k), np.float32)
            )
            a = np.abs(self.mapped.block_mvm(pos, x, mvm).astype(np.float64))
            val = np.asarray(a.mean()) if self.kind == "global" else a.mean(axis=0)
            out[pos] = np.maximum(val, _MIN_READOUT)
        return out

    def calibrate(self, mvm: MVMFn) -> None:
        """The reference read, taken right after programming; factors start at 1."""
        self.reference = self.readout(mvm)
        self.factors = {pos: np.ones_like(v) for pos, v in self.reference.items()}

    def measure(self, mvm: MVMFn) -> None:
        """Read again now and set the factors (reference / now)."""
        if self.reference is None:
            raise RuntimeError(
                "drift compensation is not calibrated: call calibrate(mvm) right after programming"
            )
        now = self.readout(mvm)
        self.factors = {pos: (self.reference[pos] / now[pos]).astype(np.float32) for pos in now}

    def apply(self, pos: int, y: np.ndarray) -> np.ndarray:
        """Scale the outputs ``y`` (batch, block_cols) of ``mapped.tiles[pos]``."""
        f = self.factors.get(pos)
        return y if f is None else y * f
