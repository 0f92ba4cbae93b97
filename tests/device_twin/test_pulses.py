"""SET/RESET pulses: the ExpStep rule with aihwkit's PCMPresetDevice parameters, saturation at
each device's own bound, and what programming costs in pulses."""

import numpy as np
import pytest
from aihwkit.simulator.presets.devices import PCMPresetDevice
from scipy import stats

from device_twin import Array, Chip, ChipConfig, PulseKind
from device_twin.config import DeviceModelConfig, PulseModelConfig

ROWS = COLS = 320  # 102,400 devices per array
N = ROWS * COLS
G_PER_W = 12.5


def _ideal_chip(seed: int = 0, **device) -> Chip:
    """Devices with no programming noise, drift or read noise: pulses are all that changes g."""
    dev = DeviceModelConfig(prog_noise_scale=0.0, drift_scale=0.0, read_noise_scale=0.0, **device)
    return Chip(ChipConfig(tile_rows=ROWS, tile_cols=COLS, seed=seed, device=dev))


def _rule_expected_step_us(w: float, n: int = 400_000, seed: int = 0) -> float:
    """E[one SET step] at state w by the ExpStep rule (aihwkit's update_once_complex_noise):
    mean dw and spread sd as aihwkit's, over its device-to-device and cycle-to-cycle
    distributions sampled here independently, with the twin's two changes: the step is drawn
    log-normal (never negative) and stops at the device's own bound. Devices whose bound lies
    below w are not at w (no write leaves one above its bound), so they are left out."""
    p = PCMPresetDevice()
    rng = np.random.default_rng(seed)
    gain = 1 + p.dw_min_dtod * rng.standard_normal(n)
    r = p.up_down_dtod * rng.standard_normal(n)
    scale_up = np.abs((gain + r) * p.dw_min)
    b_max = np.abs(p.w_max * (1 + p.w_max_dtod * rng.standard_normal(n)))
    keep = b_max >= w
    scale_up, b_max = scale_up[keep], b_max[keep]
    z = 2 * p.a * w / (b_max - 0.0) + p.b
    dw = np.maximum(1 - p.A_up * np.exp(p.gamma_up * z), 0) * scale_up
    std = p.dw_min_std * (np.abs(dw) + p.dw_min_std_add + p.dw_min_std_slope * abs(w))
    s2 = np.log1p((std / dw) ** 2)
    step = dw * np.exp(np.sqrt(s2) * rng.standard_normal(dw.size) - s2 / 2)
    w1 = np.minimum(w + step, b_max)
    return float(np.mean(w1 - w)) * G_PER_W


@pytest.mark.parametrize("preset", ["PCMPresetDevice", "ReRamESPresetDevice"])
def test_pulse_presets_are_aihwkits(preset):
    """The ExpStep parameters written out in the core are those of aihwkit's preset devices."""
    from aihwkit.simulator.presets import devices

    from device_twin.families.base import _EXPSTEP_FIELDS, AIHWKIT_PRESETS

    p, cfg = getattr(devices, preset)(), PulseModelConfig.from_aihwkit(preset)
    for name in _EXPSTEP_FIELDS:
        assert getattr(cfg, name) == pytest.approx(float(getattr(p, name))), name
        assert AIHWKIT_PRESETS[preset][name] == pytest.approx(float(getattr(p, name))), name


def test_a_chip_config_loads_without_torch_or_aihwkit():
    """Reading chip configs of every family (what `pcm-twin validate` does) imports neither
    torch nor aihwkit; the chip itself loads them on first use."""
    import subprocess
    import sys

    code = ("import sys, device_twin; from device_twin.config import ChipConfig; "
            "[ChipConfig(device={'family': f}) for f in "
            "('pcm', 'pcm_hermes', 'reram_wan2022', 'reram_cmo')]; "
            "print('torch' in sys.modules, 'aihwkit' in sys.modules)")  # fmt: skip
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"], out.stderr


def test_device_to_device_parameters_follow_aihwkit_spread_and_are_fixed():
    """Hashed device parameters have aihwkit's spreads (bound: w_max*(1 + 0.1*xi)) and never change."""
    chip = _ideal_chip()
    idx = np.arange(N)
    arr = np.zeros(N, np.int8)
    a = chip.pulse_model.device_params(0, arr, idx)
    b = chip.pulse_model.device_params(0, arr, idx)
    np.testing.assert_array_equal(a.b_max, b.b_max)
    p = PCMPresetDevice()
    z = (a.b_max / p.w_max - 1) / p.w_max_dtod
    assert stats.kstest(z, "norm").pvalue > 1e-3
    assert abs(np.std(a.scale_up / p.dw_min) / np.hypot(p.dw_min_dtod, p.up_down_dtod) - 1) < 0.02
    other = chip.pulse_model.device_params(1, arr, idx)  # another tile: other devices
    assert abs(np.corrcoef(a.b_max, other.b_max)[0, 1]) < 0.02


# Near the top the mean step (~0.1 uS) is small beside the cycle-to-cycle noise (~1.7 uS), so
# that level needs 1M devices for a standard error well inside 5 %.
@pytest.mark.parametrize("g_us,side", [(2.5, 320), (5.0, 320), (10.0, 320), (15.0, 320),
                                       (20.0, 1024)])  # fmt: skip
def test_mean_single_pulse_step_matches_expstep_rule(g_us, side):
    """Over >= 102,400 devices, the mean step of one SET pulse is the rule's expectation within 5 %."""
    dev = DeviceModelConfig(prog_noise_scale=0.0, drift_scale=0.0, read_noise_scale=0.0)
    chip = Chip(ChipConfig(tile_rows=side, tile_cols=side, seed=int(g_us), device=dev))
    t = np.full((side, side), g_us, np.float32)
    prog = chip.program(0, t, t, at_s=0.0)
    at_target = np.ones(side * side, bool)
    at_target[prog.failed[prog.failed < side * side]] = False
    res = chip.apply_pulses(0, Array.POS, np.arange(side * side), PulseKind.SET, 1, at_s=1.0)
    step = (res.writes.g_prog_us - prog.writes.g_prog_us[: side * side])[at_target]
    expected = _rule_expected_step_us(g_us / G_PER_W, n=4_000_000)
    assert abs(step.mean() / expected - 1) < 0.05


@pytest.mark.parametrize("g_us", [5.0, 15.0])
def test_cycle_to_cycle_noise_has_aihwkits_mean_and_spread_and_never_goes_down(g_us):
    """One SET step is log-normal with the ExpStep mean dw and spread sd (aihwkit's), stopped
    at the device's bound: the unclipped steps' log-transform is standard normal (KS), the
    share stopped at the bound is the log-normal's tail beyond it."""
    chip = _ideal_chip(seed=3)
    t = np.full((ROWS, COLS), g_us, np.float32)
    prog = chip.program(0, t, t, at_s=0.0)
    idx = np.arange(N)
    g0 = prog.writes.g_prog_us[:N].astype(np.float64)
    res = chip.apply_pulses(0, Array.POS, idx, PulseKind.SET, 1, at_s=1.0)
    pm = chip.pulse_model
    params = pm.device_params(0, np.zeros(N, np.int8), idx)
    w = g0 / G_PER_W
    dw = pm.set_step_mean_w(w, params.scale_up, params.b_max, params.b_min)
    s = np.sqrt(np.log1p((pm.set_step_sigma_w(w, dw) / dw) ** 2))
    g1 = res.writes.g_prog_us.astype(np.float64)
    bound_us = pm.bound_us(0, np.zeros(N, np.int8), idx)
    assert np.all(g1 >= g0) and np.all(g1 <= bound_us)
    step = g1 / G_PER_W - w
    capped = bound_us - g1 < 1e-5
    room = np.maximum(params.b_max - w, 1e-300)  # devices already at their bound: no room
    tail = stats.norm.sf((np.log(room / dw) + s**2 / 2) / s)
    assert abs(capped.mean() - tail.mean()) < 5 * np.sqrt(tail.mean() / N) + 1e-3
    # float32 state loses steps below ~1e-7 (weight units): below -3.9 sigma, left out
    ok = ~capped & (step > 1e-6)
    z = (np.log(step[ok] / dw[ok]) + s[ok] ** 2 / 2) / s[ok]
    assert ok.sum() > 90_000
    assert stats.kstest(z, "norm").pvalue > 1e-3


def test_conductance_saturates_below_upper_bound():
    """Many SET pulses take every device to its own upper bound (~w_max*g_per_w), never above."""
    chip = _ideal_chip(seed=4)
    t = np.zeros((ROWS, COLS), np.float32)
    chip.program(0, t, t, at_s=0.0)
    idx = np.arange(N)
    g150 = chip.apply_pulses(0, Array.POS, idx, PulseKind.SET, 150, at_s=1.0).writes.g_prog_us
    g300 = chip.apply_pulses(0, Array.POS, idx, PulseKind.SET, 150, at_s=2.0).writes.g_prog_us
    bound = chip.pulse_model.bound_us(0, np.zeros(N, np.int8), idx)
    assert np.all(g300 <= bound + 1e-4)
    assert abs(g300.mean() / g150.mean() - 1) < 0.01  # saturated: 150 more pulses change nothing
    # steps never go down, so the cycle noise near the top only ratchets devices up to the bound
    assert np.mean(g300 / bound) > 0.99
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
    dev = dev.model_copy(update={"pulse": pulse})
    chip = Chip(ChipConfig(tile_rows=8, tile_cols=8, seed=1, device=dev))
    t = np.full((8, 8), 20.0, np.float32)
    chip.program(0, t, t, at_s=0.0)
    g_drifted = chip.read_devices(0, Array.POS, None, 1e6).values.reshape(-1)
    g_after = chip.apply_pulses(0, Array.POS, np.arange(64), PulseKind.SET, 1, 1e6).writes.g_prog_us
    w = g_drifted / G_PER_W
    params = chip.pulse_model.device_params(0, np.zeros(64, np.int8), np.arange(64))
    step = chip.pulse_model.set_step_mean_w(w, params.scale_up, params.b_max, params.b_min)
    expect = (w + step) * G_PER_W
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


@pytest.mark.parametrize("g_us", [12.5, 20.0, 25.0])
def test_no_write_puts_a_device_above_its_own_bound(g_us):
    """Programming to targets near g_max ends at or below each device's own bound; those whose
    bound is more than sigma_P below the target are reported failed and sit at their bound."""
    chip = Chip(ChipConfig(tile_rows=ROWS, tile_cols=COLS, seed=9))
    t = np.full((ROWS, COLS), g_us, np.float32)
    res = chip.program(0, t, t, at_s=0.0)
    arr = np.repeat(np.arange(2, dtype=np.int8), N)
    idx = np.tile(np.arange(N), 2)
    bound = chip.pulse_model.bound_us(0, arr, idx)
    g = res.writes.g_prog_us
    assert np.all(g <= bound)
    sigma = chip.family.programming_sigma_us(np.array([g_us]))[0]
    expect_failed = np.flatnonzero(bound < g_us - sigma)
    np.testing.assert_array_equal(res.failed, expect_failed)
    np.testing.assert_array_equal(g[expect_failed], bound[expect_failed])
    # the pulse model's bounds are ~25 uS with 10 % spread: at 25 uS a third of devices fail
    if g_us == 25.0:
        assert 0.25 < res.failed.size / (2 * N) < 0.42
    # and a SET pulse then never lowers a device, nor lifts it above its bound
    g_before = _noise_free(chip, 1.0)
    pulsed = chip.apply_pulses(0, Array.BOTH, np.arange(2 * N), PulseKind.SET, 1, 1.0)
    assert np.all(pulsed.writes.g_prog_us >= g_before)
    assert np.all(pulsed.writes.g_prog_us <= bound)


def _noise_free(chip: Chip, at_s: float) -> np.ndarray:
    """The drifted state of both arrays of tile 0, without read noise (what a pulse acts on)."""
    from device_twin.reads import read_array

    return np.concatenate([read_array(chip, 0, a, at_s, False).numpy().reshape(-1) for a in (0, 1)])


def test_a_set_pulse_never_lowers_a_device():
    """Over 204,800 devices at every level, one SET pulse never lowers the drifted conductance."""
    chip = Chip(ChipConfig(tile_rows=ROWS, tile_cols=COLS, seed=10))
    rng = np.random.default_rng(0)
    t = rng.uniform(0, 25, (2, ROWS, COLS)).astype(np.float32)
    chip.program(0, t[0], t[1], at_s=0.0)
    g0 = _noise_free(chip, 3600.0)
    g1 = chip.apply_pulses(0, Array.BOTH, np.arange(2 * N), PulseKind.SET, 1, 3600.0)
    assert np.all(g1.writes.g_prog_us >= g0)


def test_program_cost_follows_the_nominal_pulse_response():
    """program charges the nominal SET pulses from RESET to each target and one verify read per
    pulse, at most max_iterations reads; devices that cannot reach use the whole budget."""
    chip = Chip(ChipConfig(tile_rows=4, tile_cols=4, seed=0))
    levels = chip.pulse_model.nominal_levels_us()
    assert levels[0] == pytest.approx(PCMPresetDevice().reset * G_PER_W)
    assert np.all(np.diff(levels) > 0) and levels[-1] == pytest.approx(2.0 * G_PER_W)
    n12 = int(np.searchsorted(levels, 12.5))
    n25 = int(np.searchsorted(levels, 25.0 - 1e-6))
    assert 10 < n12 < 20 and 60 < n25 < 90  # ~50 pulses average 19.5 uS: the table in the README
    pulses, reads = chip.pulse_model.program_cost(
        np.array([0.0, 12.5, 25.0, 25.0]), np.array([False, False, False, True]), 30
    )
    np.testing.assert_array_equal(pulses, [0, n12, n25, n25])
    np.testing.assert_array_equal(reads, [0, n12, 30, 30])
    t = np.full((4, 4), 12.5, np.float32)
    res = chip.program(0, t, np.zeros((4, 4), np.float32), 0.0)
    assert res.pulses == 32 + 16 * n12 and res.iterations == 16 * n12


def test_nominal_pulse_counts_match_a_binary_search_at_and_between_the_levels():
    """The grid look-up of nominal pulse counts gives numpy's binary search's count for
    targets below, on, just around and between the nominal levels, and beyond the last."""
    from device_twin.pulses import PulseModel

    pm = PulseModel(PulseModelConfig.from_aihwkit(), seed=1, g_max_us=25.0)
    levels = pm.nominal_levels_us()
    rng = np.random.default_rng(0)
    near = np.concatenate([levels + d for d in (-2e-6, -1e-6, -1e-9, 0.0, 1e-9, 1e-6, 2e-6)])
    targets = np.concatenate([rng.uniform(-1.0, 30.0, 20_000), near]).astype(np.float32)
    expected = np.searchsorted(levels, targets.astype(np.float64) - 1e-6, side="left")
    expected = np.minimum(expected, levels.size - 1)
    assert pm._level_grid() is not None
    assert np.array_equal(pm.nominal_pulses_us(targets), expected)
