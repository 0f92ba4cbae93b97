"""Device statistics of the twin against aihwkit's PCMLikeNoiseModel (>= 100,000 devices per case)."""

import math

import numpy as np
import pytest
import torch
from aihwkit.inference.noise.pcm import PCMLikeNoiseModel
from scipy import integrate, stats

from device_twin import Array, Chip, ChipConfig
from device_twin.config import DeviceModelConfig

G_MAX = 25.0
LEVELS_US = [3.125, 6.25, 12.5, 18.75, 25.0]
ROWS = COLS = 320  # 102,400 weights per array and level
YEAR_S = 365.25 * 86400.0


def _chip(seed: int = 0, **device) -> Chip:
    return Chip(
        ChipConfig(tile_rows=ROWS, tile_cols=COLS, seed=seed, device=DeviceModelConfig(**device))
    )


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


def test_reads_draw_fresh_noise_and_leave_state():
    """Two reads at the same time differ (fresh noise) and neither changes device state."""
    chip = _chip(seed=2)
    target = np.full((ROWS, COLS), 10.0, np.float32)
    chip.program(0, target, target, at_s=0.0)
    before = chip.g_prog_us.copy(), chip.nu.copy(), chip.t_write_s.copy()
    a = chip.read_devices(0, Array.POS, None, 50.0).values
    b = chip.read_devices(0, Array.POS, None, 50.0).values
    assert not np.array_equal(a, b)
    for x, y in zip(before, (chip.g_prog_us, chip.nu, chip.t_write_s), strict=True):
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


def test_verify_iterations_grow_with_target_and_respect_limit():
    """Program-and-verify needs more iterations for higher targets, none for 0, at most max_iterations."""
    chip = _chip()
    its = chip.physics.verify_iterations(np.array([0.0, 1.0, 5.0, 12.5, 25.0]))
    assert its[0] == 0
    assert np.all(np.diff(its[1:]) >= 0) and its[-1] > its[1]
    assert its.max() <= chip.config.program_verify.max_iterations


def test_read_equals_aihwkit_formula_device_by_device():
    """With the same normal draws, a read equals aihwkit's drift + 1/f formula for every device."""
    from device_twin.physics import PCMPhysics, torch_generator

    phys = PCMPhysics(DeviceModelConfig(), G_MAX)
    rng = np.random.default_rng(8)
    n = 200_000
    g_prog = torch.from_numpy(rng.uniform(0, 30, n).astype(np.float32))
    g_prog[:100] = 0.0
    nu = torch.from_numpy(rng.uniform(0, 0.12, n).astype(np.float32))
    age = torch.from_numpy(rng.uniform(0, YEAR_S, n).astype(np.float32))
    ours = phys.read(g_prog, nu, age.clone(), torch_generator(77))
    xi = torch.randn(n, generator=torch_generator(77))
    t = age.double() + 20.0
    drift = g_prog.double() * (t / 20.0) ** (-nu.double())
    q_s = torch.clamp(0.0088 / torch.clamp((g_prog.double() / G_MAX) ** 0.65, min=1e-3), max=0.2)
    sig = q_s * torch.sqrt(torch.log((t + 250e-9) / (2 * 250e-9)))
    ref = torch.clamp(drift + drift.abs() * sig * xi.double(), min=0.0)
    np.testing.assert_allclose(ours.numpy(), ref.numpy(), rtol=2e-5, atol=2e-5)
