"""1/f read noise correlated in time: a few levels of piecewise-constant noise keyed by time.

aihwkit's read noise at device age ``a`` has variance sigma^2 * L(a) with
``L(a) = ln((a + t0 + t_read)/(2 t_read))``: a 1/f spectrum integrated from the slowest
period the device has lived through (a + t0 + t_read) to the fastest a read resolves
(2 t_read), an equal ln(10) per decade. The twin draws the unit process (variance L) as

    S_i(t) = sum_k c_k(L_i) * Z_k[tile, array, b_k(t)][i]

- level k stands for the periods [P_k, P_k+1], P_k = 2 t_read * RATIO^k (``LEVELS`` levels,
  the last one open-ended); ``c_k^2 = clamp(L - k ln RATIO, 0, ln RATIO)``: every decade
  between 2 t_read and the device's age keeps its share of aihwkit's variance, so
  Var S = L exactly, at every age;
- Z_k is constant over buckets of absolute device time of length tau_k = BUCKET * P_k, with
  a random phase per (tile, array, level): b_k(t) = floor((t + phase)/tau_k). Its value in a
  bucket is an array of normals drawn from the key (seed, tile, array, level, bucket, block
  of ``BLOCK`` devices, or the whole array when smaller), so it is a pure function of what is
  read and when.

Consequences: reads at one instant (MVMs, probes, device reads) share one realisation;
reads microseconds apart share all levels but the fastest; reads further apart than a
device's age share none. Averaged over phases the correlation at lag d is
sum_k c_k^2 max(0, 1 - d/tau_k) / L, within 0.12 of a continuous 1/f spectrum over the same
band for lags from 0.1 us to 3x the age and ages up to a year (``tests/device_twin``).

Why so few, wide levels: each level whose bucket is shorter than the time between two reads
costs a fresh normal per device. With 6 levels of 2.8 decades an hourly read draws 4 fresh
arrays and takes the slower ones from a bounded LRU cache (``cache_bytes``); a verify read
microseconds after another draws one. A level is drawn for its whole block of 65,536 devices
even when a read needs a few of them.
"""

from __future__ import annotations

import math
from collections import OrderedDict

import numpy as np
import torch

from device_twin.rng import FLICKER, block_normals, derive_key, mix64

LEVELS = 6
RATIO = 600.0
BUCKET = 8.0
BLOCK = 1 << 16
#: Default memory for cached level arrays, per chip.
CACHE_BYTES = 64 * 1024**2


class FlickerNoise:
    """The keyed 1/f process of one chip's devices (see the module docstring)."""

    def __init__(
        self,
        seed: int,
        t_read_s: float,
        devices_per_array: int = BLOCK,
        cache_bytes: int = CACHE_BYTES,
    ) -> None:
        self.seed = int(seed)
        #: Devices per drawn block: BLOCK, or the whole array if it is smaller.
        self.block_size = min(BLOCK, int(devices_per_array))
        p0 = 2.0 * float(t_read_s)
        w = math.log(RATIO)
        self.band_lo = [k * w for k in range(LEVELS)]
        self.band_width = [w] * (LEVELS - 1) + [math.inf]
        self.tau_s = [BUCKET * p0 * RATIO**k for k in range(LEVELS)]
        self.cache_bytes = int(cache_bytes)
        self._cache: OrderedDict[tuple, torch.Tensor] = OrderedDict()
        self._cached_bytes = 0
        #: (tile, array, level) -> (bucket phase in s, the key all its blocks derive from)
        self._levels: dict[tuple[int, int, int], tuple[float, int]] = {}

    def clear_cache(self) -> None:
        """Forget every cached level array (a pure memo: nothing changes but the cost)."""
        self._cache.clear()
        self._cached_bytes = 0

    # --- keyed blocks ---------------------------------------------------------------------
    def _level(self, tile: int, array: int, level: int) -> tuple[float, int]:
        key = (tile, array, level)
        found = self._levels.get(key)
        if found is None:
            base = derive_key(self.seed, FLICKER, tile, array, level)
            phase = (mix64(base ^ 0xFA5E) >> 11) / 2.0**53 * self.tau_s[level]
            found = self._levels[key] = (phase, base)
        return found

    def bucket(self, tile: int, array: int, level: int, at_s: float) -> int:
        phase, _ = self._level(tile, array, level)
        return math.floor((at_s + phase) / self.tau_s[level])

    def block(self, tile: int, array: int, level: int, bucket: int, block: int) -> torch.Tensor:
        """The normals of one level, bucket and block of devices (cached, LRU): drawn from
        the key (seed, tile, array, level, bucket, block)."""
        key = (tile, array, level, bucket, block)
        z = self._cache.get(key)
        if z is not None:
            self._cache.move_to_end(key)
            return z
        base = self._level(tile, array, level)[1]
        mask = (1 << 64) - 1
        seed = mix64(mix64(base ^ (bucket & mask)) ^ block) >> 1
        z = block_normals(seed, self.block_size)
        self._cache[key] = z
        self._cached_bytes += z.nbytes
        while self._cached_bytes > self.cache_bytes and self._cache:
            _, old = self._cache.popitem(last=False)
            self._cached_bytes -= old.nbytes
        return z

    # --- the process ----------------------------------------------------------------------
    def _weights(self, band: torch.Tensor) -> list[tuple[int, float | torch.Tensor]]:
        """Per level: a scalar weight (same for every device) or one per device."""
        lo_all, hi_all = float(band.min()), float(band.max())
        out: list[tuple[int, float | torch.Tensor]] = []
        for k in range(LEVELS):
            lo, width = self.band_lo[k], self.band_width[k]
            if hi_all <= lo:
                break
            if lo_all >= lo + width:
                out.append((k, math.sqrt(width)))
            else:
                out.append((k, torch.sub(band, lo).clamp_(0.0, width).sqrt_()))
        return out

    def sample(
        self,
        tile: int,
        at_s: float,
        band: torch.Tensor,
        arrays: int | np.ndarray,
        index: np.ndarray | None = None,
    ) -> torch.Tensor:
        """S at ``at_s`` (variance ``band`` per device, float32) for devices of one tile.

        ``index=None``: every device of array ``arrays`` in order. Otherwise device i is
        (``arrays[i]``, ``index[i]``), any order."""
        band = band.reshape(-1).float()
        weights = self._weights(band)
        if not weights:
            return torch.zeros_like(band)
        out = torch.empty_like(band)
        size = self.block_size
        if index is None:
            n = band.numel()
            for b, s in enumerate(range(0, n, size)):
                e = min(s + size, n)
                for i, (k, wk) in enumerate(weights):
                    z = self.block(tile, int(arrays), k, self.bucket(tile, int(arrays), k, at_s), b)
                    _accumulate(out[s:e], wk, z[: e - s], s, e, first=i == 0)
            return out
        arrays = np.broadcast_to(np.asarray(arrays, np.int64), np.shape(index))
        index = np.asarray(index, np.int64)
        block_of, local_index = np.divmod(index, size)
        group = arrays * (1 << 40) + block_of
        order = None
        if group.size > 1 and np.any(group[1:] < group[:-1]):
            order = np.argsort(group, kind="stable")
            group, local_index = group[order], local_index[order]
            weights = [(k, w if isinstance(w, float) else w[torch.from_numpy(order)])
                       for k, w in weights]  # fmt: skip
        starts = np.flatnonzero(np.r_[True, group[1:] != group[:-1]])
        ends = np.r_[starts[1:], group.size]
        local = torch.from_numpy(local_index)
        acc = torch.empty_like(band)
        for s, e in zip(starts.tolist(), ends.tolist(), strict=True):
            a, b = divmod(int(group[s]), 1 << 40)
            pos = local[s:e]
            for i, (k, wk) in enumerate(weights):
                z = self.block(tile, a, k, self.bucket(tile, a, k, at_s), b).index_select(0, pos)
                _accumulate(acc[s:e], wk, z, s, e, first=i == 0)
        if order is None:
            return acc
        out[torch.from_numpy(order)] = acc
        return out


def _accumulate(out, wk: float | torch.Tensor, z: torch.Tensor, s: int, e: int, first: bool):
    """out += wk * z (out = wk * z for the first level)."""
    if first:
        torch.mul(z, wk if isinstance(wk, float) else wk[s:e], out=out)
    elif isinstance(wk, float):
        out.add_(z, alpha=wk)
    else:
        out.addcmul_(wk[s:e], z)
