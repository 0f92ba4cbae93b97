"""1/f read noise correlated in time: aihwkit's variance at every age, reads microseconds apart
sharing almost all of it, reads far apart sharing none (>= 100,000 devices per case)."""

import math

import numpy as np
import pytest
import torch
from scipy.special import sici

from device_twin import Array, Chip, ChipConfig
from device_twin.flicker import BLOCK, BUCKET, LEVELS, RATIO, FlickerNoise
from device_twin.reads import read_array

T_READ = 250e-9
T0 = 20.0
N = 1 << 17  # 131,072 devices
YEAR_S = 365.25 * 86400.0


def _band(age_s: float) -> float:
    return math.log((age_s + T0 + T_READ) / (2 * T_READ))


@pytest.mark.parametrize("age_s", [0.0, 60.0, 3600.0, 86400.0, 30 * 86400.0, YEAR_S, 1e11])
def test_variance_is_aihwkits_at_every_age(age_s):
    """Var S = L(age) = ln((age + t0 + t_read)/(2 t_read)) over 131,072 devices (within 2 %)."""
    f = FlickerNoise(seed=1, t_read_s=T_READ, devices_per_array=N)
    band = torch.full((N,), _band(age_s))
    s = f.sample(tile=0, at_s=5e7 + age_s, band=band, arrays=0)
    assert abs(float(s.var()) / _band(age_s) - 1) < 0.02
    assert abs(float(s.mean())) < 5 * math.sqrt(_band(age_s) / N)


def test_devices_of_different_ages_in_one_read_each_get_their_variance():
    """In one read, devices of four ages each have their own variance (within 3 %), and a
    device read alone or by index draws what the whole-array read gives it."""
    f = FlickerNoise(seed=2, t_read_s=T_READ, devices_per_array=N)
    ages = np.array([10.0, 3600.0, 86400.0, YEAR_S])[np.arange(N) % 4]
    band = torch.from_numpy(np.log((ages + T0 + T_READ) / (2 * T_READ)).astype(np.float32))
    s = f.sample(0, 1e8, band, 0).numpy()
    for k in range(4):
        sel = np.arange(N) % 4 == k
        assert abs(s[sel].var() / band.numpy()[sel][0] - 1) < 0.03
    idx = np.array([5, 77, BLOCK + 3, N - 1])
    one = f.sample(0, 1e8, band[idx], 0, idx).numpy()
    np.testing.assert_allclose(one, s[idx], rtol=1e-6)


def _model_corr(lag_s: float, age_s: float) -> float:
    """The process's correlation at a lag, averaged over its bucket phases."""
    w = math.log(RATIO)
    band = _band(age_s)
    c2 = [min(max(band - k * w, 0.0), w if k < LEVELS - 1 else math.inf) for k in range(LEVELS)]
    tau = [BUCKET * 2 * T_READ * RATIO**k for k in range(LEVELS)]
    return sum(c * max(0.0, 1 - lag_s / t) for c, t in zip(c2, tau, strict=True)) / band


def _one_over_f_corr(lag_s: float, age_s: float) -> float:
    """Correlation of a continuous 1/f spectrum over the same band, 1/(age + t0 + t_read) to
    1/(2 t_read): (Ci(2 pi f_hi lag) - Ci(2 pi f_lo lag)) / L."""
    f_hi, f_lo = 1 / (2 * T_READ), 1 / (age_s + T0 + T_READ)
    ci = lambda x: sici(x)[1]  # noqa: E731
    return (ci(2 * math.pi * f_hi * lag_s) - ci(2 * math.pi * f_lo * lag_s)) / _band(age_s)


def test_correlation_in_time_is_close_to_a_continuous_one_over_f_spectrum():
    """The levels' correlation stays within 0.12 of a continuous 1/f spectrum for lags from
    0.1 us to 3x the age, ages from 0 to a year (the design criterion of flicker.py)."""
    worst = 0.0
    for age in (0.0, 60.0, 3600.0, 86400.0, 30 * 86400.0, YEAR_S):
        for lag in np.logspace(-7, math.log10(3 * max(age, T0)), 200):
            worst = max(worst, abs(_model_corr(lag, age) - _one_over_f_corr(lag, age)))
    assert worst < 0.12


def _noise(chip: Chip, at_s: float) -> np.ndarray:
    """Read noise of every device of G+ at an instant: a device read minus its noise-free state."""
    g = chip.read_devices(0, Array.POS, None, at_s).values.reshape(-1)
    return g - read_array(chip, 0, 0, at_s, False).numpy().reshape(-1)


def _mean_corr(chip: Chip, starts: np.ndarray, lag_s: float) -> float:
    return float(np.mean([np.corrcoef(_noise(chip, t), _noise(chip, t + lag_s))[0, 1]
                          for t in starts]))  # fmt: skip


def _chip() -> Chip:
    chip = Chip(ChipConfig(tile_rows=320, tile_cols=320, seed=4))  # 102,400 devices per array
    t = np.full(chip.shape, 10.0, np.float32)
    chip.program(0, t, t, at_s=0.0)
    return chip


def test_reads_microseconds_apart_share_almost_all_their_noise():
    """Device reads 1 us apart a day after programming correlate at ~0.9 (1/f: 0.88), averaged
    over 40 instants; reads 0.1 us apart at ~0.99."""
    chip = _chip()
    starts = np.sort(86400.0 + np.random.default_rng(0).uniform(0, 100, 40))
    near = _mean_corr(chip, starts, 1e-6)
    assert near > 0.85
    assert abs(near - _model_corr(1e-6, 86400.0)) < 0.05
    assert _mean_corr(chip, starts[:5] + 1e3, 1e-7) > 0.97


def test_reads_far_apart_share_almost_none():
    """A read an hour after programming and one a year later are uncorrelated (|r| < 0.02), and
    reads a day apart at an age of an hour nearly so."""
    chip = _chip()
    a = _noise(chip, 3600.0)
    b = _noise(chip, 3600.0 + 86400.0)
    assert abs(np.corrcoef(a, _noise(chip, YEAR_S))[0, 1]) < 0.02
    assert abs(np.corrcoef(a, b)[0, 1]) < 0.05


def test_averaging_verify_reads_cannot_remove_read_noise():
    """Eight reads 0.5 us apart, averaged, keep > 80 % of one read's noise variance (white noise
    would keep 1/8)."""
    chip = _chip()
    t = 2 * 86400.0
    reads = np.stack([_noise(chip, t + 5e-7 * k) for k in range(8)])
    assert reads.mean(axis=0).var() / reads[0].var() > 0.8


def test_cache_stays_within_its_budget():
    """Cached level arrays never exceed the cache's byte budget."""
    f = FlickerNoise(3, T_READ, devices_per_array=4 * BLOCK, cache_bytes=3 * BLOCK * 4)
    band = torch.full((4 * BLOCK,), _band(YEAR_S))
    for k in range(5):
        f.sample(0, 1e6 + 3600.0 * k, band, 0)
        assert f._cached_bytes <= f.cache_bytes


def test_a_small_array_draws_only_its_own_devices():
    """An array smaller than a block draws blocks of its own size; a device read by index
    sees what the whole-array read gives it."""
    f = FlickerNoise(seed=6, t_read_s=T_READ, devices_per_array=24 * 16)
    band = torch.full((24 * 16,), _band(3600.0))
    whole = f.sample(1, 5e4, band, 1)
    assert all(z.numel() == 24 * 16 for z in f._cache.values())
    idx = np.array([3, 200, 383])
    np.testing.assert_array_equal(f.sample(1, 5e4, band[idx], 1, idx), whole[idx])
