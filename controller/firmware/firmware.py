"""What the on-chip firmware stores about its devices, and the read-only view policies get.

Per device the firmware keeps the level index it was programmed to (``level``, the multiplier
m+ or m- of a multiplicative mapping, one byte), the target conductance that level stands for
(``target_us = floor + level * q``, the floor 0 uS but for families that cannot go lower)
and the device time of its last write (``last_write_s``). The correction target is the
stored level, never "the nearest multiple" of a drifted read
(DESIGN.md §5: a top-level device falls by more than half a level spacing within about a
minute of a write). Mappings without levels (uniform, unquantised) store the target only.

On a chip with several pairs per weight (Mackin 2022) every array is indexed ``2*pair + sign``
(sign 0 = G+, 1 = G-), as on the twin; each pair may or may not have levels (``multiplicative``
with ``lsp_trim`` has them on the most significant pair only).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from controller.firmware.policies.base import MonitorReport


def _readonly(a: np.ndarray) -> np.ndarray:
    v = a.view()
    v.flags.writeable = False
    return v


class Firmware:
    """Level indices, targets and last write times of every device of a chip."""

    def __init__(
        self,
        n_tiles: int,
        tile_rows: int,
        tile_cols: int,
        g_max_us: float,
        significance: tuple[float, ...] = (1.0,),
    ) -> None:
        self.n_tiles, self.tile_rows, self.tile_cols = n_tiles, tile_rows, tile_cols
        self.g_max_us = float(g_max_us)
        self.significance = tuple(float(f) for f in significance)
        self.pairs_per_weight = len(self.significance)
        n_arrays = 2 * self.pairs_per_weight
        shape = (n_tiles, n_arrays, tile_rows, tile_cols)
        self.level: np.ndarray | None = None
        self.q_us = np.full((n_tiles, n_arrays), np.nan)
        self.target_us = np.zeros(shape, np.float32)
        self.used = np.zeros((n_tiles, tile_rows, tile_cols), bool)
        self.last_write_s = np.zeros(shape, np.float64)
        self.floor_us = np.zeros(n_tiles, np.float64)  # level 0's conductance, per tile
        self.tiles: tuple[int, ...] = ()
        self.rows_in_use: dict[int, np.ndarray] = {}
        # per tile: (first column, number of columns) spanning every column with a weight
        self.col_span: dict[int, tuple[int, int]] = {}

    def load(self, mapped: Any) -> None:
        """Store the targets (and levels) of a mapped network (``MappedNetwork`` contract)."""
        tiles = []
        for tm in mapped.tiles:
            t = int(tm.tile)
            if not 0 <= t < self.n_tiles:
                raise ValueError(f"mapping uses tile {t}, but the chip has {self.n_tiles} tiles")
            used = np.asarray(tm.used, bool)
            if used.shape != (self.tile_rows, self.tile_cols):
                raise ValueError(
                    f"mapping of tile {t} has shape {used.shape}, "
                    f"expected {(self.tile_rows, self.tile_cols)}"
                )
            floor = float(getattr(tm, "g_floor_us", 0.0))
            self.floor_us[t] = floor
            pairs = tm.pairs() if hasattr(tm, "pairs") else [_Pair(tm)]
            if len(pairs) > self.pairs_per_weight:
                raise ValueError(f"mapping of tile {t} has {len(pairs)} pairs per weight, "
                                 f"the chip {self.pairs_per_weight}")  # fmt: skip
            for k, p in enumerate(pairs):
                sides = (
                    (p.level_pos, p.q_pos_us, p.g_pos_us),
                    (p.level_neg, p.q_neg_us, p.g_neg_us),
                )
                for sign, (lv, q, target) in enumerate(sides):
                    a = 2 * k + sign
                    if lv is not None and q is not None:
                        if self.level is None:
                            self.level = np.zeros(self.target_us.shape, np.uint8)
                        lv = np.asarray(lv, np.uint8)
                        self.level[t, a][used] = lv[used]
                        self.q_us[t, a] = float(q)
                        g = np.clip(floor + lv.astype(np.float64) * float(q), 0.0, self.g_max_us)
                    else:
                        g = np.asarray(target, np.float64)
                    self.target_us[t, a][used] = g[used].astype(np.float32)
            self.used[t] |= used
            tiles.append(t)
        self.tiles = tuple(sorted(set(tiles)))
        self.rows_in_use = {t: np.flatnonzero(self.used[t].any(axis=1)) for t in self.tiles}
        for t in self.tiles:
            cols = np.flatnonzero(self.used[t].any(axis=0))
            self.col_span[t] = (int(cols[0]), int(cols[-1] - cols[0] + 1)) if cols.size else (0, 1)

    def program_targets(self, tile: int, pair: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """(G+, G-) targets of a pair of a whole tile, as ``program`` wants them."""
        return self.target_us[tile, 2 * pair].copy(), self.target_us[tile, 2 * pair + 1].copy()

    def weight_devices(self, tile: int, pair: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """The devices of a pair of a tile that hold a weight, G+ and G- of each, as
        ``program_devices`` addresses them over both arrays of the pair (``sign * rows * cols
        + row * cols + col``), and their targets (uS)."""
        flat = np.flatnonzero(self.used[tile].reshape(-1))
        per_array = self.tile_rows * self.tile_cols
        devices = np.concatenate([flat, flat + per_array]).astype(np.int64)
        targets = np.concatenate(
            [self.target_us[tile, 2 * pair + sign].reshape(-1)[flat] for sign in (0, 1)]
        )
        return devices, targets.astype(np.float32)

    def targets(self, tile: int, array: int, idx: np.ndarray) -> np.ndarray:
        """Targets (uS) of devices given by flat index."""
        return self.target_us[tile, array].reshape(-1)[idx]

    def record_write(self, tile: int, array: int, idx: np.ndarray, at_s: float) -> None:
        self.last_write_s[tile, array].reshape(-1)[idx] = at_s

    def record_writes(self, tile: int, flat: np.ndarray, at_s: float | np.ndarray) -> None:
        """Devices by ``array * rows * cols + row * cols + col`` (array: ``2*pair + sign``),
        written at ``at_s`` (one instant, or one per device)."""
        self.last_write_s[tile].reshape(-1)[flat] = at_s

    def record_tile_write(self, tile: int, at_s: float, pair: int | None = None) -> None:
        """Every device of a tile (or of one pair of it) written at ``at_s``."""
        if pair is None:
            self.last_write_s[tile] = at_s
        else:
            self.last_write_s[tile, 2 * pair : 2 * pair + 2] = at_s


class _Pair:
    """Pair 0 of a mapping that predates several pairs per weight (its tile's own fields)."""

    def __init__(self, tm: Any) -> None:
        self.g_pos_us, self.g_neg_us = tm.g_target_pos_us, tm.g_target_neg_us
        self.level_pos = getattr(tm, "level_pos", None)
        self.level_neg = getattr(tm, "level_neg", None)
        self.q_pos_us = getattr(tm, "q_pos_us", None)
        self.q_neg_us = getattr(tm, "q_neg_us", None)


class FirmwareView:
    """The :class:`~controller.firmware.policies.base.ChipView` a policy gets: live, read-only."""

    def __init__(
        self,
        fw: Firmware,
        now: Callable[[], float],
        t0_s: float,
        energy: Callable[[], dict[str, float]],
        corrections: Callable[[], int],
        programmed_at: Callable[[], float],
    ) -> None:
        self._now, self._energy, self._corrections = now, energy, corrections
        self._programmed_at = programmed_at
        self.n_tiles, self.tile_rows, self.tile_cols = fw.n_tiles, fw.tile_rows, fw.tile_cols
        self.g_max_us = fw.g_max_us
        self.pairs_per_weight = fw.pairs_per_weight
        self.significance = fw.significance
        self.t0_s = float(t0_s)
        self._fw = fw
        self.q_us = _readonly(fw.q_us)
        self.target_us = _readonly(fw.target_us)
        self.used = _readonly(fw.used)
        self.last_write_s = _readonly(fw.last_write_s)
        self.g_floor_us = _readonly(fw.floor_us)
        self.last_report: MonitorReport | None = None

    @property
    def level(self) -> np.ndarray | None:
        return None if self._fw.level is None else _readonly(self._fw.level)

    @property
    def tiles(self) -> tuple[int, ...]:
        return self._fw.tiles

    @property
    def rows_in_use(self) -> dict[int, np.ndarray]:
        """Per tile of the network, the rows that hold weights (sorted)."""
        return {t: _readonly(r) for t, r in self._fw.rows_in_use.items()}

    @property
    def col_span(self) -> dict[int, tuple[int, int]]:
        """Per tile of the network, (first column, number of columns) spanning its weights."""
        return dict(self._fw.col_span)

    @property
    def now_s(self) -> float:
        return float(self._now())

    @property
    def programmed_at_s(self) -> float:
        return float(self._programmed_at())

    @property
    def corrections(self) -> int:
        return int(self._corrections())

    @property
    def energy_pj(self) -> dict[str, float]:
        return self._energy()
