"""Weights on several conductance pairs: how a weight becomes conductance targets (Mackin 2022).

A weight is held by ``P`` differential pairs of PCM devices with significance factors
``f = (f_0, ..., f_{P-1})`` (pair 0 the least significant)::

    w = sum_k f_k * (G+_k - G-_k) / us_per_weight

Two pairs with ``f = (1, F)`` are Mackin's W ~ F (G+ - G-) + (g+ - g-): the most significant
pair (MSP) is pair 1, the least significant pair (LSP) pair 0; one pair with ``f = (1,)`` is
the twin's ordinary differential pair. A chip with significance factor F has f_k = F^k.

A *translation* maps a layer's weights to targets for every device, scale-free (it sees
w / max|w| only), as aihwkit's conductance converters do; each one here is tested equal to
its aihwkit original (``aihwkit.inference.converter.conductance``):

- ``SinglePair`` (aihwkit ``SinglePairConductanceConverter``): |w| on G+ or G-, max|w| at
  g_max;
- ``NPair`` (aihwkit ``NPairConductanceConverter``; ``dual_pair`` is its two-pair case,
  aihwkit's ``DualPairConductanceConverter``): the *naive* multi-pair programming. Pair 0
  takes |w| up to g_max, and a more significant pair takes only what the less significant
  ones cannot hold (max|w| fills every pair); ``msp_first`` fills them the other way round;
- ``GridTranslation`` (aihwkit ``CustomPairConductanceConverter``): any programming given
  as every device's conductance at ``L`` evenly spaced normalised weights from -1 to 1,
  linearly interpolated in between. The weight programming optimiser
  (``controller.workloads.wpo``) searches this family.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: aihwkit's floor for max|w| (``_ZERO_CLIP``): an all-zero layer maps to g_min everywhere.
ZERO_CLIP = 1e-7


@dataclass(frozen=True)
class PairTargets:
    """Targets of every device of a set of weights on ``P`` pairs.

    ``g_pos_us`` and ``g_neg_us`` have shape ``(P, *w.shape)``; ``significance`` holds f_k;
    a weight is ``sum_k f_k (G+_k - G-_k) / us_per_weight``.
    """

    g_pos_us: np.ndarray
    g_neg_us: np.ndarray
    significance: tuple[float, ...]
    us_per_weight: float

    @property
    def n_pairs(self) -> int:
        return len(self.significance)

    def weights(self, g_pos_us: np.ndarray | None = None, g_neg_us: np.ndarray | None = None):
        """The weights the given conductances (default: the targets) stand for."""
        gp = self.g_pos_us if g_pos_us is None else g_pos_us
        gn = self.g_neg_us if g_neg_us is None else g_neg_us
        return combine_pairs(gp, gn, self.significance) / self.us_per_weight


def combine_pairs(
    g_pos_us: np.ndarray, g_neg_us: np.ndarray, significance: tuple[float, ...]
) -> np.ndarray:
    """sum_k f_k (G+_k - G-_k) over the leading (pair) axis, in uS."""
    f = np.asarray(significance, dtype=np.float64).reshape((-1,) + (1,) * (g_pos_us.ndim - 1))
    return (f * (g_pos_us.astype(np.float64) - g_neg_us)).sum(axis=0)


def _abs_max(w: np.ndarray) -> float:
    return max(float(np.abs(w).max()) if w.size else 0.0, ZERO_CLIP)


@dataclass(frozen=True)
class SinglePair:
    """One pair per weight: |w|/max|w| * (g_max - g_min) + g_min on the sign's device."""

    g_max_us: float = 25.0
    g_min_us: float = 0.0
    name: str = "single_pair"

    @property
    def significance(self) -> tuple[float, ...]:
        return (1.0,)

    def translate(self, w: np.ndarray) -> PairTargets:
        w = np.asarray(w, dtype=np.float64)
        s = (self.g_max_us - self.g_min_us) / _abs_max(w)
        sw = w * s
        gp = np.clip(sw, 0.0, self.g_max_us) + self.g_min_us
        gn = np.clip(-sw, 0.0, self.g_max_us) + self.g_min_us
        return PairTargets(gp[None].astype(np.float32), gn[None].astype(np.float32), (1.0,), s)


@dataclass(frozen=True)
class NPair:
    """Naive programming on pairs of significance ``f``.

    max|w| maps to sum_k f_k (g_max - g_min). Pairs are filled in ``fill_order`` (default:
    least significant first, as aihwkit): each holds the part of |w| beyond what the pairs
    before it hold at g_max, divided by its f_k, on the sign's device (the other at g_min).
    """

    significance: tuple[float, ...]
    g_max_us: float = 25.0
    g_min_us: float = 0.0
    name: str = "n_pair"
    fill_order: tuple[int, ...] | None = None

    def translate(self, w: np.ndarray) -> PairTargets:
        w = np.asarray(w, dtype=np.float64)
        span = self.g_max_us - self.g_min_us
        s = sum(f * span for f in self.significance) / _abs_max(w)
        w_us = w * s
        pos, neg = np.clip(w_us, 0.0, None), np.clip(-w_us, 0.0, None)
        n = len(self.significance)
        gp, gn = [np.empty(0)] * n, [np.empty(0)] * n
        lower = 0.0
        for k in self.fill_order or range(n):
            f = self.significance[k]
            gp[k] = np.clip((pos - lower) / f + self.g_min_us, self.g_min_us, self.g_max_us)
            gn[k] = np.clip((neg - lower) / f + self.g_min_us, self.g_min_us, self.g_max_us)
            lower += f * span
        return PairTargets(np.stack(gp).astype(np.float32), np.stack(gn).astype(np.float32),
                           tuple(self.significance), s)  # fmt: skip


def dual_pair(significance_factor: float, g_max_us: float = 25.0) -> NPair:
    """aihwkit's ``DualPairConductanceConverter(f_lst=[1, F])``: LSP first, MSP for the rest."""
    return NPair((1.0, float(significance_factor)), g_max_us, 0.0, "dual_pair")


def msp_first(significance_factor: float, g_max_us: float = 25.0) -> NPair:
    """Two pairs filled the other way round: the MSP holds |w|/F up to g_max and the LSP only
    what is left (every weight pays the MSP's F-fold amplified programming error)."""
    return NPair((1.0, float(significance_factor)), g_max_us, 0.0, "msp_first", (1, 0))


@dataclass(frozen=True)
class GridTranslation:
    """Any programming, as every device's target at ``L`` normalised weights linspace(-1, 1).

    ``g_pos_us``/``g_neg_us`` have shape (P, L). The weight realised at a grid point is
    ``sum_k f_k (G+_k - G-_k)``; the largest of those fixes ``us_per_weight`` (the scale), and
    a weight between grid points gets the linear interpolation of the targets.
    """

    significance: tuple[float, ...]
    g_pos_us: np.ndarray
    g_neg_us: np.ndarray
    name: str = "grid"

    @property
    def grid(self) -> np.ndarray:
        """The normalised weights (w / max|w|) at which the targets are given."""
        return np.linspace(-1.0, 1.0, self.g_pos_us.shape[1])

    def grid_weights_us(self) -> np.ndarray:
        """sum_k f_k (G+_k - G-_k) at every grid point, in uS."""
        return combine_pairs(self.g_pos_us, self.g_neg_us, self.significance)

    def translate(self, w: np.ndarray) -> PairTargets:
        w = np.asarray(w, dtype=np.float64)
        w_max = _abs_max(w)
        s = max(float(np.abs(self.grid_weights_us()).max()), ZERO_CLIP) / w_max
        u = w / w_max
        grid = self.grid
        gp = np.stack([np.interp(u, grid, g) for g in self.g_pos_us])
        gn = np.stack([np.interp(u, grid, g) for g in self.g_neg_us])
        return PairTargets(gp.astype(np.float32), gn.astype(np.float32),
                           tuple(self.significance), s)  # fmt: skip


Translation = SinglePair | NPair | GridTranslation


def tabulate(translation: Translation, u: np.ndarray) -> list[dict[str, float]]:
    """One row per normalised weight u = w/max|w| (max|u| = 1 fixes the scale): u, and the
    targets G+_k, G-_k of every pair (for reports and plots)."""
    u = np.asarray(u, dtype=np.float64)
    t = translation.translate(np.concatenate([u, [1.0]]))  # max|w| = 1 whatever u holds
    rows = []
    for i, ui in enumerate(u):
        row = {"u": float(ui)}
        for k in range(t.n_pairs):
            row[f"g_pos_{k}_us"] = float(t.g_pos_us[k, i])
            row[f"g_neg_{k}_us"] = float(t.g_neg_us[k, i])
        rows.append(row)
    return rows
