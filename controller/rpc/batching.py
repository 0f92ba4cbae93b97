"""Operations too large for one gRPC message: how the twin client splits a batch so that each
request and each response fits (``message_batches``), and the results of the parts as one
(``joined``)."""

from __future__ import annotations

import numpy as np

from device_twin.chip import OpResult
from pcmtwin.codec import MESSAGE_OVERHEAD_BYTES


def message_batches(x: np.ndarray, out_bytes_per_item: int, max_message_bytes: int
                    ) -> list[tuple[int, int]]:  # fmt: skip
    """(start, stop) pairs over the first axis of ``x`` (a batch of at least one item) such
    that each part's input and its output (``out_bytes_per_item`` per item) fit in one
    message of ``max_message_bytes``."""
    batch = x.shape[0]
    per_in = x.nbytes // batch
    limit = max_message_bytes - MESSAGE_OVERHEAD_BYTES
    per = max(1, limit // max(per_in, out_bytes_per_item))
    return [(b, min(b + per, batch)) for b in range(0, batch, per)]


def joined(results: list[OpResult]) -> OpResult:
    """The results of one operation's calls (split to fit messages) as one."""
    if len(results) == 1:
        return results[0]
    first = results[0]
    return OpResult(
        first.kind, first.tile, first.at_s, devices=first.devices,
        energy_pj=float(sum(r.energy_pj for r in results)),
        latency_s=float(sum(r.latency_s for r in results)),
        values=np.concatenate([r.values for r in results]),
    )  # fmt: skip
