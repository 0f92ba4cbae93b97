"""Quantisers: how a layer's weights become conductance targets on differential pairs.

- ``none``: continuous targets. Per layer, w_max = max|w| maps to g_max; w > 0 on G+,
  w < 0 on G-.
- ``uniform``: aihwkit's usual mapping with evenly spaced levels on one device of the pair:
  |w| is rounded to one of ``n_levels`` + 1 levels 0, D, 2D, ..., M*D with D = w_max/M, on G+
  for w > 0 and on G- for w < 0.
- ``multiplicative``: the seed paper's (Ivanov, arXiv 2310.00337; DESIGN.md §5):
  w ~ m+ * D+ - m- * D- with integer multipliers m+- in 0..M on *both* devices and two bases
  (D+, D-) chosen by simulated annealing to minimise sum |w - Q(w)|. Every device then sits on
  an exact multiple of its conductance unit q+- = D+- * s, which is what lets the controller
  recognise a drifted device and pulse it back to its stored level.

On a chip with several pairs per weight (Mackin 2022), ``dual_pair`` (naive) and ``wpo``
(optimised) spread each weight over the pairs, and ``multiplicative`` with ``lsp_trim`` puts
its levels on the most significant pair and the residual on the least significant one
(``controller.workloads.pair_quantisers``); the others program pair 0 and leave the rest at
0 uS.

For a layer the result is a ``LayerQuantisation``: the quantised weights, the conductance
targets G+, G- (uS) of pair 0 (and ``upper_pairs``: pairs 1, 2, ...) and ``out_scale`` with
w_q = sum_k F^k (G+_k - G-_k)/g_max * out_scale, so a crossbar output is rescaled digitally
by ``out_scale``; for the level quantisers also the multipliers and the conductance per level.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from controller.workloads.wpo_config import WPOConfig


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _field(default: Any, description: str, unit: str = "", **limits: Any) -> Any:
    """A quantiser field with its meaning and unit (``""``: a pure number, a count or a
    choice); numbers are strict (a boolean is not a number, nor is a string)."""
    return Field(default, description=description, json_schema_extra={"unit": unit},
                 strict=True, **limits)  # fmt: skip


class AnnealingConfig(_Strict):
    """Simulated annealing of the bases (D+, D-), the paper's schedule by default.

    Start at D+ = D- = max|w|/M and temperature ``t0``; at every step propose
    D+- <- D+- +- T * U(0, 1) * max|w| * ``step_fraction`` (independent random signs), accept
    by Metropolis (always if the cost drops, else with probability exp(-dcost/T)), keep the
    best seen, then cool T <- ``cooling`` * T.
    """

    t0: float = _field(
        1.0, "starting temperature, in units of the cost sum |w - Q(w)|", "weight", gt=0
    )
    cooling: float = _field(0.95, "T <- cooling * T after every step", "", gt=0, lt=1)
    n_steps: int = _field(150, "annealing steps per layer", "steps", ge=0, le=100_000)
    moves_per_step: int = _field(1, "moves proposed per step", "moves", ge=1, le=1000)
    step_fraction: float = _field(
        0.01, "a move changes a base by up to T * step_fraction * max|w| (the paper's "
        "max|w|/100)", "", gt=0,
    )  # fmt: skip
    seed: int = _field(0, "seed of the annealing's random moves", "", ge=0)


class NoneQuantiser(_Strict):
    """Continuous targets: per layer, max|w| maps to g_max; w > 0 on G+, w < 0 on G-."""

    kind: Literal["none"] = Field("none", description="the quantiser: none")


class UniformQuantiser(_Strict):
    """aihwkit's usual mapping: |w| rounded to one of n_levels + 1 evenly spaced levels on
    one device of the pair (G+ for w > 0, G- for w < 0)."""

    kind: Literal["uniform"] = Field("uniform", description="the quantiser: uniform")
    n_levels: int = _field(8, "M: levels 0..M on one device", "levels", ge=1, le=255)


class MultiplicativeQuantiser(_Strict):
    """The seed paper's: w ~ m+ * D+ - m- * D- with integer multipliers 0..n_levels on both
    devices and two bases chosen by simulated annealing, so that every device sits on an
    exact multiple of its conductance unit and a drifted device can be pulsed back."""

    kind: Literal["multiplicative"] = Field(
        "multiplicative", description="the quantiser: multiplicative"
    )
    n_levels: int = _field(8, "M: multipliers 0..M on each device", "levels", ge=1, le=255)
    scope: Literal["layer", "network"] = Field(
        "layer", description="layer: bases annealed per layer; network: one pair (D+, D-) "
        "for all layers (the paper reports one pair for its network)",
    )  # fmt: skip
    pairs: Literal["both", "single"] = Field(
        "both", description="both: any pair (m+, m-), the paper's grid of up to (M+1)^2 "
        "values; single: one device per weight (m+ = 0 or m- = 0), coarser, but no weight "
        "pays the programming noise of two large conductances",
    )  # fmt: skip
    annealing: AnnealingConfig = Field(
        default_factory=AnnealingConfig,
        description="simulated annealing of the bases (the paper's schedule by default)",
    )
    lsp_trim: bool = Field(
        False, description="on a chip with two pairs per weight (Mackin 2022): the levels on "
        "the most significant pair, and the least significant pair trims each weight's "
        "residual w - Q(w)",
    )  # fmt: skip


class DualPairQuantiser(_Strict):
    """Naive programming over the chip's pairs (aihwkit's ``DualPairConductanceConverter``;
    ``controller.workloads.pairs.NPair``): continuous targets, the least significant pair
    first. Needs a chip with ``pairs_per_weight`` >= 2."""

    kind: Literal["dual_pair"] = Field("dual_pair", description="the quantiser: dual_pair")


class WPOQuantiser(_Strict):
    """The weight programming optimiser's translation (Mackin 2022;
    ``controller.workloads.wpo``), searched on the network's weights at the chip's F
    (``significance_factor``), pairs and g_max (those fields of ``search`` are replaced by
    the chip's). Needs a chip with ``pairs_per_weight`` >= 2."""

    kind: Literal["wpo"] = Field("wpo", description="the quantiser: wpo")
    search: WPOConfig = Field(
        default_factory=WPOConfig, description="the optimiser's search (controller.workloads.wpo)"
    )


QuantiserConfig = Annotated[
    NoneQuantiser | UniformQuantiser | MultiplicativeQuantiser | DualPairQuantiser | WPOQuantiser,
    Field(discriminator="kind"),
]
QUANTISERS = ("none", "uniform", "multiplicative", "dual_pair", "wpo")
#: Quantisers that spread a weight over several pairs (the others program pair 0 only).
PAIR_QUANTISERS = ("dual_pair", "wpo")


def quantiser_config(q: str | QuantiserConfig) -> QuantiserConfig:
    """A quantiser config from its name (defaults) or as given."""
    if isinstance(q, str):
        table = {"none": NoneQuantiser, "uniform": UniformQuantiser,
                 "multiplicative": MultiplicativeQuantiser, "dual_pair": DualPairQuantiser,
                 "wpo": WPOQuantiser}  # fmt: skip
        if q not in table:
            raise ValueError(f"unknown quantiser {q!r}; known: {', '.join(QUANTISERS)}")
        return table[q]()
    return q


# --- the multiplicative grid ----------------------------------------------------------------
@dataclass(frozen=True)
class MultiplicativeGrid:
    """Every value m+ * D+ - m- * D- (m+- in 0..M), sorted, with the multipliers reaching it.

    Where several pairs give the same value, the one with the smallest m+ + m- is kept (less
    conductance: less read energy, less programming noise). ``single`` keeps only the pairs
    with m+ = 0 or m- = 0 (one device per weight).
    """

    delta_pos: float
    delta_neg: float
    n_levels: int
    values: np.ndarray  # float64, ascending, distinct
    m_pos: np.ndarray  # uint8
    m_neg: np.ndarray

    @classmethod
    def build(
        cls, delta_pos: float, delta_neg: float, n_levels: int, single: bool = False
    ) -> MultiplicativeGrid:
        m = np.arange(n_levels + 1)
        a, b = (x.ravel() for x in np.meshgrid(m, m, indexing="ij"))
        if single:
            one = (a == 0) | (b == 0)
            a, b = a[one], b[one]
        v = a * float(delta_pos) - b * float(delta_neg)
        tol = 1e-9 * max(delta_pos, delta_neg, 1e-300)
        key = np.round(v / tol).astype(np.int64)
        order = np.lexsort((a + b, key))  # by value, then by total multiplier
        _, first = np.unique(key[order], return_index=True)
        keep = order[first]
        return cls(float(delta_pos), float(delta_neg), n_levels, v[keep],
                   a[keep].astype(np.uint8), b[keep].astype(np.uint8))  # fmt: skip

    def nearest(self, w: np.ndarray) -> np.ndarray:
        """Index into ``values`` of the nearest grid value of every weight."""
        v = self.values
        i = np.clip(np.searchsorted(v, w), 1, len(v) - 1)
        left_closer = np.abs(w - v[i - 1]) <= np.abs(v[i] - w)
        return np.where(left_closer, i - 1, i)

    def quantise(self, w: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(Q(w), m+, m-) for an array of weights."""
        if len(self.values) == 1:
            idx = np.zeros(np.shape(w), np.int64)
        else:
            idx = self.nearest(np.asarray(w, np.float64))
        return self.values[idx], self.m_pos[idx], self.m_neg[idx]

    def cost(self, w: np.ndarray) -> float:
        """sum |w - Q(w)|, the annealing cost."""
        q, _, _ = self.quantise(w)
        return float(np.abs(w - q).sum())


@dataclass
class AnnealingResult:
    """Bases found by simulated annealing, and what they improved over the start."""

    delta_pos: float
    delta_neg: float
    cost: float  # sum |w - Q(w)| at the best bases
    start_cost: float  # the same at D+ = D- = max|w|/M
    n_weights: int
    accepted: int
    history: list[float] = field(default_factory=list)  # current cost after each step

    @property
    def cost_reduction(self) -> float:
        """Fractional reduction of the cost over the start (0.25 = 25 % lower)."""
        return 0.0 if self.start_cost == 0 else 1.0 - self.cost / self.start_cost


def anneal_bases(
    w: np.ndarray, n_levels: int, cfg: AnnealingConfig | None = None, single: bool = False
) -> AnnealingResult:
    """Simulated annealing of (D+, D-) for the weights ``w`` (the paper's schedule);
    ``single``: on the one-device-per-weight grid."""
    cfg = cfg or AnnealingConfig()
    w = np.asarray(w, np.float64).ravel()
    scale = float(np.abs(w).max()) if w.size else 0.0
    if scale == 0.0:
        return AnnealingResult(1.0, 1.0, 0.0, 0.0, int(w.size), 0)
    rng = np.random.default_rng(cfg.seed)
    d = np.array([scale / n_levels] * 2)
    # a base must stay positive; far below max|w|/M^2 it cannot help anyway
    d_min = scale / (n_levels * n_levels * 100)

    def cost(dd: np.ndarray) -> float:
        return MultiplicativeGrid.build(dd[0], dd[1], n_levels, single).cost(w)

    c = start = cost(d)
    best_d, best_c = d.copy(), c
    temp, accepted, history = cfg.t0, 0, []
    for _ in range(cfg.n_steps):
        for _ in range(cfg.moves_per_step):
            step = temp * rng.random(2) * scale * cfg.step_fraction
            cand = np.maximum(d + rng.choice([-1.0, 1.0], 2) * step, d_min)
            cc = cost(cand)
            if cc <= c or rng.random() < math.exp(-(cc - c) / temp):
                d, c = cand, cc
                accepted += 1
                if c < best_c:
                    best_d, best_c = d.copy(), c
        history.append(c)
        temp *= cfg.cooling
    return AnnealingResult(float(best_d[0]), float(best_d[1]), best_c, start, int(w.size),
                           accepted, history)  # fmt: skip


# --- per layer ------------------------------------------------------------------------------
@dataclass
class PairLevels:
    """Targets of one more significant pair of a layer (pairs 1, 2, ...; (K, N) arrays)."""

    g_pos_us: np.ndarray
    g_neg_us: np.ndarray
    level_pos: np.ndarray | None = None
    level_neg: np.ndarray | None = None
    q_pos_us: float | None = None
    q_neg_us: float | None = None


@dataclass
class LayerQuantisation:
    """One layer's weights as conductance targets (all arrays are (rows, cols) = (K, N))."""

    layer: str
    w: np.ndarray  # float32, the weights as the layer holds them (crossbar orientation)
    w_q: np.ndarray  # float32, the weights the targets represent
    g_pos_us: np.ndarray  # float32
    g_neg_us: np.ndarray
    out_scale: float  # w_q = sum_k F^k (G+_k - G-_k)/g_max * out_scale
    level_pos: np.ndarray | None = None  # uint8 multipliers (level quantisers)
    level_neg: np.ndarray | None = None
    q_pos_us: float | None = None  # uS per level
    q_neg_us: float | None = None
    delta_pos: float | None = None  # weight per level
    delta_neg: float | None = None
    annealing: AnnealingResult | None = None
    upper_pairs: list[PairLevels] = field(default_factory=list)


def _w_max(w: np.ndarray) -> float:
    m = float(np.abs(w).max()) if w.size else 0.0
    return m if m > 0 else 1.0  # an all-zero layer: any scale maps it to 0 uS


def quantise_none(name: str, w: np.ndarray, g_max_us: float) -> LayerQuantisation:
    w_max = _w_max(w)
    g = np.abs(w) / w_max * g_max_us
    w32 = w.astype(np.float32)
    return LayerQuantisation(
        name, w32, w32.copy(), np.where(w > 0, g, 0).astype(np.float32),
        np.where(w < 0, g, 0).astype(np.float32), w_max,
    )  # fmt: skip


def quantise_uniform(name: str, w: np.ndarray, g_max_us: float, n_levels: int) -> LayerQuantisation:
    w_max = _w_max(w)
    delta = w_max / n_levels
    level = np.clip(np.rint(np.abs(w) / delta), 0, n_levels).astype(np.uint8)
    lp = np.where(w > 0, level, 0).astype(np.uint8)
    ln = np.where(w < 0, level, 0).astype(np.uint8)
    q_us = g_max_us / n_levels
    w_q = (lp.astype(np.float64) - ln) * delta
    return LayerQuantisation(
        name, w.astype(np.float32), w_q.astype(np.float32), (lp * q_us).astype(np.float32),
        (ln * q_us).astype(np.float32), w_max, lp, ln, q_us, q_us, delta, delta,
    )  # fmt: skip


def quantise_multiplicative(
    name: str,
    w: np.ndarray,
    g_max_us: float,
    n_levels: int,
    delta_pos: float,
    delta_neg: float,
    annealing: AnnealingResult | None = None,
    single: bool = False,
) -> LayerQuantisation:
    """Map ``w`` onto the grid of (D+, D-); the top level M * max(D+, D-) fits g_max."""
    grid = MultiplicativeGrid.build(delta_pos, delta_neg, n_levels, single)
    w_q, lp, ln = grid.quantise(w.astype(np.float64))
    s = g_max_us / (n_levels * max(delta_pos, delta_neg))  # uS per weight unit
    q_pos, q_neg = delta_pos * s, delta_neg * s
    return LayerQuantisation(
        name, w.astype(np.float32), w_q.astype(np.float32),
        (lp * q_pos).astype(np.float32), (ln * q_neg).astype(np.float32), g_max_us / s,
        lp, ln, float(q_pos), float(q_neg), float(delta_pos), float(delta_neg), annealing,
    )  # fmt: skip


def quantise_layers(
    weights: dict[str, np.ndarray],
    quantiser: str | QuantiserConfig,
    g_max_us: float,
) -> dict[str, LayerQuantisation]:
    """Quantise every layer's crossbar matrix (name -> (K, N) weights)."""
    q = quantiser_config(quantiser)
    if q.kind in PAIR_QUANTISERS:
        raise ValueError(f"{q.kind!r} spreads weights over pairs: see pair_quantisers")
    out: dict[str, LayerQuantisation] = {}
    if isinstance(q, NoneQuantiser):
        return {n: quantise_none(n, w, g_max_us) for n, w in weights.items()}
    if isinstance(q, UniformQuantiser):
        return {n: quantise_uniform(n, w, g_max_us, q.n_levels) for n, w in weights.items()}
    single = q.pairs == "single"
    if q.scope == "network":
        all_w = np.concatenate([w.ravel() for w in weights.values()])
        res = anneal_bases(all_w, q.n_levels, q.annealing, single)
        for n, w in weights.items():
            out[n] = quantise_multiplicative(n, w, g_max_us, q.n_levels, res.delta_pos,
                                             res.delta_neg, res, single)  # fmt: skip
        return out
    for i, (n, w) in enumerate(weights.items()):
        # a distinct, reproducible stream per layer
        cfg = q.annealing.model_copy(update={"seed": q.annealing.seed + 1000 * i})
        res = anneal_bases(w, q.n_levels, cfg, single)
        out[n] = quantise_multiplicative(n, w, g_max_us, q.n_levels, res.delta_pos,
                                         res.delta_neg, res, single)  # fmt: skip
    return out
