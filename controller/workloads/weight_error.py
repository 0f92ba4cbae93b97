"""The weight-error metric of weight programming (Mackin 2022): NMSE of drift-compensated weights.

Given weights and a translation (``controller.workloads.pairs``), every device is programmed
to its target with the twin's device physics (``device_twin.physics.PCMPhysics``: aihwkit's
programming noise and drift exponents, drawn per device), then read at each time since
programming with drift and 1/f read noise. The weight a set of reads stands for is
``sum_k f_k (G+_k - G-_k) / us_per_weight``. Global drift compensation (aihwkit's
``GlobalDriftCompensation``: one factor per layer, mean |w| of a read right after programming
over mean |w| of the read at time t) scales it back. The error at time t is

    NMSE(t) = mean_i (alpha(t) * w_read_i(t) - w_i)^2 / max|w|^2

per layer, averaged over all weights of a network; the time-averaged NMSE over a list of
times is what the weight programming optimiser minimises (aihwkit's
``WeightProgrammingOptimizer`` loss, without its constant factor of 100).

Unlike aihwkit's weight-level ``apply_drift_noise`` (which re-derives conductances from the
programmed *weights* and so mixes the pairs of a multi-pair weight), every device here keeps
its own g_prog and nu from programming on.

Randomness: the programming of a layer draws from ``(seed, layer)``, each read from
``(seed, layer, time)``. The same seed gives the same draws for any translation of the same
shape (common random numbers), which makes the optimiser's objective deterministic.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch

from controller.workloads.pairs import PairTargets, Translation
from device_twin.config import DeviceModelConfig
from device_twin.physics import PCMPhysics, torch_generator

DAY_S = 86400.0
MONTH_S = 30 * DAY_S
YEAR_S = 365 * DAY_S
#: Programming happens at t = 0; "right after programming" is a read at t = 1 s (as elsewhere).
AFTER_PROGRAMMING_S = 1.0
#: The report's times: right after programming, a day, a month, a year.
REPORT_TIMES_S = (AFTER_PROGRAMMING_S, DAY_S, MONTH_S, YEAR_S)
#: The optimiser's default times: the report's and one hour, equally weighted.
OPTIMISATION_TIMES_S = (AFTER_PROGRAMMING_S, 3600.0, DAY_S, MONTH_S, YEAR_S)


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


def default_physics(g_max_us: float = 25.0, device: DeviceModelConfig | None = None) -> PCMPhysics:
    """The twin's default PCM physics (aihwkit ``PCMLikeNoiseModel``)."""
    return PCMPhysics(device or DeviceModelConfig(), g_max_us)


def _seed(*parts: int) -> int:
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(1, np.uint64)[0] >> 1)


@dataclass
class ProgrammedLayer:
    """A layer's devices right after programming: targets, g_prog and nu of every device."""

    targets: PairTargets
    g_prog_us: np.ndarray  # (2, P, *shape): [G+ devices, G- devices]
    nu: np.ndarray

    def read_weights(self, physics: PCMPhysics, age_s: float, seed: int) -> np.ndarray:
        """The weights the devices stand for at ``age_s`` after programming (one read)."""
        g = torch.from_numpy(self.g_prog_us.reshape(-1))
        nu = torch.from_numpy(self.nu.reshape(-1))
        age = torch.full(g.shape, float(age_s), dtype=torch.float32)
        read = physics.read(g, nu, age, torch_generator(seed)).numpy().reshape(self.g_prog_us.shape)
        return self.targets.weights(read[0], read[1])


def program_layer(targets: PairTargets, physics: PCMPhysics, seed: int) -> ProgrammedLayer:
    """Program every device of ``targets`` (programming noise and drift exponents)."""
    g_target = np.stack([targets.g_pos_us, targets.g_neg_us])
    g_prog, nu = physics.program_state(g_target.reshape(-1), seed)
    return ProgrammedLayer(targets, g_prog.reshape(g_target.shape), nu.reshape(g_target.shape))


def layer_squared_errors(
    w: np.ndarray,
    translation: Translation,
    times_s: Sequence[float],
    physics: PCMPhysics,
    seed: int,
    calibration_s: float = AFTER_PROGRAMMING_S,
) -> np.ndarray:
    """Sum over the layer's weights of the normalised squared error at each time (len(times)).

    Normalised by max|w|^2 of the layer; divide by the number of weights for the NMSE.
    """
    w = np.asarray(w, dtype=np.float64)
    w_max2 = max(float(np.abs(w).max()), 1e-12) ** 2
    layer = program_layer(translation.translate(w), physics, _seed(seed, 0))
    ref = np.abs(layer.read_weights(physics, calibration_s, _seed(seed, 1))).mean()
    out = np.empty(len(times_s))
    for i, t in enumerate(times_s):
        wt = layer.read_weights(physics, t, _seed(seed, 2, i))
        alpha = ref / max(np.abs(wt).mean(), 1e-12)  # aihwkit's readout floor, relative
        out[i] = float(((alpha * wt - w) ** 2).sum()) / w_max2
    return out


def network_nmse(
    layers: Mapping[str, np.ndarray],
    translation: Translation,
    times_s: Sequence[float],
    physics: PCMPhysics,
    seed: int,
) -> np.ndarray:
    """NMSE at each time over all weights of a network (each layer normalised by its max|w|,
    compensated by its own factor); layer ``j`` draws from ``(seed, j)``."""
    total = np.zeros(len(times_s))
    n = 0
    with single_thread():
        for j, w in enumerate(layers.values()):
            total += layer_squared_errors(w, translation, times_s, physics, _seed(seed, 100 + j))
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
    physics: PCMPhysics | None = None,
) -> WeightErrorTable:
    """The weight error of each translation on the same chips (same seeds: same draws)."""
    physics = physics or default_physics()
    nmse = {
        name: np.stack([network_nmse(layers, tr, times_s, physics, s) for s in seeds])
        for name, tr in translations.items()
    }
    return WeightErrorTable(tuple(times_s), nmse)
