"""Pulse response: partial SET by the ExpStep rule, RESET, saturation, and what programming
costs in pulses (see ``PulseModelConfig`` for the equations).

Device-to-device parameters (step gain, bounds, reset level) are fixed properties of a
physical device. They are not stored: they are hashed from (chip seed, tile, array, device
index), so they cost no state and never change between calls, restarts or processes.
Cycle-to-cycle noise comes from the write's keyed normals (``rng.WriteKeys``).

Saturation: every device has its own upper bound ``b_max`` (aihwkit's ``w_max_dtod`` spread).
No write puts a device above it: a SET step stops at the bound, program-and-verify ends at
the bound when its target lies beyond it (and reports the device failed).

Programming cost, one stated model (``program_cost``): program-and-verify from RESET applies
the nominal number of SET pulses that take a device from the nominal RESET level to its
target (the ExpStep rule without device-to-device or cycle noise), with one verify read
after each pulse; when that count exceeds the iteration limit the pulses are grouped so that
there are exactly ``max_iterations`` verify reads. A device that cannot reach its target
uses the whole iteration budget.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from device_twin.families.base import PulseModelConfig
from device_twin.rng import (
    DEVICE_PARAMS,
    STREAM_RESET,
    WriteKeys,
    derive_key,
    device_ids,
    hashed_normal_pairs,
)
from device_twin.rng import splitmix64 as _splitmix64

#: Longest nominal pulse train tabulated for the programming cost.
MAX_NOMINAL_PULSES = 100_000
#: Largest look-up grid of the nominal levels (``nominal_pulses_us``); finer level spacings
#: fall back to a binary search.
MAX_GRID_CELLS = 1 << 16


@dataclass(frozen=True)
class DeviceParams:
    """Device-to-device pulse parameters of a set of devices, in weight units."""

    scale_up: np.ndarray
    b_max: np.ndarray
    b_min: np.ndarray
    reset_w: np.ndarray


class PulseModel:
    """Pulse response of the devices of one chip."""

    def __init__(self, cfg: PulseModelConfig, seed: int, g_max_us: float, g_floor_us: float = 0.0):
        self.cfg = cfg
        self.seed = int(seed)
        self.g_floor_us = float(g_floor_us)
        span = cfg.w_max - cfg.w_min
        self.g_per_w_us = float(cfg.g_per_w_us or (g_max_us - g_floor_us) / span)
        self._nominal: np.ndarray | None = None
        self._grid: tuple | bool | None = None

    # --- conductance <-> weight units -----------------------------------------------------
    def to_w(self, g_us: np.ndarray) -> np.ndarray:
        return (np.asarray(g_us, np.float64) - self.g_floor_us) / self.g_per_w_us + self.cfg.w_min

    def to_g(self, w: np.ndarray) -> np.ndarray:
        g = (w - self.cfg.w_min) * self.g_per_w_us + self.g_floor_us
        return np.maximum(g, 0.0).astype(np.float32)

    # --- device-to-device parameters ------------------------------------------------------
    def _pairs(self, tile: int, ids: np.ndarray, which: int) -> tuple[np.ndarray, np.ndarray]:
        key = np.uint64(derive_key(self.seed, DEVICE_PARAMS, tile, which))
        return hashed_normal_pairs(_splitmix64(key ^ ids))

    def bounds(self, tile: int, array: np.ndarray, index: np.ndarray):
        """(b_min, b_max) of devices (tile, array[i], index[i]), weight units, float64."""
        c = self.cfg
        z_max, z_min = self._pairs(tile, device_ids(array, index), 2)
        b_max = np.abs(c.w_max * (1.0 + c.w_max_dtod * z_max.astype(np.float64)))
        b_min = -np.abs(c.w_min * (1.0 + c.w_min_dtod * z_min.astype(np.float64)))
        return b_min, b_max

    def bound_us(self, tile: int, array: np.ndarray, index: np.ndarray) -> np.ndarray:
        """Upper conductance bound (saturation) of each device (uS, float32)."""
        return self.to_g(self.bounds(tile, array, index)[1])

    def device_params(self, tile: int, array: np.ndarray, index: np.ndarray) -> DeviceParams:
        """Fixed device-to-device parameters of devices (tile, array[i], index[i])."""
        c = self.cfg
        ids = device_ids(array, index)
        z_gain, z_r = (z.astype(np.float64) for z in self._pairs(tile, ids, 1))
        up_bias = min(c.up_down, 0.0)
        # aihwkit's populate() with enforce_consistency: step sizes are made positive and
        # bounds keep their sign.
        scale_up = np.abs((up_bias + 1.0 + c.dw_min_dtod * z_gain + c.up_down_dtod * z_r)
                          * c.dw_min)  # fmt: skip
        b_min, b_max = self.bounds(tile, array, index)
        z_reset = self._pairs(tile, ids, 3)[0].astype(np.float64)
        return DeviceParams(scale_up, b_max, b_min, c.reset + c.reset_dtod * z_reset)

    # --- pulses -----------------------------------------------------------------------------
    def set_step_mean_w(self, w, scale_up, b_max, b_min) -> np.ndarray:
        """Expected step of one SET pulse at state ``w`` (weight units), before noise/bounds."""
        c = self.cfg
        z = 2.0 * c.a * w / (b_max - b_min) + c.b
        return np.maximum(1.0 - c.A_up * np.exp(c.gamma_up * z), 0.0) * scale_up

    def set_step_sigma_w(self, w: np.ndarray, dw: np.ndarray) -> np.ndarray:
        """Cycle-to-cycle spread of a SET step of mean ``dw`` at state ``w``."""
        c = self.cfg
        if c.dw_min_std > 0 and (c.dw_min_std_add != 0 or c.dw_min_std_slope != 0):
            return c.dw_min_std * (np.abs(dw) + c.dw_min_std_add + c.dw_min_std_slope * np.abs(w))
        return c.dw_min_std * np.abs(dw)

    def apply_set(
        self, g_us: np.ndarray, counts: np.ndarray, params: DeviceParams, keys: WriteKeys
    ) -> np.ndarray:
        """Conductance after ``counts[i]`` SET pulses on devices at ``g_us[i]``.

        A step never lowers a device and never takes it above its own bound; a device above
        its bound (drifted state never is) keeps its conductance."""
        w = self.to_w(g_us)
        counts = np.asarray(counts)
        for k in range(int(counts.max(initial=0))):
            act = np.flatnonzero(counts > k)
            if act.size == w.size:
                act = slice(None)
            wa, up, hi, lo = w[act], params.scale_up[act], params.b_max[act], params.b_min[act]
            dw = self.set_step_mean_w(wa, up, hi, lo)
            xi = keys.subset(act).pulse_normals(k).astype(np.float64)
            step = lognormal_step(dw, self.set_step_sigma_w(wa, dw), xi)
            w[act] = np.maximum(wa, np.minimum(wa + step, hi))
        return self.to_g(w)

    def apply_reset(self, params: DeviceParams, keys: WriteKeys) -> np.ndarray:
        """Conductance after a RESET pulse: the device's reset level plus cycle noise."""
        xi = keys.normals(STREAM_RESET)[0].astype(np.float64)
        w = np.clip(params.reset_w + self.cfg.reset_std * xi, params.b_min, params.b_max)
        return self.to_g(w)

    # --- nominal response and programming cost -------------------------------------------
    def nominal_levels_us(self) -> np.ndarray:
        """Conductance after n = 0, 1, 2, ... nominal SET pulses from the nominal RESET level
        (no device-to-device or cycle noise), up to where the response stops rising."""
        if self._nominal is None:
            c = self.cfg
            w = float(np.clip(c.reset, c.w_min, c.w_max))
            out = [w]
            for _ in range(MAX_NOMINAL_PULSES):
                dw = float(self.set_step_mean_w(np.float64(w), c.dw_min, c.w_max, c.w_min))
                w_next = min(w + dw, c.w_max)
                if w_next - w <= 1e-9 * (c.w_max - c.w_min):
                    break
                w = w_next
                out.append(w)
            self._nominal = self.to_g(np.asarray(out)).astype(np.float64)
        return self._nominal

    def nominal_pulses_us(self, g_target_us: np.ndarray) -> np.ndarray:
        """Nominal SET pulses from RESET to reach each target (the last level if beyond):
        the number of nominal levels below ``g_target - 1e-6`` uS."""
        levels = self.nominal_levels_us()
        x = np.asarray(g_target_us, np.float64) - 1e-6
        grid = self._level_grid()
        if grid is None:
            n = np.searchsorted(levels, x, side="left")
        else:
            # binary search on unsorted targets mispredicts every branch: a uniform grid finer
            # than the level spacing gives the count at each cell's start, corrected by one
            start, inv_w, below, padded = grid
            cell = ((x - start) * inv_w).astype(np.int64)
            np.clip(cell, 0, below.size - 1, out=cell)
            n0 = below[cell]
            n = n0 + (padded[n0 + 1] < x) - (padded[n0] >= x)
        return np.minimum(n, levels.size - 1).astype(np.int64)

    def _level_grid(self):
        """(start, 1/width, levels below each cell's start, levels padded with -inf/+inf) of a
        grid a quarter of the smallest level spacing wide, or None if it would be too large."""
        if self._grid is None:
            levels = self.nominal_levels_us()
            spacing = float(np.diff(levels).min()) if levels.size > 1 else 0.0
            span = float(levels[-1] - levels[0])
            cells = int(np.ceil(span / (spacing / 4))) + 1 if spacing > 0 else 1 << 30
            if cells > MAX_GRID_CELLS:
                self._grid = False
            else:
                w = spacing / 4
                edges = levels[0] + w * np.arange(cells)
                below = np.searchsorted(levels, edges, side="left")
                padded = np.concatenate([[-np.inf], levels, [np.inf]])
                self._grid = (float(levels[0]), 1.0 / w, below, padded)
        return self._grid or None

    def program_cost(
        self, g_target_us: np.ndarray, failed: np.ndarray, max_iterations: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """(SET pulses, verify reads) per device of program-and-verify from RESET (see the
        module docstring); a RESET-only target (no SET pulse) needs no verify read."""
        pulses = self.nominal_pulses_us(g_target_us)
        reads = np.minimum(pulses, max_iterations)
        reads = np.where(failed, max_iterations, reads)
        pulses = np.where(failed, np.maximum(pulses, max_iterations), pulses)
        return pulses.astype(np.int64), reads.astype(np.int64)


def lognormal_step(mean: np.ndarray, sd: np.ndarray, xi: np.ndarray) -> np.ndarray:
    """A step of the given mean and spread that is never negative: log-normal, from normals xi.

    ``mean * exp(s*xi - s^2/2)`` with ``s^2 = ln(1 + (sd/mean)^2)`` has exactly that mean and
    spread; a zero mean gives a zero step."""
    mean = np.asarray(mean, np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        s2 = np.where(mean > 0, np.log1p((sd / mean) ** 2), 0.0)
    return np.where(mean > 0, mean * np.exp(np.sqrt(s2) * xi - s2 / 2), 0.0)


def chip_pulse_model(config) -> PulseModel:
    """The pulse model of a chip config's device family (for firmware that plans pulses)."""
    from device_twin.families import make_family

    family = make_family(config.device, config.g_max_us)
    return PulseModel(family.pulse, config.seed, config.g_max_us, family.g_floor_us)


def pulse_curve(config, counts: list[int], seed: int = 0) -> list[dict]:
    """Mean and spread of conductance after ``n`` SET pulses from RESET, for each n in ``counts``.

    Uses a chip with ``config``'s pulse model and no programming noise, drift or read noise,
    so the table shows the pulse response alone (the README's pulse table comes from here).
    """
    from device_twin.chip import Array, Chip, PulseKind

    quiet = ("prog_noise_scale", "drift_scale", "read_noise_scale", "noise_scale",
             "read_noise_g_max_fraction")  # fmt: skip
    fields = type(config.device).model_fields
    device = config.device.model_copy(update={k: 0.0 for k in quiet if k in fields})
    cfg = config.model_copy(update={"device": device, "n_tiles": 1, "seed": seed})
    rows = []
    for n in counts:
        chip = Chip(cfg)
        zero = np.zeros(chip.shape, np.float32)
        chip.program(0, zero, zero, at_s=0.0)
        idx = np.arange(zero.size)
        chip.apply_pulses(0, Array.POS, idx, PulseKind.RESET, 1, at_s=1.0)
        g = chip.apply_pulses(0, Array.POS, idx, PulseKind.SET, n, at_s=2.0).writes.g_prog_us
        rows.append({"pulses": n, "g_mean_us": float(g.mean()), "g_std_us": float(g.std()),
                     "g_p10_us": float(np.percentile(g, 10)),
                     "g_p90_us": float(np.percentile(g, 90))})  # fmt: skip
    return rows
