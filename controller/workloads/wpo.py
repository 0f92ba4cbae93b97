"""Weight programming optimisation (Mackin et al., Nat. Commun. 13, 3765, 2022), on the twin.

The search space is aihwkit's ``WeightProgrammingOptimizer``
(``aihwkit.inference.converter.wpo``): a unit hypercube whose points decode (``decode``,
aihwkit's ``denormalize``) into a ``GridTranslation``: the targets of every device at
``2 * n_bins - 1`` evenly spaced weights, the free significance factor and the weight scale
k_w. At each grid weight (in uS, k_w * w), pair by pair from the least significant: one
coordinate picks how much of the weight this pair takes (within what it can hold and what the
remaining pairs can still make up; the last pair takes the rest) and another where on the
line G+ - G- = delta the pair sits (both devices low, or both high). ``symmetric`` mirrors
negative weights onto positive ones (halves the search).

The search (``optimise``) has two stages: (1) naive programming (``NPair``) scanned over F;
(2) scipy's differential evolution in aihwkit's space, its first population naive programming
around the best F, jittered. It returns the better of the two.

What differs from aihwkit, and why:

- The loss is ``controller.workloads.weight_error`` on the twin's device physics, not
  aihwkit's C++ ``AnalogLinear`` tiles (which do not run here); every device keeps its own
  g_prog and nu, and the draws are common random numbers (a fixed seed per evaluation), so
  the objective is deterministic and differential evolution compares like with like.
- The first population: aihwkit's Latin hypercube over the whole cube never came near the
  naive family within our budget (see ``initial_population``); stage 1 has no aihwkit
  counterpart (aihwkit takes its baseline's F as given).
- The sample is the weights' distribution resampled to ``sample_size`` values (aihwkit's
  ``downsample_weight_distribution``: sort, interpolate; no shuffle, which the metric does
  not see); a network's layers are pooled as w / max|w| per layer.
- No early stop once the baseline is beaten by a margin (aihwkit's ``stop_criterion``); no
  polish (a gradient step on a piecewise-linear objective); one worker (a shared machine);
  a budget of a few thousand evaluations (about a minute) instead of aihwkit's 400,000.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
from scipy.optimize import differential_evolution

from controller.workloads.pairs import GridTranslation, NPair, Translation, dual_pair
from controller.workloads.weight_error import default_chip, layer_squared_errors, single_thread
from controller.workloads.wpo_config import WPOConfig
from device_twin.config import ChipConfig


# --- the search space (aihwkit's denormalize, vectorised) ----------------------------------------
def n_dimensions(cfg: WPOConfig) -> int:
    """Hypercube dimensions: free F, k_w, and 2P - 1 coordinates per grid point."""
    points = cfg.n_bins if cfg.symmetric else 2 * cfg.n_bins - 1
    free_f = 1 if (cfg.significance_factor is None and cfg.n_pairs > 1) else 0
    return free_f + (0 if cfg.use_max_kw else 1) + points * (2 * cfg.n_pairs - 1)


def _significance(cfg: WPOConfig, f_value: float) -> tuple[float, ...]:
    return tuple(f_value**k for k in range(cfg.n_pairs))


def decode(x: np.ndarray, cfg: WPOConfig) -> GridTranslation:
    """A hypercube point -> the translation it stands for (weights normalised to max|w| = 1).

    Layout of ``x``: [F if free] [x_kw unless use_max_kw] then 2P - 1 blocks of one value per
    grid point: pair 0's position on its G+ - G- line, pair 0's share, pair 1's position,
    ..., the last pair's position (it takes what is left).
    """
    x = np.asarray(x, dtype=np.float64)
    i = 0
    if cfg.significance_factor is None and cfg.n_pairs > 1:
        f_value = x[0] * (cfg.f_max - cfg.f_min) + cfg.f_min
        i = 1
    else:
        f_value = cfg.significance_factor or 1.0
    f = _significance(cfg, f_value)
    g_min, g_max = cfg.g_min_us, cfg.g_max_us
    span = [fk * (g_max - g_min) for fk in f]
    w_us_abs_max = sum(span)
    x_kw = 1.0 if cfg.use_max_kw else x[i]
    i += 0 if cfg.use_max_kw else 1
    # k_w between 5 % and 100 % of the full range, as aihwkit's partition_parameters
    w_us_max = x_kw * 0.95 * w_us_abs_max + 0.05 * w_us_abs_max
    n_grid = 2 * cfg.n_bins - 1
    w_us = np.linspace(-1.0, 1.0, n_grid) * w_us_max
    if cfg.symmetric:
        w_us = w_us[: cfg.n_bins]
    blocks = x[i:].reshape(2 * cfg.n_pairs - 1, len(w_us))
    g_err = cfg.g_err_fraction * (g_max - g_min)
    gp = np.empty((cfg.n_pairs, len(w_us)))
    gm = np.empty_like(gp)
    centre = w_us.copy()
    for j, fj in enumerate(f):
        rest = sum(span[j + 1 :])
        lo = np.maximum(centre - rest, -span[j])
        hi = np.minimum(centre + rest, span[j])
        share = blocks[2 * j + 1] if j < cfg.n_pairs - 1 else 1.0
        f_delta = share * (hi - lo) + lo
        centre = centre - f_delta
        delta = f_delta / fj
        lb = g_min + np.maximum(delta, 0) - g_err
        ub = g_max + np.minimum(delta, 0) + g_err
        gp[j] = np.clip(blocks[2 * j] * (ub - lb) + lb, g_min, g_max)
        gm[j] = np.clip(gp[j] - delta, g_min, g_max)
    if cfg.symmetric:  # mirror: a positive weight swaps the devices of its negative twin
        c = cfg.n_bins - 1  # w = 0: aihwkit's mirror leaves it with its devices swapped too
        gp, gm = (np.concatenate([gp, gm[:, -2::-1]], axis=1),
                  np.concatenate([gm, gp[:, -2::-1]], axis=1))  # fmt: skip
        gp[:, c], gm[:, c] = gm[:, c].copy(), gp[:, c].copy()
    return GridTranslation(f, gp.astype(np.float32), gm.astype(np.float32), "wpo")


def encode_naive(cfg: WPOConfig, significance_factor: float) -> np.ndarray:
    """The hypercube point of the naive programming (``NPair``) at F: every weight's full
    range used (x_kw = 1), each pair taking what it can hold from the least significant up,
    one device of each pair at g_min (position 0 on its line)."""
    f = _significance(cfg, significance_factor)
    span = [fk * (cfg.g_max_us - cfg.g_min_us) for fk in f]
    points = cfg.n_bins if cfg.symmetric else 2 * cfg.n_bins - 1
    centre = np.linspace(-1.0, 1.0, 2 * cfg.n_bins - 1)[:points] * sum(span)
    g_err = cfg.g_err_fraction * (cfg.g_max_us - cfg.g_min_us)
    blocks = np.zeros((2 * cfg.n_pairs - 1, points))
    for j in range(cfg.n_pairs):
        rest = sum(span[j + 1 :])
        lo = np.maximum(centre - rest, -span[j])
        hi = np.minimum(centre + rest, span[j])
        take = np.clip(centre, -span[j], span[j])
        if j < cfg.n_pairs - 1:
            width = np.where(hi > lo, hi - lo, 1.0)
            blocks[2 * j + 1] = np.where(hi > lo, (take - lo) / width, 0.0)
        # the device opposite the sign at g_min: position g_err above the line's lower end
        free = cfg.g_max_us - cfg.g_min_us - np.abs(take / f[j]) + 2 * g_err
        blocks[2 * j] = g_err / np.maximum(free, 1e-12)
        centre = centre - take
    head = []
    if cfg.significance_factor is None and cfg.n_pairs > 1:
        head.append((significance_factor - cfg.f_min) / (cfg.f_max - cfg.f_min))
    if not cfg.use_max_kw:
        head.append(1.0)
    return np.clip(np.concatenate([head, blocks.ravel()]), 0.0, 1.0)


def resample_weights(w: np.ndarray, n: int) -> np.ndarray:
    """The sorted weights interpolated to ``n`` values (end points kept): aihwkit's
    ``downsample_weight_distribution`` without its shuffle."""
    s = np.sort(np.asarray(w, dtype=np.float64).ravel())
    return np.interp(np.linspace(0, len(s) - 1, n), np.arange(len(s)), s)


def pooled_normalised(layers: Mapping[str, np.ndarray]) -> np.ndarray:
    """Every layer's weights divided by the layer's max|w|, pooled (translations are
    scale-free: each layer is programmed relative to its own largest weight)."""
    parts = []
    for w in layers.values():
        w = np.asarray(w, dtype=np.float64).ravel()
        m = float(np.abs(w).max()) if w.size else 0.0
        if m > 0:
            parts.append(w / m)
    return np.concatenate(parts) if parts else np.zeros(1)


# --- the optimiser -------------------------------------------------------------------------------
@dataclass
class WPOResult:
    """What the search found and what it cost (losses: time-averaged NMSE of the sample on
    the optimiser's chips)."""

    translation: Translation  # a GridTranslation, or naive programming at the best F
    loss: float
    baseline: NPair  # the naive programming it is measured against
    baseline_loss: float
    naive_loss: float  # stage 1: naive programming at its best F
    search_loss: float  # stage 2: the best grid translation
    start_loss: float  # stage 2: the best member of its first population
    f_scan: list[tuple[float, float]]  # stage 1: (F, loss) of naive programming
    x: np.ndarray
    wall_s: float
    evaluations: int
    generations: int
    history: list[float] = field(default_factory=list)  # best loss after each generation

    @property
    def significance_factor(self) -> float:
        f = self.translation.significance
        return float(f[1]) if len(f) > 1 else 1.0

    @property
    def search_won(self) -> bool:
        """The grid translation beat naive programming at its best F."""
        return isinstance(self.translation, GridTranslation)

    @property
    def reduction(self) -> float:
        """1 - loss/baseline_loss on the optimiser's own sample and chips."""
        return 1.0 - self.loss / self.baseline_loss


def sample_loss(
    sample: np.ndarray, translation: Translation, cfg: WPOConfig, chip: ChipConfig
) -> float:
    """Time-averaged NMSE of ``sample`` (one layer) over ``cfg.sample_seeds`` chips."""
    total = sum(
        layer_squared_errors(sample, translation, cfg.times_s, chip, s).mean()
        for s in range(cfg.sample_seeds)
    )
    return total / (cfg.sample_seeds * sample.size)


def naive_scan(
    sample: np.ndarray, cfg: WPOConfig, chip: ChipConfig
) -> tuple[float, float, list[tuple[float, float]]]:
    """Stage 1: naive programming (``NPair``, exact) at ``f_scan_points`` values of F evenly
    in [f_min, f_max], then as many again between the neighbours of the best (only the fixed
    F when F is fixed); returns (best F, its loss, the scan as (F, loss) sorted by F)."""

    def loss(f: float) -> float:
        naive = NPair(_significance(cfg, f), cfg.g_max_us, cfg.g_min_us)
        return sample_loss(sample, naive, cfg, chip)

    if cfg.significance_factor is not None or cfg.n_pairs == 1:
        f = cfg.significance_factor or 1.0
        return f, loss(f), [(f, loss(f))]
    coarse = np.linspace(cfg.f_min, cfg.f_max, cfg.f_scan_points)
    scan = {float(f): loss(float(f)) for f in coarse}
    i = int(np.argmin([scan[float(f)] for f in coarse]))
    lo, hi = coarse[max(i - 1, 0)], coarse[min(i + 1, len(coarse) - 1)]
    for f in np.linspace(lo, hi, cfg.f_scan_points + 2)[1:-1]:
        scan.setdefault(float(f), loss(float(f)))
    best_f = min(scan, key=scan.__getitem__)
    return best_f, scan[best_f], sorted(scan.items())


def initial_population(cfg: WPOConfig, f_naive: float) -> np.ndarray:
    """Stage 2's first population: naive programming at F spread over f_naive / 1.25 ..
    f_naive * 1.25 (within [f_min, f_max]; the fixed F when F is fixed), each but the first
    jittered by ``init_jitter``.

    aihwkit starts from a Latin hypercube over the whole cube; within a budget of thousands of
    evaluations (aihwkit's defaults make 400,000) differential evolution then never comes
    near the naive family, which on the twin's device model is close to the optimum.
    """
    d = n_dimensions(cfg)
    size = max(cfg.popsize * d, 5)
    rng = np.random.default_rng(cfg.seed)
    if cfg.significance_factor is None and cfg.n_pairs > 1:
        lo, hi = max(cfg.f_min, f_naive / 1.25), min(cfg.f_max, f_naive * 1.25)
        factors = np.geomspace(lo, hi, size)
    else:
        factors = np.full(size, f_naive)
    factors[0] = f_naive
    pop = np.stack([encode_naive(cfg, float(f)) for f in factors])
    pop[1:] += rng.normal(0.0, cfg.init_jitter, pop[1:].shape)
    return np.clip(pop, 0.0, 1.0)


def optimise(
    weights: np.ndarray | Mapping[str, np.ndarray],
    cfg: WPOConfig | None = None,
    chip: ChipConfig | None = None,
) -> WPOResult:
    """Search the translation of minimal time-averaged NMSE for these weights (one array, or a
    network's layers by name, pooled as w / max|w|).

    Stage 1 scans naive programming over F; stage 2 runs differential evolution in aihwkit's
    search space from a population around the best naive F. The result is the better of the
    two: the search's grid translation, or naive programming at its best F when the search
    found nothing better (its grid cannot place the LSP's saturation point exactly).
    """
    cfg = cfg or WPOConfig()
    chip = chip or default_chip(cfg.g_max_us)
    pooled = pooled_normalised(weights if isinstance(weights, Mapping) else {"w": weights})
    sample = resample_weights(pooled, cfg.sample_size)
    f_base = cfg.significance_factor or cfg.baseline_significance_factor
    name = "dual_pair" if cfg.n_pairs == 2 else "n_pair"
    baseline = NPair(_significance(cfg, f_base), cfg.g_max_us, cfg.g_min_us, name)
    losses: list[float] = []
    history: list[float] = []

    def relative_loss(x: np.ndarray) -> float:
        value = sample_loss(sample, decode(x, cfg), cfg, chip) / baseline_loss
        losses.append(value if math.isfinite(value) else math.inf)
        return losses[-1]

    def callback(intermediate_result) -> None:
        history.append(float(intermediate_result.fun) * baseline_loss)

    t0 = time.perf_counter()
    with single_thread():
        baseline_loss = sample_loss(sample, baseline, cfg, chip)
        f_naive, naive_loss, scan = naive_scan(sample, cfg, chip)
        init = initial_population(cfg, f_naive)
        # relative to naive programming (aihwkit's normalisation): ``atol`` means the same
        # for any network
        res = differential_evolution(
            relative_loss, [(0.0, 1.0)] * n_dimensions(cfg), strategy="best1bin",
            maxiter=cfg.maxiter, tol=cfg.tol, atol=cfg.atol, mutation=cfg.mutation,
            recombination=cfg.recombination, rng=cfg.seed, polish=False, init=init,
            callback=callback, workers=1, updating="immediate",
        )  # fmt: skip
    wall = time.perf_counter() - t0
    search_loss = float(res.fun) * baseline_loss
    naive_best = NPair(_significance(cfg, f_naive), cfg.g_max_us, cfg.g_min_us, "wpo_naive")
    found: Translation = decode(res.x, cfg) if search_loss < naive_loss else naive_best
    return WPOResult(
        found,
        min(search_loss, naive_loss),
        baseline,
        float(baseline_loss),
        naive_loss,
        search_loss,
        min(losses[: len(init)]) * baseline_loss,
        scan,
        np.asarray(res.x),
        wall,
        len(losses) + len(scan) + 1,
        int(res.nit),
        history,
    )  # scipy evaluates the first population first


def translation_for(
    kind: str,
    significance_factor: float = 2.0,
    g_max_us: float = 25.0,
    optimised: WPOResult | None = None,
) -> Translation:
    """The named translation: ``single_pair``, ``dual_pair`` (naive) or ``wpo`` (needs the
    optimiser's result)."""
    from controller.workloads.pairs import SinglePair

    if kind == "single_pair":
        return SinglePair(g_max_us)
    if kind == "dual_pair":
        return dual_pair(significance_factor, g_max_us)
    if kind == "wpo":
        if optimised is None:
            raise ValueError("wpo needs an optimiser result (controller.workloads.wpo.optimise)")
        return optimised.translation
    raise ValueError(f"unknown translation {kind!r}; known: single_pair, dual_pair, wpo")
