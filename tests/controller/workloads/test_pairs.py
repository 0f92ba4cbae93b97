"""Weights on several conductance pairs: every translation equals its aihwkit converter."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from aihwkit.inference.converter.conductance import (
    CustomPairConductanceConverter,
    DualPairConductanceConverter,
    NPairConductanceConverter,
    SinglePairConductanceConverter,
)

from controller.workloads.pairs import (
    GridTranslation,
    NPair,
    SinglePair,
    dual_pair,
    msp_first,
    tabulate,
)


def _weights(seed: int = 0, shape=(96, 40)) -> np.ndarray:
    return np.random.default_rng(seed).normal(0, 0.3, shape).astype(np.float32)


def _ours_as_list(targets) -> np.ndarray:
    """Our (P, ...) arrays in aihwkit's order: G+_0, G-_0, G+_1, G-_1, ..."""
    return np.stack(
        [g for k in range(targets.n_pairs) for g in (targets.g_pos_us[k], targets.g_neg_us[k])]
    )


CASES = [
    (SinglePair(), SinglePairConductanceConverter()),
    (SinglePair(20.0, 2.0), SinglePairConductanceConverter(g_max=20.0, g_min=2.0)),
    (dual_pair(3.0), DualPairConductanceConverter([1.0, 3.0])),
    (dual_pair(2.0, 25.0), DualPairConductanceConverter([1.0, 2.0], g_max=25.0)),
    (NPair((1.0, 2.0, 4.0), 20.0, 1.0), NPairConductanceConverter([1.0, 2.0, 4.0], 20.0, 1.0)),
    (NPair((1.0, 0.5)), NPairConductanceConverter([1.0, 0.5])),
]


@pytest.mark.parametrize(("ours", "theirs"), CASES, ids=lambda c: str(c)[:40])
def test_translation_equals_aihwkit_converter(ours, theirs):
    """Targets, the scale (aihwkit's scale_ratio) and the weights read back equal aihwkit's."""
    for seed in range(3):
        w = _weights(seed)
        targets = ours.translate(w)
        g, params = theirs.convert_to_conductances(torch.from_numpy(w))
        np.testing.assert_allclose(_ours_as_list(targets), torch.stack(g).numpy(), atol=2e-5)
        assert targets.us_per_weight == pytest.approx(float(params["scale_ratio"]), rel=1e-6)
        back = theirs.convert_back_to_weights(g, params).numpy()
        np.testing.assert_allclose(targets.weights(), back, atol=1e-5)
        np.testing.assert_allclose(targets.weights(), w, atol=1e-5)


def test_grid_translation_equals_aihwkit_custom_converter():
    """Interpolated targets and the scale equal aihwkit's CustomPairConductanceConverter."""
    rng = np.random.default_rng(4)
    for n_pairs, n_grid in ((1, 5), (2, 11), (3, 7)):
        gp = rng.uniform(0, 25, (n_pairs, n_grid)).astype(np.float32)
        gn = rng.uniform(0, 25, (n_pairs, n_grid)).astype(np.float32)
        f = tuple(float(2.0**k) for k in range(n_pairs))
        ours = GridTranslation(f, gp, gn)
        g_lst = [list(map(float, a[k])) for k in range(n_pairs) for a in (gp, gn)]
        theirs = CustomPairConductanceConverter(list(f), g_lst, invertibility_test=False)
        w = _weights(n_pairs)
        targets = ours.translate(w)
        g, params = theirs.convert_to_conductances(torch.from_numpy(w))
        np.testing.assert_allclose(_ours_as_list(targets), torch.stack(g).numpy(), atol=2e-5)
        assert targets.us_per_weight == pytest.approx(float(params["scale_ratio"]), rel=1e-5)


def test_naive_dual_pair_keeps_small_weights_on_the_lsp():
    """Naive programming uses the MSP only for weights the LSP cannot hold (|w| above
    g_max/(1+F) of the range), and one device of each pair stays at 0 uS."""
    w = np.linspace(-1, 1, 2001)
    t = dual_pair(2.0).translate(w)
    small = np.abs(w) <= 1 / 3 - 1e-9
    assert np.all(t.g_pos_us[1][small] == 0) and np.all(t.g_neg_us[1][small] == 0)
    assert np.all(t.g_pos_us[1][w > 1 / 3 + 1e-3] > 0)
    assert np.all(np.minimum(t.g_pos_us, t.g_neg_us) == 0)
    assert t.us_per_weight == pytest.approx(75.0)


def test_grid_translation_reads_back_its_weights_when_linear():
    """A grid whose realised weights are linear in w (an invertible programming) reads back w."""
    u = np.linspace(-1, 1, 11)
    gp = np.stack([np.clip(u, 0, None) * 10 + 5, np.clip(u, 0, None) * 20])
    gn = np.stack([np.clip(-u, 0, None) * 10 + 5, np.clip(-u, 0, None) * 20])
    tr = GridTranslation((1.0, 2.0), gp.astype(np.float32), gn.astype(np.float32))
    w = _weights(7)
    np.testing.assert_allclose(tr.translate(w).weights(), w, atol=1e-5)
    rows = tabulate(tr, tr.grid)
    assert len(rows) == 11 and rows[0]["u"] == -1.0 and rows[-1]["g_pos_1_us"] == 20.0
    assert tabulate(dual_pair(2.0), np.array([0.2]))[0] == {
        "u": 0.2,
        "g_pos_0_us": 15.0,
        "g_neg_0_us": 0.0,
        "g_pos_1_us": 0.0,
        "g_neg_1_us": 0.0,
    }


def test_msp_first_fills_the_msp_before_the_lsp():
    """``msp_first`` puts |w| on the MSP (divided by F) until it is full, then on the LSP."""
    w = np.linspace(-1, 1, 301)
    t = msp_first(2.0).translate(w)
    np.testing.assert_allclose(t.weights(), w, atol=1e-6)
    low = np.abs(w) <= 2 / 3 - 1e-9
    assert np.all(t.g_pos_us[0][low] == 0) and np.all(t.g_neg_us[0][low] == 0)
    np.testing.assert_allclose(t.g_pos_us[1][w > 0][:10], w[w > 0][:10] * 75 / 2, rtol=1e-5)
