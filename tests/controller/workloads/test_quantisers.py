"""Quantisers: the paper's multiplicative grid and its simulated annealing, uniform, none."""

from __future__ import annotations

import numpy as np
import pytest

from controller.workloads.quantisers import (
    AnnealingConfig,
    MultiplicativeGrid,
    MultiplicativeQuantiser,
    anneal_bases,
    quantise_layers,
    quantise_none,
    quantise_uniform,
)

G_MAX = 25.0


def _weights(seed: int = 0, n: int = 3000) -> np.ndarray:
    # trained-like: mostly away from 0 (the paper's penalty), clipped at 1
    rng = np.random.default_rng(seed)
    w = rng.normal(0, 0.4, n)
    return np.clip(np.where(np.abs(w) < 0.1, np.sign(w) * 0.1, w), -1, 1)


def test_grid_nearest_matches_brute_force():
    """The grid returns, for every weight, a nearest value of m+*D+ - m-*D-."""
    grid = MultiplicativeGrid.build(0.23003, 0.17909, 8)
    w = _weights(1, 500)
    q, mp, mn = grid.quantise(w)
    m = np.arange(9)
    every = (m[:, None] * 0.23003 - m[None, :] * 0.17909).ravel()
    best = np.abs(w[:, None] - every[None, :]).min(axis=1)
    assert np.allclose(np.abs(w - q), best, atol=1e-12)
    assert np.allclose(q, mp * 0.23003 - mn * 0.17909, atol=1e-12)


def test_annealed_weights_are_integer_multiples_of_the_bases():
    """Every quantised weight equals m+*D+ - m-*D- with integer m+- in 0..M."""
    w = _weights().reshape(100, 30)
    q = quantise_layers({"a": w}, MultiplicativeQuantiser(n_levels=8), G_MAX)["a"]
    assert q.level_pos.dtype == np.uint8 and q.level_neg.dtype == np.uint8
    assert q.level_pos.max() <= 8 and q.level_neg.max() <= 8
    rebuilt = q.level_pos * q.delta_pos - q.level_neg.astype(np.float64) * q.delta_neg
    assert np.allclose(q.w_q, rebuilt, atol=1e-6)
    # conductances are exact multiples of the per-level units, and fit g_max
    assert np.allclose(q.g_pos_us, q.level_pos * q.q_pos_us, atol=1e-4)
    assert np.allclose(q.g_neg_us, q.level_neg * q.q_neg_us, atol=1e-4)
    assert max(q.g_pos_us.max(), q.g_neg_us.max()) <= G_MAX + 1e-4
    assert np.allclose((q.g_pos_us - q.g_neg_us) / G_MAX * q.out_scale, q.w_q, atol=1e-5)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_annealing_never_ends_above_its_start(seed):
    """The final cost is never above the cost at D+ = D- = max|w|/M, and is reported."""
    w = _weights(seed)
    res = anneal_bases(w, 8, AnnealingConfig(seed=seed))
    start = MultiplicativeGrid.build(np.abs(w).max() / 8, np.abs(w).max() / 8, 8).cost(w)
    assert res.start_cost == pytest.approx(start)
    assert res.cost <= res.start_cost
    assert res.cost == pytest.approx(
        MultiplicativeGrid.build(res.delta_pos, res.delta_neg, 8).cost(w)
    )
    assert 0.0 <= res.cost_reduction < 1.0


def test_annealing_with_no_steps_keeps_the_start():
    """With zero annealing steps the bases stay at max|w|/M (the uniform grid)."""
    w = _weights()
    res = anneal_bases(w, 8, AnnealingConfig(n_steps=0))
    assert res.delta_pos == res.delta_neg == pytest.approx(np.abs(w).max() / 8)
    assert res.cost == res.start_cost


def test_same_seed_same_bases():
    """Annealing is reproducible: the same seed gives the same bases, another seed may not."""
    w = _weights()
    a = anneal_bases(w, 8, AnnealingConfig(seed=5))
    b = anneal_bases(w, 8, AnnealingConfig(seed=5))
    c = anneal_bases(w, 8, AnnealingConfig(seed=6))
    assert (a.delta_pos, a.delta_neg, a.cost) == (b.delta_pos, b.delta_neg, b.cost)
    assert (a.delta_pos, a.delta_neg) != (c.delta_pos, c.delta_neg)


def test_single_pairs_use_one_device_per_weight():
    """With pairs="single" no weight has both multipliers non-zero."""
    w = _weights().reshape(60, 50)
    q = quantise_layers({"a": w}, MultiplicativeQuantiser(pairs="single"), G_MAX)["a"]
    assert not np.any((q.level_pos > 0) & (q.level_neg > 0))
    assert q.annealing.cost <= q.annealing.start_cost


def test_network_scope_shares_one_pair_of_bases():
    """scope="network" anneals one (D+, D-) for all layers, as the paper reports."""
    ws = {"a": _weights(0, 600).reshape(20, 30), "b": 0.5 * _weights(1, 400).reshape(40, 10)}
    q = quantise_layers(ws, MultiplicativeQuantiser(scope="network"), G_MAX)
    assert (q["a"].delta_pos, q["a"].delta_neg) == (q["b"].delta_pos, q["b"].delta_neg)


def test_uniform_levels_sit_on_one_device():
    """uniform: |w| rounded to M+1 even levels, on G+ for w > 0 and on G- for w < 0."""
    w = _weights().reshape(50, 60)
    q = quantise_uniform("a", w, G_MAX, 8)
    assert not np.any((q.level_pos > 0) & (q.level_neg > 0))
    assert np.all(q.level_neg[w > 0] == 0) and np.all(q.level_pos[w < 0] == 0)
    assert np.abs(q.w_q - w).max() <= np.abs(w).max() / 16 + 1e-6
    assert np.allclose(q.g_pos_us, q.level_pos * G_MAX / 8, atol=1e-5)


def test_none_maps_the_largest_weight_to_g_max():
    """none: continuous targets, max|w| at g_max, exact reconstruction."""
    w = _weights().reshape(50, 60)
    q = quantise_none("a", w, G_MAX)
    assert max(q.g_pos_us.max(), q.g_neg_us.max()) == pytest.approx(G_MAX)
    assert np.allclose((q.g_pos_us - q.g_neg_us) / G_MAX * q.out_scale, w, atol=1e-5)
    assert q.level_pos is None
