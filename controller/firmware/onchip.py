"""Running the network on the chip at one instant: calibration, evaluations, host inferences.

A forward pass holds every tile of the network (in tile order, so that two passes never
deadlock), so it waits for tiles under correction, probing or programming. Once it has them,
``fn(mvm, compensation)`` runs at that instant: every MVM it makes is one twin ``mvm`` call
(a convolution's, one ``conv_mvm`` call per tile: the twin unrolls the activation) at
``at_s = now``. The tiles are then held for the latency the twin reported (the sum over
MVMs: the tiles of a layer chain work one after the other), and the pass is recorded on the
ledger with its kind (calibration, evaluation or inference).

An evaluation is the experimenter's measurement, not the chip's work: it waits for tiles
under correction like any pass but then takes no simulated time (its ``end_s`` and ledger
event still carry its latency). With the twin's draws keyed by what is drawn, adding or
moving evaluation times then changes no device, pulse or later measurement.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import Any

import numpy as np
import simpy

from controller.firmware.context import ChipContext
from controller.firmware.ledger import OpAccumulator
from controller.firmware.quantities import CALIBRATION, EVALUATION

#: What runs on the chip: gets an MVM function and the compensation object (or None).
ChipFn = Callable[[Callable[..., Any], Any], Any]


@dataclass(frozen=True)
class Pass:
    """What a forward pass returned, and when and at what cost it ran."""

    value: Any
    start_s: float  # the instant the chip was read (every MVM carries it)
    end_s: float  # start_s plus the MVMs' latency
    energy_pj: float  # twin energy of its MVMs


class OnChip:
    """Forward passes of the network on its tiles (see the module docstring).

    ``compensation()`` is the drift compensation an inference or evaluation applies now (None:
    none); a calibration never gets one (it measures the reference)."""

    def __init__(self, ctx: ChipContext, compensation: Callable[[], Any]) -> None:
        self.ctx = ctx
        self.compensation = compensation

    def mvm_fn(self, ops: OpAccumulator, at_s: float) -> Callable[..., np.ndarray]:
        """An MVM on one tile of this chip at ``at_s``, its cost booked on ``ops``; with
        ``.conv`` (a convolution's MVMs unrolled by the twin) if the twin offers them."""
        twin, chip = self.ctx.twin, self.ctx.chip_id

        def mvm(
            tile: int, x: Any, row_start: int = 0, col_start: int = 0, col_count: int | None = None
        ) -> np.ndarray:
            if hasattr(x, "detach"):
                x = x.detach().cpu().numpy()
            x = np.ascontiguousarray(x, dtype=np.float32)
            count = None if col_count is None else int(col_count)
            r = twin.mvm(chip, int(tile), x, at_s, int(row_start), int(col_start), count)
            return ops.add(r).values

        def conv(
            tile: int, x: np.ndarray, geometry: Any, patch_start: int, k: int, row_start: int,
            col_start: int, col_count: int, rows_per_mvm: int,
        ) -> np.ndarray:  # fmt: skip
            r = twin.conv_mvm(chip, int(tile), np.ascontiguousarray(x, dtype=np.float32), at_s,
                              geometry, int(patch_start), int(k), int(row_start),
                              int(col_start), int(col_count), int(rows_per_mvm))  # fmt: skip
            return ops.add(r).values

        if hasattr(twin, "conv_mvm"):
            mvm.conv = conv  # type: ignore[attr-defined]
        return mvm

    def run(
        self, fn: ChipFn, kind: str, detail: dict[str, Any], submitted_s: float | None = None
    ) -> Generator[simpy.Event, Any, Pass]:
        """Run ``fn(mvm, compensation)`` on every tile of the network at one instant.

        ``detail`` goes into the ledger event, with the number of MVM calls and the time spent
        queueing since ``submitted_s`` (default: no queueing counted)."""
        ctx, env = self.ctx, self.ctx.env
        holds = ctx.locks.hold_many(ctx.view.tiles, kind)
        try:
            yield env.all_of([h.request for h in holds])
            start = env.now
            ops = ctx.ledger.action()
            comp = None if kind == CALIBRATION else self.compensation()
            value = fn(self.mvm_fn(ops, start), comp)
            if kind != EVALUATION:  # an observation takes no chip time (module docstring)
                yield env.timeout(ops.latency_s)
        finally:
            for h in holds:
                h.release()
        queued = 0.0 if submitted_s is None else start - submitted_s
        detail = {**detail, "mvm_calls": ops.ops, "queued_s": queued}
        end = start + ops.latency_s
        ctx.ledger.add(kind, start, end, devices=0, ops=ops, detail=detail)
        return Pass(value, start, end, ops.energy_pj)
