"""What a correction rewrites, so that drift compensation stays valid after it.

Inference scales each compensation group's outputs by one factor (``gdc``: a tile,
``per_column``: an output column) measured on the group as a whole. A PCM device drifts as
``((t - t_write + t0)/t0)^-nu``: a device rewritten when its neighbours are T old reads
``(1 + T/t0)^nu`` times its compensated neighbours right after (1.5x after a day, 2x after a
year at nu = 0.05), and comes back into line only over a time of the order of T. Programming it
to its level times the drift its group shows (``matched``) is right at that instant, but it
then falls faster than its neighbours (7 % in a minute, 34 % in a day) and ends at the matched
fraction: worse. The only rewrite that keeps one factor right for the whole group is one that
gives the group's devices a common age: rewrite whole groups.

``rewrite`` (a parameter of every probing policy):

=========== ==================================================================================
``columns`` every device holding a weight in each column with a device to correct (both
            arrays): the column's devices share their age, and per-column compensation keeps
            each column right (the default, with ``compensation: per_column``)
``tile``    every device of a tile with a device to correct (the group of ``gdc``)
``devices`` only the devices to correct, to their levels (the policies' former behaviour)
``matched`` only the devices to correct, to their level times the drift their compensation
            group shows now (``group_decay``); the policy remembers the factor, so that later
            checks expect it
=========== ==================================================================================

A group rewrite skips devices at level 0 (0 uS, or the family's floor) unless they were
selected themselves: a device at 0 uS (RESET) does not drift.

:func:`column_errors` is the column check of ``scope="column"``: what inference will see of
each column after its compensation, from one probe.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import numpy as np

from controller.firmware.policies.base import NEG, POS, ChipView, CorrectionJob, TileReading

Rewrite = Literal["columns", "tile", "devices", "matched"]
REWRITES: tuple[str, ...] = ("columns", "tile", "devices", "matched")


def _weights(view: ChipView, tr: TileReading) -> tuple[np.ndarray, np.ndarray]:
    """(y, y0): the probed weights now and their levels, (len(rows), cols), weight units."""
    g = view.g_max_us
    y = (tr.g_us[POS] - tr.g_us[NEG]) / g
    y0 = (tr.target_us[POS] - tr.target_us[NEG]) / g
    return y, y0


def group_decay(view: ChipView, tr: TileReading, per_column: bool) -> np.ndarray:
    """Per column, the drift its compensation group shows now: sum |y| / sum |y0| over the
    probed weights of the column (``per_column``) or of the whole tile (one value, repeated).
    1 where the group holds no weight."""
    y, y0 = _weights(view, tr)
    a = np.where(tr.used, np.abs(y), 0.0).sum(axis=0)
    a0 = np.where(tr.used, np.abs(y0), 0.0).sum(axis=0)
    if not per_column:
        a, a0 = np.full_like(a, a.sum()), np.full_like(a0, a0.sum())
    return np.where(a0 > 0, a / np.maximum(a0, 1e-12), 1.0)


def column_errors(view: ChipView, tr: TileReading, per_column: bool) -> np.ndarray:
    """Per column, the rms error (weight units) of its probed weights once compensated as
    inference will compensate them: ``alpha * y - y0`` with ``alpha = 1/group_decay``. 0 for
    columns without weights."""
    y, y0 = _weights(view, tr)
    alpha = 1.0 / np.maximum(group_decay(view, tr, per_column), 1e-12)
    err = np.where(tr.used, alpha * y - y0, 0.0)
    n = tr.used.sum(axis=0)
    return np.sqrt((err**2).sum(axis=0) / np.maximum(n, 1))


def _group_mask(view: ChipView, tile: int, cols: np.ndarray | None, pair: int = 0) -> np.ndarray:
    """Devices of a pair of the group (every column if ``cols`` is None) holding a weight,
    with a level above 0 (the family's floor), per sign: (2, rows, cols) bool."""
    used = view.used[tile]
    floor = float(getattr(view, "g_floor_us", np.zeros(view.n_tiles))[tile])
    mask = np.zeros((2, *used.shape), bool)
    for a in (POS, NEG):
        m = used & (view.target_us[tile, 2 * pair + a] > floor)
        if cols is not None:
            keep = np.zeros(used.shape[1], bool)
            keep[cols] = True
            m &= keep[None, :]
        mask[a] = m
    return mask


def group_size(view: ChipView, tile: int, col: int | None, pair: int = 0) -> int:
    """Devices of a pair a group rewrite of one column (``col``) or of the whole tile (None)
    writes."""
    cols = None if col is None else np.asarray([col])
    return int(_group_mask(view, tile, cols, pair).sum())


def expand(view: ChipView, job: CorrectionJob, rewrite: str) -> CorrectionJob:
    """The job that rewrites what ``rewrite`` says for the devices ``job`` selected (the
    selected devices are always in it)."""
    if rewrite in ("devices", "matched"):
        return job
    cols_n = view.tile_cols
    if rewrite == "columns":
        cols = np.unique(
            np.concatenate([np.asarray(job.pos) % cols_n, np.asarray(job.neg) % cols_n])
        )
    elif rewrite == "tile":
        cols = None
    else:
        raise ValueError(f"unknown rewrite {rewrite!r}: expected one of {', '.join(REWRITES)}")
    mask = _group_mask(view, job.tile, cols, job.pair)
    flat = {a: np.flatnonzero(mask[a].reshape(-1)) for a in (POS, NEG)}
    pos = np.union1d(flat[POS], np.asarray(job.pos, np.int64)).astype(np.int64)
    neg = np.union1d(flat[NEG], np.asarray(job.neg, np.int64)).astype(np.int64)
    why = f"{job.reason} ({rewrite})"
    return CorrectionJob(job.tile, pos=pos, neg=neg, reason=why, pair=job.pair)


def column_jobs(
    view: ChipView, tile: int, cols: np.ndarray, reason: str, pair: int = 0
) -> CorrectionJob:
    """A job rewriting every device of a pair in ``cols`` (both signs; levels above 0)."""
    mask = _group_mask(view, tile, np.asarray(cols, np.int64), pair)
    pos, neg = (np.flatnonzero(mask[a].reshape(-1)).astype(np.int64) for a in (POS, NEG))
    return CorrectionJob(tile, pos=pos, neg=neg, reason=reason, pair=pair)


def matched_targets(
    view: ChipView, job: CorrectionJob, decay: np.ndarray
) -> tuple[CorrectionJob, np.ndarray, np.ndarray]:
    """The job with targets ``level * decay[column]`` (a decay read above 1 through noise
    counts as 1), and the factor of each of its devices (pos, neg)."""
    cols = view.tile_cols
    decay = np.minimum(decay, 1.0)
    f_pos = decay[np.asarray(job.pos) % cols]
    f_neg = decay[np.asarray(job.neg) % cols]
    t, k = job.tile, 2 * job.pair
    tp = (view.target_us[t, k + POS].reshape(-1)[job.pos] * f_pos).astype(np.float32)
    tn = (view.target_us[t, k + NEG].reshape(-1)[job.neg] * f_neg).astype(np.float32)
    out = CorrectionJob(t, pos=job.pos, neg=job.neg, reason=f"{job.reason} (matched)",
                        target_pos_us=tp, target_neg_us=tn, pair=job.pair)  # fmt: skip
    return out, f_pos, f_neg


def rewritten_columns(
    view: ChipView, mapped: Any, jobs: Sequence[CorrectionJob]
) -> dict[int, np.ndarray]:
    """The columns ``jobs`` rewrote whole (every device of the column with a level above
    0, both signs of every pair), as masks over the block columns of each position of
    ``mapped.tiles`` (what ``DriftCompensation.recalibrate`` takes)."""
    cols_n = view.tile_cols
    pairs = int(getattr(view, "pairs_per_weight", 1))
    got: dict[int, np.ndarray] = {}
    for job in jobs:
        mask = _group_mask(view, job.tile, None, job.pair)
        n = got.setdefault(job.tile, np.zeros(cols_n, np.int64))
        for a, idx in ((POS, job.pos), (NEG, job.neg)):
            idx = np.asarray(idx, np.int64)
            hit = mask[a].reshape(-1)[idx]
            np.add.at(n, idx[hit] % cols_n, 1)
    whole: dict[int, set[int]] = {}
    for tile, n in got.items():
        need = sum(_group_mask(view, tile, None, k).sum(axis=(0, 1)) for k in range(pairs))
        whole[tile] = {int(c) for c in np.flatnonzero((need > 0) & (n >= need))}
    out: dict[int, np.ndarray] = {}
    for pos, tm in enumerate(mapped.tiles):
        cols = whole.get(int(tm.tile))
        if not cols:
            continue
        c0 = int(getattr(tm, "col_offset", 0))
        block = np.arange(c0, c0 + int(getattr(tm, "block_cols", view.tile_cols)))
        m = np.isin(block, sorted(cols))
        if m.any():
            out[pos] = m
    return out
