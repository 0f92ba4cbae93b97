"""Family ``pcm`` against aihwkit's PCMLikeNoiseModel: the same formula device by device for the
same normals, and its statistics over >= 100,000 devices per case."""

import math

import numpy as np
import pytest
import torch
from aihwkit.inference.noise import pcm as aihwkit_pcm
from aihwkit.inference.noise.pcm import PCMLikeNoiseModel
from scipy import integrate, stats

from device_twin import Array, Chip, ChipConfig
from device_twin.config import DeviceModelConfig, PulseModelConfig
from device_twin.families import make_family
from tests.device_twin.families.conftest import batch, white

G_MAX = 25.0
LEVELS_US = [3.125, 6.25, 12.5, 18.75, 25.0]
ROWS = COLS = 320  # 102,400 weights per array and level
YEAR_S = 365.25 * 86400.0


#: Device bounds far above g_max with no spread: the statistics tests see the noise model alone
#: (saturation at each device's own bound is tested in test_pulses).
NO_SATURATION = PulseModelConfig.from_aihwkit(w_max_dtod=0.0, g_per_w_us=25.0)


def _chip(seed: int = 0, **device) -> Chip:
    dev = DeviceModelConfig(pulse=NO_SATURATION, **device)
    return Chip(ChipConfig(tile_rows=ROWS, tile_cols=COLS, seed=seed, device=dev))


def _aihwkit_sigma_us(g_us: float) -> float:
    """sigma_P straight from aihwkit's function: the spread of a large sample it draws."""
    model = PCMLikeNoiseModel(g_max=G_MAX)
    torch.manual_seed(1234)
    g = torch.full((400_000,), g_us)
    return float(model.apply_programming_noise_to_conductance(g).std())


@pytest.mark.parametrize("level_us", LEVELS_US)
def test_programming_noise_std_matches_aihwkit(level_us):
    """Programmed conductances spread like aihwkit's programming noise (std within 5 %)."""
    chip = _chip(seed=int(level_us * 8))
    target = np.full((ROWS, COLS), level_us, np.float32)
    res = chip.program(0, target, target, at_s=0.0)
    g = res.writes.g_prog_us
    assert g.size >= 200_000
    c0, c1, c2 = 0.26348, 1.9650, -1.1731
    gh = level_us / G_MAX
    sigma_formula = c0 + c1 * gh + c2 * gh**2
    sigma_aihwkit = _aihwkit_sigma_us(level_us)
    assert abs(sigma_aihwkit / sigma_formula - 1) < 0.01  # our reading of aihwkit's formula
    assert abs(g.std() / sigma_aihwkit - 1) < 0.05
    assert abs(g.mean() - level_us) < 5 * sigma_formula / math.sqrt(g.size)


def _expected_remaining(level_us: float, t_s: float, t0_s: float = 20.0) -> float:
    """E[((t + t0)/t0)^-nu] for nu = |mu + sigma*xi| with aihwkit's mu_nu(g), sigma_nu(g)."""
    gh = max(level_us / G_MAX, 1e-7)
    mu = float(np.clip(-0.0155 * np.log(gh) + 0.0244, 0.049, 0.1))
    sig = float(np.clip(-0.0125 * np.log(gh) - 0.0059, 0.008, 0.045))
    log_f = math.log((t_s + t0_s) / t0_s)

    def integrand(z: float) -> float:
        return math.exp(-abs(mu + sig * z) * log_f) * stats.norm.pdf(z)

    val, _ = integrate.quad(integrand, -12, 12, points=[-mu / sig])
    return val


def test_drift_coefficients_follow_aihwkit_distribution():
    """nu of programmed devices has the mean and spread of aihwkit's generate_drift_coefficients."""
    chip = _chip(seed=7)
    target = np.full((ROWS, COLS), 12.5, np.float32)
    nu = chip.program(0, target, target, at_s=0.0).writes.nu
    torch.manual_seed(99)
    ref = PCMLikeNoiseModel(g_max=G_MAX).generate_drift_coefficients(torch.full((400_000,), 12.5))
    assert abs(nu.mean() / float(ref.mean()) - 1) < 0.01
    assert abs(nu.std() / float(ref.std()) - 1) < 0.03


@pytest.mark.parametrize("t_label,t_s", [("1 h", 3600.0), ("1 day", 86400.0), ("1 year", YEAR_S)])
@pytest.mark.parametrize("level_us", [3.125, 12.5, 25.0])
def test_mean_remaining_conductance_matches_expectation(t_label, t_s, level_us):
    """Mean g(t)/g_prog at 1 h, 1 day, 1 year is within 2 % of the expectation over aihwkit's nu."""
    chip = _chip(seed=11, read_noise_scale=0.0)
    target = np.full((ROWS, COLS), level_us, np.float32)
    g_prog = chip.program(0, target, target, at_s=0.0).writes.g_prog_us.reshape(2, ROWS, COLS)
    g_pos = chip.read_devices(0, Array.POS, None, t_s).values
    keep = g_prog[0] > 0  # clipped-at-zero devices carry no ratio
    ratio = (g_pos[keep] / g_prog[0][keep]).mean()
    assert abs(ratio / _expected_remaining(level_us, t_s) - 1) < 0.02


def test_drift_law_equals_aihwkit_apply_drift_noise():
    """Without read noise, the twin's drift equals aihwkit's apply_drift_noise_to_conductance."""
    chip = _chip(seed=3, read_noise_scale=0.0)
    rng = np.random.default_rng(0)
    target = rng.uniform(0, G_MAX, (ROWS, COLS)).astype(np.float32)
    chip.program(0, target, target, at_s=100.0)
    t_s = 100.0 + 86400.0
    ours = chip.read_devices(0, Array.POS, None, t_s).values
    model = PCMLikeNoiseModel(g_max=G_MAX, read_noise_scale=0.0)
    ref = model.apply_drift_noise_to_conductance(
        torch.from_numpy(chip.g_prog_us[0, 0]), torch.from_numpy(chip.nu[0, 0]), 86400.0
    ).numpy()
    np.testing.assert_allclose(ours, ref, rtol=2e-5, atol=1e-5)


@pytest.mark.parametrize("t_s", [60.0, 86400.0, YEAR_S])
@pytest.mark.parametrize("level_us", [6.25, 25.0])
def test_read_noise_std_matches_aihwkit(t_s, level_us):
    """Fresh read noise has aihwkit's 1/f standard deviation (within 10 %)."""
    chip = _chip(seed=5, prog_noise_scale=0.0, drift_scale=0.0)
    target = np.full((ROWS, COLS), level_us, np.float32)
    chip.program(0, target, target, at_s=0.0)
    g = chip.read_devices(0, Array.POS, None, t_s).values
    torch.manual_seed(5)
    model = PCMLikeNoiseModel(g_max=G_MAX, prog_noise_scale=0.0, drift_scale=0.0)
    g0 = torch.full((ROWS * COLS,), level_us)
    ref = model.apply_drift_noise_to_conductance(g0, torch.zeros_like(g0), t_s)
    assert abs(g.std() / float(ref.std()) - 1) < 0.10
    assert abs(g.mean() - level_us) < 0.01 * level_us


def test_reads_at_one_instant_share_their_noise_and_leave_state():
    """Two reads at one instant see one 1/f realisation, a read later another; no read changes state."""
    chip = _chip(seed=2)
    target = np.full((ROWS, COLS), 10.0, np.float32)
    chip.program(0, target, target, at_s=0.0)
    before = chip.g_prog_us.copy(), chip.nu.copy(), chip.t_write_s.copy(), chip.write_count.copy()
    a = chip.read_devices(0, Array.POS, None, 50.0).values
    b = chip.read_devices(0, Array.POS, None, 50.0).values
    c = chip.read_devices(0, Array.POS, None, 3600.0).values
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    after = chip.g_prog_us, chip.nu, chip.t_write_s, chip.write_count
    for x, y in zip(before, after, strict=True):
        np.testing.assert_array_equal(x, y)


def test_same_seed_same_results():
    """Two chips with the same seed and calls give bit-identical results; another seed differs."""

    def run(seed: int) -> np.ndarray:
        chip = Chip(ChipConfig(tile_rows=32, tile_cols=32, seed=seed))
        t = np.full((32, 32), 12.0, np.float32)
        chip.program(0, t, t, 0.0)
        return chip.read_devices(0, Array.NEG, None, 3600.0).values

    np.testing.assert_array_equal(run(4), run(4))
    assert not np.array_equal(run(4), run(5))


def test_programming_equals_aihwkit_for_the_same_normals(aihwkit_draws):
    """g_prog and nu equal aihwkit's apply_programming_noise / generate_drift_coefficients
    device by device when both get the same normals."""
    rng = np.random.default_rng(1)
    n = 200_000
    g_t = rng.uniform(0, G_MAX, n).astype(np.float32)
    g_t[:50] = 0.0
    z1, z2 = rng.standard_normal((2, n)).astype(np.float32)
    fam = make_family(DeviceModelConfig(prog_noise_scale=1.3, drift_scale=0.8), G_MAX)
    g_prog, nu = fam.programmed(g_t, z1, z2)
    aihwkit_draws(aihwkit_pcm, z1, z2)
    model = PCMLikeNoiseModel(g_max=G_MAX, prog_noise_scale=1.3, drift_scale=0.8)
    ref_g = model.apply_programming_noise_to_conductance(torch.from_numpy(g_t)).numpy()
    ref_nu = model.generate_drift_coefficients(torch.from_numpy(g_t)).numpy()
    np.testing.assert_allclose(g_prog, ref_g, rtol=1e-5, atol=2e-5)
    np.testing.assert_allclose(nu, ref_nu, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("age_s", [0.0, 1.0, 3600.0, YEAR_S])
def test_read_equals_aihwkit_for_the_same_normals(aihwkit_draws, age_s):
    """A read at an age equals aihwkit's apply_drift_noise_to_conductance for the same normals."""
    rng = np.random.default_rng(8)
    n = 200_000
    g_prog = rng.uniform(0, 30, n).astype(np.float32)
    g_prog[:100] = 0.0
    nu = rng.uniform(0, 0.12, n).astype(np.float32)
    xi = rng.standard_normal(n).astype(np.float32)
    fam = make_family(DeviceModelConfig(read_noise_scale=0.7), G_MAX)
    ours = fam.read(batch(g_prog, nu, age_s), white(xi)).numpy()
    aihwkit_draws(aihwkit_pcm, xi)
    model = PCMLikeNoiseModel(g_max=G_MAX, read_noise_scale=0.7)
    ref = model.apply_drift_noise_to_conductance(
        torch.from_numpy(g_prog), torch.from_numpy(nu), age_s
    ).numpy()
    np.testing.assert_allclose(ours, ref, rtol=2e-5, atol=2e-5)
