"""Reading devices: their state at an instant through the chip's device family.

A read gathers the devices' lazy state (g_prog, the family's parameter, age since the last
write) and lets the family evaluate it. Read noise is the keyed 1/f process of
``device_twin.flicker`` at the read's instant, so every read of a device at one instant sees
one realisation (device reads, probes and the weights of MVMs alike), and reading never
changes a device or a later draw. Families whose state relaxes after a write draw their
relaxation normal from the write's keys (``rng.STREAM_RELAX``), again at every read.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch

from device_twin.families.base import DeviceBatch, ReadDraws
from device_twin.rng import STREAM_RELAX, WriteKeys, device_ids

if TYPE_CHECKING:
    from device_twin.chip import Chip


def _relaxation(chip: Chip, tile: int, arrays, index: np.ndarray, write_count: np.ndarray):
    def draw() -> torch.Tensor:
        ids = device_ids(np.broadcast_to(arrays, index.shape), index)
        last = write_count.astype(np.int64) - 1  # the write that made the current state
        keys = WriteKeys(chip.config.seed, tile, ids, last & 0xFFFFFFFF)
        return torch.from_numpy(keys.normals(STREAM_RELAX)[0])

    return draw


def read_selected(
    chip: Chip, tile: int, arrays: np.ndarray, index: np.ndarray, at_s: float, noisy: bool
) -> torch.Tensor:
    """Conductance (uS, float32) of devices (tile, arrays[i], index[i]) at ``at_s``."""
    flat = chip.positions(tile, arrays, index)
    g = torch.from_numpy(chip.g_prog_us.reshape(-1).take(flat))
    param = torch.from_numpy(chip.nu.reshape(-1).take(flat))
    age = torch.from_numpy((at_s - chip.t_write_s.reshape(-1).take(flat)).astype(np.float32))
    flicker = None
    if noisy:

        def flicker(band: torch.Tensor) -> torch.Tensor:
            return chip.flicker.sample(tile, at_s, band, arrays, index)

    count = chip.write_count.reshape(-1).take(flat)
    draws = ReadDraws(flicker, _relaxation(chip, tile, arrays, index, count))
    return chip.family.read(DeviceBatch(g, param, age), draws)


def read_array(chip: Chip, tile: int, array: int, at_s: float, noisy: bool) -> torch.Tensor:
    """Conductance (uS, float32) of every device of one array, shape (rows, cols)."""
    shape = chip.shape
    g = torch.from_numpy(chip.g_prog_us[tile, array].reshape(-1))
    param = torch.from_numpy(chip.nu[tile, array].reshape(-1))
    age = torch.from_numpy((at_s - chip.t_write_s[tile, array].reshape(-1)).astype(np.float32))
    flicker = None
    if noisy:

        def flicker(band: torch.Tensor) -> torch.Tensor:
            return chip.flicker.sample(tile, at_s, band, array)

    index = np.arange(g.numel(), dtype=np.int64)
    count = chip.write_count[tile, array].reshape(-1)
    draws = ReadDraws(flicker, _relaxation(chip, tile, array, index, count))
    return chip.family.read(DeviceBatch(g, param, age), draws).reshape(shape)


def read_block(
    chip: Chip, tile: int, arrays: list[int], rows: np.ndarray, cols: slice, at_s: float
) -> torch.Tensor:
    """Noisy conductance of a block of rows and columns of each array: (arrays, rows, cols).

    A block of most of a tile reads whole arrays (the fast path); a smaller one reads its
    devices by index."""
    r, c = chip.shape
    n_cols = cols.stop - cols.start
    if rows.size * n_cols * 2 >= r * c:
        return torch.stack([read_array(chip, tile, a, at_s, True)[rows][:, cols] for a in arrays])
    index = (rows[:, None] * c + np.arange(cols.start, cols.stop)[None, :]).reshape(-1)
    n = index.size
    arr = np.repeat(np.asarray(arrays, np.int8), n)
    g = read_selected(chip, tile, arr, np.tile(index, len(arrays)), at_s, True)
    return g.reshape(len(arrays), rows.size, n_cols)


def effective_weights(chip: Chip, tile: int, at_s: float) -> tuple[torch.Tensor, np.ndarray]:
    """(cols, rows) effective weights sum_k F^k (G+_k - G-_k)/g_max at ``at_s`` (one pair:
    (G+ - G-)/g_max), one read-noise draw, and the per-row sum of every device's conductance
    (uS, for the read energy).

    The periphery combines the pairs as the MVM runs (Mackin 2022: the MSP's current counts
    F times, by a current mirror or a longer read pulse). As with aihwkit's
    ``drift_analog_weights(t)``, one realisation of the read noise holds for all MVMs of a
    tile at one instant: it is a function of (seed, tile, state, at_s) alone, so the cache
    below is a pure memo and a restored chip reads the same weights.
    """
    key = (at_s, int(chip.tile_version[tile]))
    cached = chip.w_eff_cache.get(tile)
    if cached is not None and cached[0] == key:
        return cached[1], cached[2]
    w = None
    g_row_sum = np.zeros(chip.shape[0])
    for k, f in enumerate(chip.config.significance):
        g_pos = read_array(chip, tile, 2 * k, at_s, True)
        g_neg = read_array(chip, tile, 2 * k + 1, at_s, True)
        d = g_pos - g_neg if k == 0 else (g_pos - g_neg) * f
        w = d if w is None else w + d
        g_row_sum += (g_pos + g_neg).sum(dim=1, dtype=torch.float64).numpy()
    assert w is not None
    w = (w / chip.config.g_max_us).T.contiguous()
    chip.w_eff_cache[tile] = (key, w, g_row_sum)
    return w, g_row_sum


def block_row_sum(chip: Chip, tile: int, at_s: float, rsl: slice, csl: slice) -> np.ndarray:
    """Per-row sum of every device's conductance over a block, noise-free (the read energy of
    an MVM block)."""
    c = chip.shape[1]
    rows = np.arange(rsl.start, rsl.stop)
    index = (rows[:, None] * c + np.arange(csl.start, csl.stop)[None, :]).reshape(-1)
    n_arrays = chip.n_arrays
    arr = np.repeat(np.arange(n_arrays, dtype=np.int8), index.size)
    g = read_selected(chip, tile, arr, np.tile(index, n_arrays), at_s, False)
    return g.reshape(n_arrays, rows.size, -1).sum(dim=(0, 2), dtype=torch.float64).numpy()
