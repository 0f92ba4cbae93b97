"""Correcting through the least significant pair alone (``pairs="lsp"``, Mackin 2022).

On a chip with several pairs per weight, a weight is ``sum_k f_k (G+_k - G-_k)``; the least
significant pair (LSP, f_0 = 1) has the finest resolution. Instead of rewriting every drifted
device, the firmware can leave the more significant pairs alone and let the LSP absorb the
whole weight's error: where ``|sum_k f_k (g+_k - g-_k) - target| / g_max`` exceeds the
threshold (reads of every pair, raw), the LSP's difference must change by
``delta = target - read``. PCM can only be raised gradually, so:

- if ``delta > 0`` the LSP's G+ device is raised by ``delta``, else its G- device by
  ``-delta``: one device per weight, partial SET steps (cheap, no RESET);
- if that device would go above ``LSP_CAP * g_max`` (where devices start to saturate below
  their target), both LSP devices are re-programmed instead, to
  ``max(+-(target - sum_{k>0} f_k (g+_k - g-_k)), 0)``, capped at the same level (a weight
  whose more significant pairs drifted beyond what the LSP can hold is corrected as far as
  it can be).

The new LSP targets travel in the job (``target_pos_us`` / ``target_neg_us``); the firmware's
stored targets stay those of the mapping, so the next check judges the whole weight again.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from controller.firmware.policies.base import (
    NEG,
    POS,
    ChipView,
    CorrectionJob,
    TileReading,
    flat_indices,
)

#: Highest LSP target a correction sets, as a fraction of g_max (the twin's PCM devices reach
#: their saturation bound below 25 uS for about 1 % at 20 uS, 20 % at 24 uS).
LSP_CAP = 0.8


def lsp_targets(
    view: ChipView, readings: Sequence[TileReading], threshold: float, name: str
) -> tuple[CorrectionJob | None, float]:
    """The LSP job of one tile (``readings``: the tile's reading of every pair, pair 0 first,
    on the same rows) and the largest weight error it answers (fractions of g_max)."""
    f = view.significance
    g_max = view.g_max_us
    lsp = readings[0]
    diff = [r.g_us[POS].astype(np.float64) - r.g_us[NEG] for r in readings]
    target = [r.target_us[POS].astype(np.float64) - r.target_us[NEG] for r in readings]
    upper_read = sum(f[k] * diff[k] for k in range(1, len(readings)))
    total_target = sum(f[k] * target[k] for k in range(len(readings)))
    delta = total_target - (upper_read + diff[0])
    bad = (np.abs(delta) / g_max > threshold) & lsp.used
    if not np.any(bad):
        return None, 0.0
    cap = LSP_CAP * g_max
    g_pos, g_neg = lsp.g_us[POS], lsp.g_us[NEG]
    raise_pos = bad & (delta > 0) & (g_pos + delta <= cap)
    raise_neg = bad & (delta <= 0) & (g_neg - delta <= cap)
    rewrite = bad & ~raise_pos & ~raise_neg
    d0 = np.clip(total_target - upper_read, -cap, cap)
    new_pos = np.where(raise_pos, g_pos + delta, np.clip(d0, 0, None))
    new_neg = np.where(raise_neg, g_neg - delta, np.clip(-d0, 0, None))
    pos_mask, neg_mask = raise_pos | rewrite, raise_neg | rewrite
    cols = view.tile_cols
    # row-major, the order of new_pos[pos_mask]: the targets line up with the devices
    pos = flat_indices(pos_mask, lsp.rows, cols)
    neg = flat_indices(neg_mask, lsp.rows, cols)
    why = (f"{name}: {int(bad.sum())} weights beyond {threshold:g} trimmed on the LSP "
           f"({int(rewrite.sum())} re-programmed)")  # fmt: skip
    job = CorrectionJob(
        lsp.tile, pos=pos, neg=neg, reason=why, pair=0,
        target_pos_us=new_pos[pos_mask].astype(np.float32),
        target_neg_us=new_neg[neg_mask].astype(np.float32),
    )  # fmt: skip
    return job, float(np.abs(delta[bad]).max() / g_max)
