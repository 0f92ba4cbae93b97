"""Twin core: bytes of device state per device, and reading a whole chip.

The read is compared with a numpy floor measured in the same run on the same arrays: numpy
evaluating the noise-free drift law ``g_prog*((t - t_write + t0)/t0)**-nu`` for every device.
The twin's read does that plus its 1/f read noise, keyed by time (``device_twin.flicker``):
``*_read_all`` reads the chip at successive hours (a monitor's wake-ups: the fast noise levels
are drawn afresh, the slow ones come from the cache), ``*_read_all_cold`` with an empty cache
(every level drawn).
"""

from __future__ import annotations

import time

import numpy as np

from device_twin import Array, Chip, ChipConfig


def _best_of(fn, repeats: int = 3) -> float:
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def _programmed_chip(n_tiles: int, rows: int, cols: int) -> Chip:
    chip = Chip(ChipConfig(n_tiles=n_tiles, tile_rows=rows, tile_cols=cols, seed=0))
    rng = np.random.default_rng(0)
    for t in range(n_tiles):
        g = rng.uniform(0, chip.config.g_max_us, (2, rows, cols)).astype(np.float32)
        chip.program(t, g[0], g[1], at_s=float(t))
    return chip


def read_whole_chip(chip: Chip, at_s: float) -> None:
    for tile in range(chip.config.n_tiles):
        for arr in (Array.POS, Array.NEG):
            chip.read_devices(tile, arr, None, at_s)


def numpy_floor(chip: Chip, at_s: float) -> None:
    t0 = chip.config.device.t0_s
    for tile in range(chip.config.n_tiles):
        for arr in (0, 1):
            g, nu, tw = chip.g_prog_us[tile, arr], chip.nu[tile, arr], chip.t_write_s[tile, arr]
            g * ((at_s - tw + t0) / t0) ** -nu


def read_records(name: str, n_tiles: int, rows: int, cols: int, target: float) -> list[dict]:
    chip = _programmed_chip(n_tiles, rows, cols)
    hours = iter(1.0e7 + 3600.0 * k for k in range(1000))
    read_whole_chip(chip, next(hours))  # the slow levels' cache, as after a first wake-up
    ours = _best_of(lambda: read_whole_chip(chip, next(hours)))
    floor = _best_of(lambda: numpy_floor(chip, 1.0e7))

    def cold() -> None:
        chip.flicker.clear_cache()
        read_whole_chip(chip, next(hours) + 1e9)

    ours_cold = _best_of(cold)
    n = chip.config.n_devices
    return [
        {"name": f"{name}_state_bytes_per_device", "value": chip.state_bytes / n,
         "unit": "B/device", "target": 20.0, "target_on": "value", "baseline_name": None,
         "baseline_value": None, "ratio": None, "devices": n},
        {"name": f"{name}_read_all", "value": ours, "unit": "s", "target": target,
         "target_on": "ratio", "baseline_name": "numpy_drift_law", "baseline_value": floor,
         "ratio": ours / floor, "devices": n, "devices_per_s": n / ours},
        {"name": f"{name}_read_all_cold", "value": ours_cold, "unit": "s", "target": None,
         "target_on": None, "baseline_name": "numpy_drift_law", "baseline_value": floor,
         "ratio": ours_cold / floor, "devices": n, "devices_per_s": n / ours_cold},
    ]  # fmt: skip


def _rss_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run() -> list[dict]:
    # 1,048,576 devices: 8 tiles of 256x256 pairs (issue 2)
    records = read_records("chip_1m", 8, 256, 256, target=3.0)
    # 35,651,584 devices: 34 tiles of 512x2048 devices, i.e. 512x1024 pairs, the scale of IBM's
    # 2023 speech chip (issue 7)
    rss0 = _rss_mb()
    big = read_records("chip_35m", 34, 512, 1024, target=3.0)
    state_mb = big[0]["value"] * big[0]["devices"] / 2**20
    records += big
    records.append(
        {"name": "chip_35m_state_mb", "value": state_mb, "unit": "MiB", "target": 1024.0,
         "target_on": "value", "baseline_name": "process_peak_rss_growth_mb",
         "baseline_value": _rss_mb() - rss0, "ratio": None}
    )  # fmt: skip
    return records


if __name__ == "__main__":
    for r in run():
        print(r)
