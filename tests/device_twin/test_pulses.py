"""SET/RESET pulses follow the ExpStep rule with aihwkit's PCMPresetDevice parameters."""

import numpy as np
import pytest
from aihwkit.simulator.presets.devices import PCMPresetDevice
from scipy import stats

from device_twin import Array, Chip, ChipConfig, PulseKind
from device_twin.config import DeviceModelConfig, PulseModelConfig
from device_twin.pulses import hashed_normals

ROWS = COLS = 320  # 102,400 devices per array
N = ROWS * COLS
G_PER_W = 12.5


def _ideal_chip(seed: int = 0) -> Chip:
    """Devices with no programming noise, drift or read noise: pulses are all that changes g."""
    dev = DeviceModelConfig(prog_noise_scale=0.0, drift_scale=0.0, read_noise_scale=0.0)
    return Chip(ChipConfig(tile_rows=ROWS, tile_cols=COLS, seed=seed, device=dev))


def _rule_expected_step_us(w: float, n: int = 400_000, seed: int = 0) -> float:
    """E[one SET step] at state w by aihwkit's ExpStep update (update_once_complex_noise), over
    its device-to-device and cycle-to-cycle distributions, sampled here independently."""
    p = PCMPresetDevice()
    rng = np.random.default_rng(seed)
    gain = 1 + p.dw_min_dtod * rng.standard_normal(n)
    r = p.up_down_dtod * rng.standard_normal(n)
    scale_up = np.abs((gain + r) * p.dw_min)
    b_max = np.abs(p.w_max * (1 + p.w_max_dtod * rng.standard_normal(n)))
    # every device starts at w, even above its own bound: program-and-verify follows aihwkit's
    # programming statistics, which know nothing of the pulse model's bounds
    z = 2 * p.a * w / (b_max - 0.0) + p.b
    dw = np.maximum(1 - p.A_up * np.exp(p.gamma_up * z), 0) * scale_up
    std = p.dw_min_std * (np.abs(dw) + p.dw_min_std_add + p.dw_min_std_slope * abs(w))
    w1 = np.clip(w + dw + std * rng.standard_normal(n), 0.0, b_max)
    return float(np.mean(w1 - w)) * G_PER_W


def test_pulse_defaults_are_aihwkit_pcm_preset():
    """The pulse model's defaults are read from aihwkit's PCMPresetDevice."""
    p, cfg = PCMPresetDevice(), PulseModelConfig.from_aihwkit()
    for name in ("dw_min", "w_max", "a", "b", "gamma_up", "A_up", "dw_min_dtod", "dw_min_std",
                 "dw_min_std_add", "dw_min_std_slope", "reset", "reset_dtod", "w_max_dtod"):  # fmt: skip
        assert getattr(cfg, name) == pytest.approx(getattr(p, name)), name


def test_device_to_device_draws_are_standard_normal_and_fixed():
    """Hashed device-to-device normals are N(0, 1) (KS test) and the same on every call."""
    idx = np.arange(200_000)
    z = hashed_normals(np.uint64(12345), idx)
    assert stats.kstest(z, "norm").pvalue > 1e-3
    np.testing.assert_array_equal(z, hashed_normals(np.uint64(12345), idx))
    assert abs(np.corrcoef(z[:-1], z[1:])[0, 1]) < 0.01


# Near the top the mean step (~0.1 uS) is small beside the cycle-to-cycle noise (~1.7 uS), so
# that level needs 1M devices for a standard error well inside 5 %.
@pytest.mark.parametrize("g_us,side", [(2.5, 320), (5.0, 320), (10.0, 320), (15.0, 320),
                                       (20.0, 1024)])  # fmt: skip
def test_mean_single_pulse_step_matches_expstep_rule(g_us, side):
    """Over >= 102,400 devices, the mean step of one SET pulse is the rule's expectation within 5 %."""
    dev = DeviceModelConfig(prog_noise_scale=0.0, drift_scale=0.0, read_noise_scale=0.0)
    chip = Chip(ChipConfig(tile_rows=side, tile_cols=side, seed=int(g_us), device=dev))
    t = np.full((side, side), g_us, np.float32)
    chip.program(0, t, t, at_s=0.0)
    res = chip.apply_pulses(0, Array.POS, np.arange(side * side), PulseKind.SET, 1, at_s=1.0)
    step = res.writes.g_prog_us - g_us
    expected = _rule_expected_step_us(g_us / G_PER_W, n=4_000_000)
    assert abs(step.mean() / expected - 1) < 0.05


@pytest.mark.parametrize("g_us", [5.0, 15.0])
def test_cycle_to_cycle_spread_matches_parameter(g_us):
    """Step residuals divided by dw_min_std*(|dw| + add + slope*|w|) have unit spread (within 5 %)."""
    chip = _ideal_chip(seed=3)
    t = np.full((ROWS, COLS), g_us, np.float32)
    chip.program(0, t, t, at_s=0.0)
    idx = np.arange(N)
    res = chip.apply_pulses(0, Array.POS, idx, PulseKind.SET, 1, at_s=1.0)
    params = chip.pulse_model.device_params(0, np.zeros(N, np.int8), idx)
    w = g_us / G_PER_W
    dw = chip.pulse_model.set_step_mean_w(np.full(N, w), params)
    c = chip.config.pulse
    sigma = c.dw_min_std * (np.abs(dw) + c.dw_min_std_add + c.dw_min_std_slope * w)
    resid = (res.writes.g_prog_us / G_PER_W - w - dw) / sigma
    unclipped = res.writes.g_prog_us / G_PER_W < params.b_max - 1e-6
    assert abs(resid[unclipped].std() - 1) < 0.05
    assert abs(resid[unclipped].mean()) < 0.02


def test_conductance_saturates_below_upper_bound():
    """Many SET pulses level off below each device's own upper bound (~w_max*g_per_w), never above."""
    chip = _ideal_chip(seed=4)
    t = np.zeros((ROWS, COLS), np.float32)
    chip.program(0, t, t, at_s=0.0)
    idx = np.arange(N)
    g150 = chip.apply_pulses(0, Array.POS, idx, PulseKind.SET, 150, at_s=1.0).writes.g_prog_us
    g300 = chip.apply_pulses(0, Array.POS, idx, PulseKind.SET, 150, at_s=2.0).writes.g_prog_us
    bound = chip.pulse_model.saturation_us(
        chip.pulse_model.device_params(0, np.zeros(N, np.int8), idx)
    )
    assert np.all(g300 <= bound + 1e-4)
    assert abs(g300.mean() / g150.mean() - 1) < 0.01  # saturated: 150 more pulses change nothing
    # cycle-to-cycle noise near the top is ~10x the step, so devices wander below the bound
    assert 0.7 < np.mean(g300 / bound) < 0.95
    assert abs(bound.mean() / (2.0 * G_PER_W) - 1) < 0.01


def test_reset_gives_about_zero():
    """A RESET pulse leaves devices near 0 uS, whatever they held before."""
    chip = _ideal_chip(seed=5)
    t = np.full((ROWS, COLS), 20.0, np.float32)
    chip.program(0, t, t, at_s=0.0)
    g = chip.apply_pulses(0, Array.NEG, np.arange(N), PulseKind.RESET, 1, 1.0).writes.g_prog_us
    assert g.mean() < 0.5 and g.max() < 1.5
    assert abs(g.mean() - max(PCMPresetDevice().reset, 0) * G_PER_W) < 0.1


def test_a_write_restarts_drift():
    """After a pulse a device drifts from its new value and write time, with nu redrawn."""
    dev = DeviceModelConfig(read_noise_scale=0.0)
    chip = Chip(ChipConfig(tile_rows=64, tile_cols=64, seed=6, device=dev))
    t = np.full((64, 64), 10.0, np.float32)
    chip.program(0, t, t, at_s=0.0)
    nu_before = chip.nu[0, 0].copy()
    idx = np.arange(64 * 64)
    t_pulse = 86400.0
    res = chip.apply_pulses(0, Array.POS, idx, PulseKind.SET, 2, at_s=t_pulse)
    assert np.all(chip.t_write_s[0, 0] == t_pulse)
    assert not np.array_equal(chip.nu[0, 0], nu_before)
    # read right at the pulse time: no drift yet (the old write time no longer counts)
    g_now = chip.read_devices(0, Array.POS, None, t_pulse).values.reshape(-1)
    np.testing.assert_allclose(g_now, res.writes.g_prog_us, rtol=1e-6)
    # one hour later: drifted by the new nu from the new time
    g_1h = chip.read_devices(0, Array.POS, None, t_pulse + 3600.0).values.reshape(-1)
    expect = res.writes.g_prog_us * ((3600.0 + 20.0) / 20.0) ** (-res.writes.nu)
    np.testing.assert_allclose(g_1h, expect, rtol=1e-4)


def test_pulses_act_on_the_drifted_conductance():
    """A SET pulse starts from the conductance the device has drifted to, not from g_prog."""
    dev = DeviceModelConfig(read_noise_scale=0.0, prog_noise_scale=0.0)
    pulse = PulseModelConfig.from_aihwkit(dw_min_std=0.0, dw_min_dtod=0.0, up_down_dtod=0.0,
                                          w_max_dtod=0.0)  # fmt: skip
    chip = Chip(ChipConfig(tile_rows=8, tile_cols=8, seed=1, device=dev, pulse=pulse))
    t = np.full((8, 8), 20.0, np.float32)
    chip.program(0, t, t, at_s=0.0)
    g_drifted = chip.read_devices(0, Array.POS, None, 1e6).values.reshape(-1)
    g_after = chip.apply_pulses(0, Array.POS, np.arange(64), PulseKind.SET, 1, 1e6).writes.g_prog_us
    w = g_drifted / G_PER_W
    params = chip.pulse_model.device_params(0, np.zeros(64, np.int8), np.arange(64))
    expect = (w + chip.pulse_model.set_step_mean_w(w, params)) * G_PER_W
    np.testing.assert_allclose(g_after, expect, rtol=1e-5)


def test_mean_curve_from_reset_rises_and_flattens():
    """The mean pulse curve from RESET rises monotonically with diminishing steps (documented table)."""
    from device_twin.pulses import pulse_curve

    curve = pulse_curve(ChipConfig(tile_rows=64, tile_cols=64), [1, 5, 10, 20, 50], seed=0)
    means = [row["g_mean_us"] for row in curve]
    assert np.all(np.diff(means) > 0)
    steps = np.diff([0.0, *means]) / np.diff([0, 1, 5, 10, 20, 50])
    assert steps[0] > steps[-1] * 5
    assert means[-1] < 2.0 * G_PER_W * 1.1
