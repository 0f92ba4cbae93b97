"""The weight-error metric of weight programming (Mackin 2022): NMSE of drift-compensated weights.

Given weights and a translation (``controller.workloads.pairs``), every device is programmed
to its target on an in-process twin chip (``device_twin.Chip``: the twin's device physics,
aihwkit's programming noise and drift exponents drawn per device), then read
(``read_devices``: drift and 1/f read noise, no periphery) at each time since programming.
The weight a set of reads stands for is ``sum_k f_k (G+_k - G-_k) / us_per_weight``. Global
drift compensation (aihwkit's ``GlobalDriftCompensation``: one factor per layer, mean |w| of
a read 1 s after programming over mean |w| of the read at time t) scales it back. The error
at time t is

    NMSE(t) = mean_i (alpha(t) * w_read_i(t) - w_i)^2 / max|w|^2

per layer, averaged over all weights of a network; the time-averaged NMSE over a list of
times is what the weight programming optimiser minimises (aihwkit's
``WeightProgrammingOptimizer`` loss, without its constant factor of 100).

A layer's weights sit on a square-ish block of one tile with as many pairs per weight as the
translation uses (unused devices are programmed to 0 uS and not counted). Unlike aihwkit's
weight-level ``apply_drift_noise`` (which re-derives conductances from the programmed
*weights* and so mixes the pairs of a multi-pair weight), every device keeps its own g_prog
and nu.

Randomness: a layer's chip has a seed derived from ``(seed, layer)``. The same seed gives the
same draws for any translation of the same shape (common random numbers), which makes the
optimiser's objective deterministic.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch

from controller.workloads.pairs import PairTargets, Translation
from controller.workloads.wpo_config import AFTER_PROGRAMMING_S, REPORT_TIMES_S
from device_twin import Array, Chip, ChipConfig
from device_twin.config import DeviceModelConfig


@contextmanager
def single_thread() -> Iterator[None]:
    """One torch thread for a block: the reads are small and a second thread costs more in
    waking up than it saves on a shared machine (measured 50x slower under load)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def default_chip(g_max_us: float = 25.0, device: DeviceModelConfig | None = None) -> ChipConfig:
    """The chip the metric programs: the twin's default PCM model (aihwkit
    ``PCMLikeNoiseModel``) unless ``device`` says otherwise; its geometry is set per layer."""
    return ChipConfig(g_max_us=g_max_us, device=device or DeviceModelConfig())


def _seed(*parts: int) -> int:
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(1, np.uint64)[0] >> 1)


@dataclass
class LayerOnChip:
    """A layer's targets programmed at t = 0 on a one-tile chip of its own."""

    targets: PairTargets
    chip: Chip
    _last: tuple[float, np.ndarray] | None = None

    def read_weights(self, at_s: float) -> np.ndarray:
        """The weights the devices stand for at ``at_s`` (one read of every device; the twin
        gives every read at one instant the same noise, so a second read then is reused)."""
        if self._last is not None and self._last[0] == at_s:
            return self._last[1]
        n = self.targets.g_pos_us[0].size
        g = np.stack([
            self.chip.read_devices(0, Array.BOTH, None, at_s, pair=k).values.reshape(2, -1)
            for k in range(self.targets.n_pairs)
        ])  # fmt: skip
        shape = self.targets.g_pos_us.shape
        w = self.targets.weights(g[:, 0, :n].reshape(shape), g[:, 1, :n].reshape(shape))
        self._last = (at_s, w)
        return w


def program_layer(targets: PairTargets, chip: ChipConfig, seed: int) -> LayerOnChip:
    """Program every device of ``targets`` on a fresh one-tile chip with seed ``seed``, as
    many pairs per weight as the targets have (significance f_k = F^k)."""
    f = targets.significance
    factor = float(f[1]) if len(f) > 1 else chip.significance_factor
    if not np.allclose(f, [factor**k for k in range(len(f))], rtol=1e-9):
        raise ValueError(f"a chip's pairs count F^k: significance {f} is not of that form")
    n = targets.g_pos_us[0].size
    cols = max(1, math.ceil(math.sqrt(n)))
    rows = max(1, math.ceil(n / cols))
    cfg = chip.model_copy(update={
        "n_tiles": 1, "tile_rows": rows, "tile_cols": cols, "seed": seed,
        "pairs_per_weight": len(f), "significance_factor": factor,
    })  # fmt: skip
    c = Chip(cfg)
    for k in range(targets.n_pairs):
        gp = np.zeros(rows * cols, np.float32)
        gn = np.zeros(rows * cols, np.float32)
        gp[:n], gn[:n] = targets.g_pos_us[k].ravel(), targets.g_neg_us[k].ravel()
        c.program(0, gp.reshape(rows, cols), gn.reshape(rows, cols), 0.0, pair=k)
    return LayerOnChip(targets, c)


def layer_squared_errors(
    w: np.ndarray,
    translation: Translation,
    times_s: Sequence[float],
    chip: ChipConfig,
    seed: int,
    calibration_s: float = AFTER_PROGRAMMING_S,
) -> np.ndarray:
    """Sum over the layer's weights of the normalised squared error at each time (len(times));
    ``times_s`` ascending, none before ``calibration_s``.

    Normalised by max|w|^2 of the layer; divide by the number of weights for the NMSE.
    """
    if list(times_s) != sorted(times_s) or (len(times_s) and times_s[0] < calibration_s):
        raise ValueError(f"times must ascend from {calibration_s} s: {list(times_s)}")
    w = np.asarray(w, dtype=np.float64)
    w_max2 = max(float(np.abs(w).max()), 1e-12) ** 2
    layer = program_layer(translation.translate(w), chip, seed)
    ref = np.abs(layer.read_weights(calibration_s)).mean()
    out = np.empty(len(times_s))
    for i, t in enumerate(times_s):
        wt = layer.read_weights(t)
        alpha = ref / max(np.abs(wt).mean(), 1e-12)  # aihwkit's readout floor, relative
        out[i] = float(((alpha * wt - w) ** 2).sum()) / w_max2
    return out


def network_nmse(
    layers: Mapping[str, np.ndarray],
    translation: Translation,
    times_s: Sequence[float],
    chip: ChipConfig,
    seed: int,
) -> np.ndarray:
    """NMSE at each time over all weights of a network (each layer normalised by its max|w|,
    compensated by its own factor); layer ``j``'s chip has a seed derived from (seed, j)."""
    total = np.zeros(len(times_s))
    n = 0
    with single_thread():
        for j, w in enumerate(layers.values()):
            total += layer_squared_errors(w, translation, times_s, chip, _seed(seed, 100 + j))
            n += np.asarray(w).size
    return total / max(n, 1)


@dataclass
class WeightErrorTable:
    """NMSE per time (columns) for each translation (rows), over seeds."""

    times_s: tuple[float, ...]
    nmse: dict[str, np.ndarray]  # name -> (n_seeds, n_times)

    def mean(self, name: str) -> np.ndarray:
        return self.nmse[name].mean(axis=0)

    def std(self, name: str) -> np.ndarray:
        a = self.nmse[name]
        return a.std(axis=0, ddof=1) if a.shape[0] > 1 else np.zeros(a.shape[1])

    def reduction(self, name: str, baseline: str) -> np.ndarray:
        """1 - NMSE(name)/NMSE(baseline) at each time (0.39 = 39 % lower), seed means."""
        return 1.0 - self.mean(name) / self.mean(baseline)


def compare_translations(
    layers: Mapping[str, np.ndarray],
    translations: Mapping[str, Translation],
    times_s: Sequence[float] = REPORT_TIMES_S,
    seeds: Sequence[int] = (0, 1, 2),
    chip: ChipConfig | None = None,
) -> WeightErrorTable:
    """The weight error of each translation on the same chips (same seeds: same draws)."""
    chip = chip or default_chip()
    nmse = {
        name: np.stack([network_nmse(layers, tr, times_s, chip, s) for s in seeds])
        for name, tr in translations.items()
    }
    return WeightErrorTable(tuple(times_s), nmse)
