"""PCM pulse response: partial SET by the ExpStep rule, RESET, with aihwkit ``PCMPresetDevice``
parameters (see ``PulseModelConfig`` for the equations).

Device-to-device parameters (step gain, upper bound, reset level) are fixed properties of a
physical device. They are not stored: they are derived on demand from a counter-based hash
of (chip seed, tile, array, device index), so they cost no state and never change between
calls, restarts or processes. Cycle-to-cycle noise comes from the caller's generator.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from device_twin.config import PulseModelConfig

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)


def splitmix64(x: np.ndarray) -> np.ndarray:
    """The SplitMix64 finaliser on uint64 arrays (wrapping arithmetic)."""
    z = np.asarray(x, dtype=np.uint64) + _GOLDEN
    z = (z ^ (z >> np.uint64(30))) * _M1
    z = (z ^ (z >> np.uint64(27))) * _M2
    return z ^ (z >> np.uint64(31))


def _key(*parts: int) -> np.uint64:
    k = np.uint64(0)
    with np.errstate(over="ignore"):
        for p in parts:
            k = splitmix64(np.uint64(k) ^ np.uint64(p & 0xFFFFFFFFFFFFFFFF))[()]
    return np.uint64(k)


def hashed_normals(key: np.uint64, index: np.ndarray) -> np.ndarray:
    """Standard normals, one per index, that depend only on (key, index) (Box-Muller)."""
    idx = np.asarray(index, dtype=np.uint64)
    with np.errstate(over="ignore"):
        h1 = splitmix64(key ^ (idx * np.uint64(2)))
        h2 = splitmix64(key ^ (idx * np.uint64(2) + np.uint64(1)))
    u1 = ((h1 >> np.uint64(11)).astype(np.float64) + 1.0) / 2.0**53  # (0, 1]
    u2 = (h2 >> np.uint64(11)).astype(np.float64) / 2.0**53  # [0, 1)
    return np.sqrt(-2.0 * np.log(u1)) * np.cos(2.0 * np.pi * u2)


@dataclass(frozen=True)
class DeviceParams:
    """Device-to-device pulse parameters of a set of devices, in weight units."""

    scale_up: np.ndarray
    b_max: np.ndarray
    b_min: np.ndarray
    reset_w: np.ndarray


class PulseModel:
    """Pulse response of the devices of one chip."""

    def __init__(self, cfg: PulseModelConfig, seed: int) -> None:
        self.cfg = cfg
        self.seed = int(seed)

    def device_params(self, tile: int, array: np.ndarray, index: np.ndarray) -> DeviceParams:
        """Fixed device-to-device parameters of devices (tile, array[i], index[i])."""
        c = self.cfg
        dev = np.asarray(array, dtype=np.uint64) * np.uint64(1 << 40) + np.asarray(
            index, dtype=np.uint64
        )

        def normals(param: int) -> np.ndarray:
            return hashed_normals(_key(self.seed, 0x5EED, tile, param), dev)

        gain = 1.0 + c.dw_min_dtod * normals(1)
        r = c.up_down_dtod * normals(2)
        up_bias = min(c.up_down, 0.0)
        # aihwkit's populate() with enforce_consistency: step sizes are made positive and
        # bounds keep their sign.
        scale_up = np.abs((up_bias + gain + r) * c.dw_min)
        b_max = np.abs(c.w_max * (1.0 + c.w_max_dtod * normals(3)))
        b_min = -np.abs(c.w_min * (1.0 + c.w_min_dtod * normals(4)))
        reset_w = c.reset + c.reset_dtod * normals(5)
        return DeviceParams(scale_up, b_max, b_min, reset_w)

    def set_step_mean_w(self, w: np.ndarray, params: DeviceParams) -> np.ndarray:
        """Expected step of one SET pulse at state ``w`` (weight units), before noise/clipping."""
        c = self.cfg
        z = 2.0 * c.a * w / (params.b_max - params.b_min) + c.b
        y_up = np.maximum(1.0 - c.A_up * np.exp(c.gamma_up * z), 0.0)
        return y_up * params.scale_up

    def apply_set(
        self,
        g_us: np.ndarray,
        counts: np.ndarray,
        params: DeviceParams,
        rng: np.random.Generator,
    ) -> np.ndarray:
        """Conductance after ``counts[i]`` SET pulses on devices at ``g_us[i]``."""
        c = self.cfg
        w = np.asarray(g_us, dtype=np.float64) / c.g_per_w_us
        counts = np.asarray(counts)
        complex_noise = c.dw_min_std > 0 and (c.dw_min_std_add != 0 or c.dw_min_std_slope != 0)
        for k in range(int(counts.max(initial=0))):
            active = counts > k
            dw = self.set_step_mean_w(w, params)
            xi = rng.standard_normal(w.shape)
            if complex_noise:
                std = c.dw_min_std * (
                    np.abs(dw) + c.dw_min_std_add + c.dw_min_std_slope * np.abs(w)
                )
                w_new = w + dw + std * xi
            else:
                w_new = w + dw * (1.0 + c.dw_min_std * xi)
            w_new = np.clip(w_new, params.b_min, params.b_max)
            w = np.where(active, w_new, w)
        return np.maximum(w * c.g_per_w_us, 0.0).astype(np.float32)

    def apply_reset(self, params: DeviceParams, rng: np.random.Generator) -> np.ndarray:
        """Conductance after a RESET pulse: the device's reset level plus cycle noise, ~0 uS."""
        c = self.cfg
        w = params.reset_w + c.reset_std * rng.standard_normal(params.reset_w.shape)
        w = np.clip(w, params.b_min, params.b_max)
        return np.maximum(w * c.g_per_w_us, 0.0).astype(np.float32)

    def saturation_us(self, params: DeviceParams) -> np.ndarray:
        """Upper conductance bound of each device."""
        return (params.b_max * self.cfg.g_per_w_us).astype(np.float32)


def pulse_curve(config, counts: list[int], seed: int = 0) -> list[dict]:
    """Mean and spread of conductance after ``n`` SET pulses from RESET, for each n in ``counts``.

    Uses a chip with ``config``'s pulse model and no programming noise, drift or read noise,
    so the table shows the pulse response alone (the README's pulse table comes from here).
    """
    from device_twin.chip import Array, Chip, PulseKind
    from device_twin.config import DeviceModelConfig

    cfg = config.model_copy(
        update={
            "device": DeviceModelConfig(
                prog_noise_scale=0.0, drift_scale=0.0, read_noise_scale=0.0
            ),
            "n_tiles": 1,
            "seed": seed,
        }
    )
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
