"""Weight programming optimisation: aihwkit's search space, and the search reducing the metric."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from aihwkit.inference.converter.wpo import denormalize, downsample_weight_distribution

from controller.workloads.pairs import GridTranslation, NPair, dual_pair
from controller.workloads.weight_error import compare_translations, default_chip
from controller.workloads.wpo import (
    decode,
    encode_naive,
    n_dimensions,
    optimise,
    resample_weights,
)
from controller.workloads.wpo_config import WPOConfig
from device_twin.config import DeviceModelConfig

CONFIGS = [
    WPOConfig(),
    WPOConfig(symmetric=False),
    WPOConfig(significance_factor=3.0),
    WPOConfig(n_pairs=3, significance_factor=2.0, g_err_fraction=0.05, g_min_us=1.0),
    WPOConfig(n_pairs=1, n_bins=4),
    WPOConfig(use_max_kw=True, f_min=0.5, f_max=4.0, g_max_us=20.0),
]


def _aihwkit_params(cfg: WPOConfig) -> dict:
    """The dictionary aihwkit's ``denormalize`` reads (max|w| = 1)."""
    if cfg.n_pairs > 1 and cfg.significance_factor is None:
        f_lst = [1.0, None]
    else:
        f_lst = [(cfg.significance_factor or 1.0) ** k for k in range(cfg.n_pairs)]
    return {
        "f_lst": f_lst, "f_min": cfg.f_min, "f_max": cfg.f_max, "use_max_kw": cfg.use_max_kw,
        "g_max": cfg.g_max_us, "g_min": cfg.g_min_us, "symmetric": cfg.symmetric,
        "g_err": cfg.g_err_fraction * (cfg.g_max_us - cfg.g_min_us),
        "max_abs_weight_unitless": torch.tensor(1.0),
        "weights_discretized_unitless": torch.linspace(-1, 1, 2 * cfg.n_bins - 1),
    }  # fmt: skip


@pytest.mark.parametrize("cfg", CONFIGS, ids=range(len(CONFIGS)))
def test_decode_equals_aihwkit_denormalize(cfg):
    """Every hypercube point decodes to aihwkit's significance factors and conductances."""
    rng = np.random.default_rng(0)
    for _ in range(20):
        x = rng.random(n_dimensions(cfg))
        f_lst, g_lst = denormalize(x.copy(), _aihwkit_params(cfg))
        ours = decode(x, cfg)
        np.testing.assert_allclose(ours.significance, f_lst, rtol=1e-12)
        theirs = np.array(g_lst, dtype=np.float64).reshape(cfg.n_pairs, 2, -1)
        np.testing.assert_allclose(ours.g_pos_us, theirs[:, 0], atol=1e-5)
        np.testing.assert_allclose(ours.g_neg_us, theirs[:, 1], atol=1e-5)


@pytest.mark.parametrize("cfg", CONFIGS, ids=range(len(CONFIGS)))
def test_naive_programming_is_a_point_of_the_search_space(cfg):
    """``encode_naive`` decodes to the naive (NPair) targets at every grid weight."""
    f = cfg.significance_factor or 2.5
    tr = decode(encode_naive(cfg, f), cfg)
    naive = NPair(tr.significance, cfg.g_max_us, cfg.g_min_us).translate(tr.grid)
    np.testing.assert_allclose(tr.g_pos_us, naive.g_pos_us, atol=1e-5)
    np.testing.assert_allclose(tr.g_neg_us, naive.g_neg_us, atol=1e-5)


def test_resampling_equals_aihwkit_downsampling_up_to_its_shuffle():
    """Sorted, aihwkit's downsampled (or upsampled) distribution is ours."""
    w = np.random.default_rng(1).normal(0, 0.3, 2856).astype(np.float32)
    for n in (1000, 10240):
        theirs = downsample_weight_distribution(torch.from_numpy(w), torch.Size([n // 20, 20]))
        np.testing.assert_allclose(
            np.sort(theirs.numpy().ravel()), resample_weights(w, n), atol=1e-4
        )  # fmt: skip (torch interpolates in float32)


def test_optimiser_finds_the_significance_factor_of_least_error():
    """With the default PCM model, stage 1 picks the F of least error among those it scanned,
    well above 1, whose naive programming has a clearly lower time-averaged error than F = 1
    (and than F = f_min), also on chips it never saw; the result is never worse than either
    stage."""
    w = np.random.default_rng(2).laplace(0, 0.15, (64, 32))
    cfg = WPOConfig(baseline_significance_factor=1.0, sample_size=512, sample_seeds=1,
                    popsize=2, maxiter=3, n_bins=6)  # fmt: skip
    res = optimise(w, cfg)
    assert res.baseline == dual_pair(1.0)
    scan = dict(res.f_scan)  # naive programming's loss at each F tried
    assert scan[res.significance_factor] == res.naive_loss == min(scan.values())
    assert res.significance_factor > 1.5 and scan[cfg.f_min] > 2 * res.naive_loss
    assert res.loss == min(res.naive_loss, res.search_loss) < 0.8 * res.baseline_loss
    assert res.search_loss <= res.start_loss
    fs = [f for f, _ in res.f_scan]
    assert fs == sorted(fs) and fs[0] == cfg.f_min and fs[-1] == cfg.f_max
    held_out = compare_translations({"w": w}, {"naive": res.baseline, "wpo": res.translation},
                                    seeds=(100, 101))  # fmt: skip
    assert np.mean(held_out.reduction("wpo", "naive")) > 0.15


def test_search_beats_naive_programming_where_the_device_rewards_it():
    """On a device whose programming error falls with conductance (no drift or read noise),
    differential evolution lifts both devices of small weights up their G+ - G- line and
    ends far below naive programming and below its own first population."""
    chip = default_chip(device=DeviceModelConfig(
        prog_coeff=(1.2, -1.6, 0.7), read_noise_scale=0, drift_scale=0))  # fmt: skip
    w = np.random.default_rng(2).laplace(0, 0.15, (64, 32))
    cfg = WPOConfig(significance_factor=2.0, n_bins=6, sample_size=512, sample_seeds=1,
                    popsize=3, maxiter=10, times_s=(1.0,))  # fmt: skip
    res = optimise(w, cfg, chip)
    assert res.search_won and isinstance(res.translation, GridTranslation)
    assert res.search_loss < 0.5 * min(res.start_loss, res.naive_loss)
    small = np.abs(res.translation.grid) <= 0.2
    assert np.all(np.minimum(res.translation.g_pos_us, res.translation.g_neg_us)[0][small] > 2)
