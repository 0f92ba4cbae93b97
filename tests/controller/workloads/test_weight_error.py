"""The weight-error metric: NMSE of drift-compensated weights on the twin's device physics."""

from __future__ import annotations

import numpy as np
import pytest

from controller.workloads.pairs import SinglePair, dual_pair
from controller.workloads.weight_error import compare_translations, default_chip, network_nmse
from controller.workloads.wpo_config import REPORT_TIMES_S, YEAR_S
from device_twin.config import DeviceModelConfig, PulseModelConfig

G_MAX = 25.0
#: Every device's saturation bound far above g_max (50 uS): these tests see the noise model alone.
NO_SATURATION = PulseModelConfig.from_aihwkit(w_max_dtod=0.0, g_per_w_us=25.0)


def _layers(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {"a": rng.normal(0, 0.3, (128, 40)), "b": rng.laplace(0, 0.1, (64, 10))}


def test_without_noise_or_drift_the_error_is_zero():
    """No programming noise, read noise or drift: every translation reads back its weights."""
    chip = default_chip(device=DeviceModelConfig(prog_noise_scale=0, read_noise_scale=0,
                                                 drift_scale=0, pulse=NO_SATURATION))  # fmt: skip
    for tr in (SinglePair(), dual_pair(2.0)):
        nmse = network_nmse(_layers(), tr, REPORT_TIMES_S, chip, seed=0)
        assert np.all(nmse < 1e-12)


def test_programming_noise_alone_gives_aihwkit_sigma():
    """Programming noise only: weights all at max|w| on one pair read G+ = g_max + sigma_P(g_max)
    xi and G- = max(sigma_P(0) xi', 0) (aihwkit clamps at 0 uS), so their NMSE is
    (sigma_P(g_max)^2 + sigma_P(0)^2 / 2) / g_max^2: checked on 200,000 weights within 2 %."""
    device = DeviceModelConfig(read_noise_scale=0, drift_scale=0, pulse=NO_SATURATION)
    w = {"ones": np.ones((1000, 200))}
    nmse = network_nmse(w, SinglePair(), (1.0, YEAR_S), default_chip(device=device), seed=3)
    # aihwkit's sigma_P(g) = c0 + c1 g/g_max + c2 (g/g_max)^2, at g_max and at 0 uS
    s_top, s_zero = sum(device.prog_coeff), device.prog_coeff[0]
    expected = (s_top**2 + s_zero**2 / 2) / G_MAX**2
    # the estimate's relative standard error is about sqrt(2/200,000) = 0.3 %
    assert nmse == pytest.approx([expected, expected], rel=0.02)
    assert nmse[0] == nmse[1]  # no drift, no read noise: the same at every time


def test_same_seed_same_draws_and_other_seeds_differ():
    """Common random numbers: a seed fixes the draws; another seed gives another chip."""
    chip = default_chip()
    a = network_nmse(_layers(), dual_pair(2.0), REPORT_TIMES_S, chip, seed=5)
    b = network_nmse(_layers(), dual_pair(2.0), REPORT_TIMES_S, chip, seed=5)
    c = network_nmse(_layers(), dual_pair(2.0), REPORT_TIMES_S, chip, seed=6)
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c, rtol=1e-6, atol=0)


def test_error_grows_with_time_and_dual_pair_beats_single_pair():
    """With the default PCM model the error grows from 1 s to a year, and naive dual-pair
    programming (F = 2) halves it or better against a single pair at every time."""
    table = compare_translations(_layers(1), {"single": SinglePair(), "dual": dual_pair(2.0)},
                                 seeds=(0, 1))  # fmt: skip
    for name in ("single", "dual"):
        assert np.all(np.diff(table.mean(name)) > 0)
    assert np.all(table.reduction("dual", "single") > 0.5)
