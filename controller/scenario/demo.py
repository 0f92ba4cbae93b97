"""A first look at drift: program random weights, read them back over a year.

``pcm-twin demo`` programs one tile with random weights on differential pairs, reads every
device at 1 s, 1 h, 1 day and 1 year after programming (fresh read noise each time), and
prints the weight error, the remaining conductance and the energy spent.
"""

from __future__ import annotations

import numpy as np
from rich.console import Console
from rich.table import Table

from device_twin import Array, Chip, ChipConfig

READ_TIMES_S = {"1 s": 1.0, "1 h": 3600.0, "1 day": 86400.0, "1 year": 365.25 * 86400.0}


def weights_to_pair(w: np.ndarray, g_max_us: float) -> tuple[np.ndarray, np.ndarray]:
    """Map weights in [-1, 1] onto a differential pair: G+ for w > 0, G- for w < 0."""
    g = np.abs(w) * g_max_us
    return np.where(w > 0, g, 0.0).astype(np.float32), np.where(w < 0, g, 0.0).astype(np.float32)


def run_demo(seed: int = 0, rows: int = 256, cols: int = 256) -> list[dict]:
    chip = Chip(ChipConfig(tile_rows=rows, tile_cols=cols, seed=seed))
    rng = np.random.default_rng(seed)
    w = np.clip(rng.normal(0.0, 0.4, (rows, cols)), -1, 1)
    g_pos, g_neg = weights_to_pair(w, chip.config.g_max_us)
    prog = chip.program(0, g_pos, g_neg, at_s=0.0)
    out = []
    for label, t_s in READ_TIMES_S.items():
        gp = chip.read_devices(0, Array.POS, None, t_s).values
        gn = chip.read_devices(0, Array.NEG, None, t_s).values
        w_read = (gp - gn) / chip.config.g_max_us
        big = np.abs(w) > 0.1
        out.append(
            {
                "time": label,
                "t_s": t_s,
                "weight_rmse": float(np.sqrt(np.mean((w_read - w) ** 2))),
                "remaining": float(np.median(w_read[big] / w[big])),
                "energy_pj": chip.ledger.total_energy_pj,
            }
        )
    out.insert(0, {"time": "program", "t_s": 0.0, "weight_rmse": float("nan"),
                   "remaining": float("nan"), "energy_pj": prog.energy_pj})  # fmt: skip
    return out


def print_demo(rows: list[dict], console: Console | None = None) -> None:
    table = Table(title="Random weights on one 256x256 PCM tile, read over a year")
    for col in ("time", "weight RMSE", "median w_read/w", "cumulative energy (nJ)"):
        table.add_column(col, justify="right")
    for r in rows:
        table.add_row(
            r["time"],
            "-" if np.isnan(r["weight_rmse"]) else f"{r['weight_rmse']:.4f}",
            "-" if np.isnan(r["remaining"]) else f"{r['remaining']:.3f}",
            f"{r['energy_pj'] / 1e3:.1f}",
        )
    (console or Console()).print(table)
