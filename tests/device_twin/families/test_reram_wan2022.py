"""Family ``reram_wan2022`` against aihwkit's ReRamWan2022NoiseModel: the same programming
formula for the same normals, aihwkit's distribution at its three characterised times
(1 s, 1 day, 2 days) over >= 100,000 devices, and the stated rule between and beyond them."""

import math

import numpy as np
import pytest
import torch
from aihwkit.inference.noise import reram as aihwkit_reram
from aihwkit.inference.noise.reram import ReRamWan2022NoiseModel

from device_twin import Array, Chip, ChipConfig
from device_twin.config import PulseModelConfig
from device_twin.families import ReRamWan2022DeviceConfig, make_family
from tests.device_twin.families.conftest import N_DEVICES, batch, white

G_MAX = 40.0
DAY_S = 86400.0
SIDE = 320  # 102,400 devices per array, 204,800 per case


def test_programming_equals_aihwkit_for_the_same_normals(aihwkit_draws):
    """g_prog equals aihwkit's apply_programming_noise_to_conductance (the 1-s fit) device by
    device; the state parameter is the target, as aihwkit's generate_drift_coefficients."""
    rng = np.random.default_rng(0)
    g_t = rng.uniform(0, G_MAX, N_DEVICES).astype(np.float32)
    z1, z2 = rng.standard_normal((2, N_DEVICES)).astype(np.float32)
    fam = make_family(ReRamWan2022DeviceConfig(noise_scale=1.5), G_MAX)
    g_prog, param = fam.programmed(g_t, z1, z2)
    aihwkit_draws(aihwkit_reram, z1)
    model = ReRamWan2022NoiseModel(g_max=G_MAX, noise_scale=1.5)
    ref = model.apply_programming_noise_to_conductance(torch.from_numpy(g_t)).numpy()
    np.testing.assert_allclose(g_prog, ref, rtol=1e-5, atol=2e-5)
    np.testing.assert_array_equal(param, model.generate_drift_coefficients(torch.from_numpy(g_t)))


def _chip(seed: int, **device) -> Chip:
    # bounds far above g_max: these tests see the noise model alone (saturation: test_pulses)
    pulse = PulseModelConfig.from_aihwkit("ReRamESPresetDevice", reset=-1.0, w_max_dtod=0.0,
                                          g_per_w_us=G_MAX)  # fmt: skip
    dev = ReRamWan2022DeviceConfig(read_noise_g_max_fraction=0.0, pulse=pulse, **device)
    return Chip(ChipConfig(tile_rows=SIDE, tile_cols=SIDE, seed=seed, device=dev))


def _deviation(chip: Chip, g_t: float, at_s: float) -> np.ndarray:
    return chip.read_devices(0, Array.BOTH, None, at_s).values.reshape(-1) - g_t


@pytest.mark.parametrize("g_t", [4.0, 20.0, 36.0])
@pytest.mark.parametrize("t_s", [1.0, DAY_S, 2 * DAY_S])
def test_distribution_at_the_characterised_times_is_aihwkits(g_t, t_s):
    """Reads 1 s, 1 day, 2 days after programming spread like aihwkit's apply_drift_noise at
    that time (mean within 4 standard errors, std within 3 %)."""
    chip = _chip(seed=int(g_t))
    target = np.full((SIDE, SIDE), g_t, np.float32)
    chip.program(0, target, target, at_s=0.0)
    d = _deviation(chip, g_t, t_s)
    model = ReRamWan2022NoiseModel(g_max=G_MAX)
    torch.manual_seed(4)
    ref = model.apply_drift_noise_to_conductance(None, torch.full((400_000,), g_t), t_s) - g_t
    assert abs(d.std() / float(ref.std()) - 1) < 0.03
    assert abs(d.mean() - float(ref.mean())) < 4 * float(ref.std()) / math.sqrt(d.size) + 0.01


def test_rule_between_and_beyond_the_characterised_times():
    """sigma is linear in ln(t) between 1 s and 1 day (tested at 5 minutes and 12 h), held at its
    1-s value before 1 s and its 2-day value after (a month); a device keeps its programmed
    deviation, so reads at 1 s and 1 day correlate as sigma_1s/sigma_1d when spread grows."""
    g_t = 20.0
    chip = _chip(seed=7)
    target = np.full((SIDE, SIDE), g_t, np.float32)
    chip.program(0, target, target, at_s=0.0)
    fam = chip.family
    s1, sd, s2 = fam.sigma_at_knots_us(np.array([g_t]))[:, 0]
    d = {t: _deviation(chip, g_t, t) for t in (0.25, 1.0, 300.0, 12 * 3600.0, DAY_S, 30 * DAY_S)}
    np.testing.assert_allclose(d[0.25], d[1.0], atol=1e-5)  # before 1 s: the 1-s state
    for t in (300.0, 12 * 3600.0):
        f = math.log(t) / math.log(DAY_S)
        assert abs(d[t].std() / (s1 + f * (sd - s1)) - 1) < 0.03
    assert abs(d[30 * DAY_S].std() / s2 - 1) < 0.03
    expect = min(s1, sd) / max(s1, sd)
    assert abs(np.corrcoef(d[1.0], d[DAY_S])[0, 1] - expect) < 0.02


def test_short_term_read_noise_is_one_percent_of_g_max_and_correlated_in_time():
    """The read noise aihwkit advises (1 % of g_max) has that spread, and reads 1 us apart
    share most of it while reads an hour apart share none."""
    g_t = 20.0
    dev = ReRamWan2022DeviceConfig(noise_scale=0.0)
    chip = Chip(ChipConfig(tile_rows=SIDE, tile_cols=SIDE, seed=3, device=dev))
    target = np.full((SIDE, SIDE), g_t, np.float32)
    chip.program(0, target, target, at_s=0.0)
    a = _deviation(chip, g_t, 5000.0)
    b = _deviation(chip, g_t, 5000.0 + 1e-6)
    c = _deviation(chip, g_t, 5000.0 + 3600.0)
    assert abs(a.std() / (0.01 * G_MAX) - 1) < 0.03
    assert np.corrcoef(a, b)[0, 1] > 0.8
    assert abs(np.corrcoef(a, c)[0, 1]) < 0.02


def test_default_range_and_read_through_the_family_equal_the_rule():
    """The chip's g_max defaults to the fit's 40 uS; a batch read at 1 day equals the rule's
    formula for given normals."""
    assert ChipConfig(device={"family": "reram_wan2022"}).g_max_us == 40.0
    fam = make_family(ReRamWan2022DeviceConfig(read_noise_g_max_fraction=0.0), G_MAX)
    g_t = np.array([10.0, 30.0], np.float32)
    g_prog = g_t + np.array([0.5, -0.2], np.float32)
    xi_r = np.array([1.5, -0.7], np.float32)
    got = fam.read(batch(g_prog, g_t, DAY_S), white(np.zeros(2), xi_r)).numpy()
    s1, sd = fam.sigma_at_knots_us(g_t)[:2]
    expect = (
        g_t + (g_prog - g_t) * np.minimum(1, sd / s1) + np.sqrt(np.maximum(sd**2 - s1**2, 0)) * xi_r
    )
    np.testing.assert_allclose(got, expect, rtol=1e-5)
