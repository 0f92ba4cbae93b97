"""Small hand-made mapped networks (the ``MappedNetwork`` contract of controller.workloads)
and a twin to run them on, for the controller tests."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from device_twin.config import ChipConfig, DeviceModelConfig
from device_twin.registry import ChipRegistry


@dataclass
class TileMapping:
    tile: int
    layer: str
    g_target_pos_us: np.ndarray
    g_target_neg_us: np.ndarray
    level_pos: np.ndarray | None
    level_neg: np.ndarray | None
    q_pos_us: float | None
    q_neg_us: float | None
    used: np.ndarray


@dataclass
class ToyGDC:
    """Global drift compensation: one factor per tile from an all-ones read."""

    mapped: Any
    reference: dict[int, float] = field(default_factory=dict)

    def _read(self, mvm, tm: TileMapping) -> float:
        k = int(tm.used.any(axis=1).sum())
        return float(np.abs(mvm(tm.tile, np.ones((1, k), np.float32), 0, 0, None)).sum())

    def calibrate(self, mvm) -> None:
        self.reference = {tm.tile: self._read(mvm, tm) for tm in self.mapped.tiles}

    def factors(self, mvm) -> dict[int, float]:
        return {tm.tile: self.reference[tm.tile] / max(self._read(mvm, tm), 1e-12)
                for tm in self.mapped.tiles}  # fmt: skip


@dataclass
class ToyMappedNetwork:
    """A chain of linear layers, one per tile, with ReLU between them."""

    tiles: list[TileMapping]
    n_tiles: int
    tile_rows: int
    tile_cols: int
    g_max_us: float
    shapes: list[tuple[int, int]]
    weights: list[np.ndarray]
    description: Any = None
    quantiser: str = "multiplicative"

    def forward(self, x: torch.Tensor, mvm, compensation=None) -> torch.Tensor:
        factors = compensation.factors(mvm) if compensation is not None else {}
        h = x.numpy().astype(np.float32)
        for i, (tm, (k, n)) in enumerate(zip(self.tiles, self.shapes, strict=True)):
            y = mvm(tm.tile, h[:, :k], 0, 0, n) * factors.get(tm.tile, 1.0)
            h = np.maximum(y, 0) if i < len(self.tiles) - 1 else y
        return torch.from_numpy(np.asarray(h, np.float32))


def make_mapping(cfg: ChipConfig, shapes: list[tuple[int, int]], levels: int = 8,
                 seed: int = 0) -> ToyMappedNetwork:  # fmt: skip
    """Random multiplicative levels (m+ or m- in 0..levels) for one layer per tile."""
    rng = np.random.default_rng(seed)
    q = cfg.g_max_us / levels
    tiles, weights = [], []
    for t, (k, n) in enumerate(shapes):
        shape = (cfg.tile_rows, cfg.tile_cols)
        used = np.zeros(shape, bool)
        used[:k, :n] = True
        m = rng.integers(-levels, levels + 1, size=shape)
        m[~used] = 0
        lp = np.where(m > 0, m, 0).astype(np.uint8)
        ln = np.where(m < 0, -m, 0).astype(np.uint8)
        tiles.append(TileMapping(t, f"fc{t}", (lp * q).astype(np.float32),
                                 (ln * q).astype(np.float32), lp, ln, q, q, used))  # fmt: skip
        weights.append(m[:k, :n] / levels)
    return ToyMappedNetwork(tiles, cfg.n_tiles, cfg.tile_rows, cfg.tile_cols, cfg.g_max_us,
                            shapes, weights)  # fmt: skip


def toy_chip(n_tiles: int = 2, rows: int = 32, cols: int = 32, seed: int = 0,
             read_noise_scale: float = 1.0) -> ChipConfig:  # fmt: skip
    return ChipConfig(n_tiles=n_tiles, tile_rows=rows, tile_cols=cols, seed=seed,
                      device=DeviceModelConfig(read_noise_scale=read_noise_scale))  # fmt: skip


def toy_twin(cfg: ChipConfig, chip_id: str = "chip") -> tuple[ChipRegistry, str]:
    reg = ChipRegistry()
    return reg, reg.create_chip(cfg, chip_id)


def toy_gdc_factory(kind: str, mapped: Any) -> ToyGDC:
    """One factor per tile, whatever the policy's kind (per_column included: a toy)."""
    assert kind in ("gdc", "per_column")
    return ToyGDC(mapped)
