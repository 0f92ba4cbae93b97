"""Several conductance pairs per weight (Mackin 2022): each pair addressed, the MVM combining
them as sum_k F^k (G+_k - G-_k) / g_max, single-pair chips unchanged."""

from __future__ import annotations

import numpy as np
import pytest

from device_twin import Array, Chip, ChipConfig, PulseKind
from device_twin.config import DeviceModelConfig, IOConfig, PeripheryConfig
from device_twin.errors import InvalidArgument

ROWS, COLS = 12, 8


def _config(pairs: int = 2, f: float = 3.0, ideal: bool = False, **kw) -> ChipConfig:
    extra = {}
    if ideal:
        extra = {
            "device": DeviceModelConfig(prog_noise_scale=0, read_noise_scale=0, drift_scale=0),
            "periphery": PeripheryConfig(forward=IOConfig(is_perfect=True),
                                         probe=IOConfig(is_perfect=True)),
        }  # fmt: skip
    return ChipConfig(n_tiles=2, tile_rows=ROWS, tile_cols=COLS, seed=7, pairs_per_weight=pairs,
                      significance_factor=f, **extra, **kw)  # fmt: skip


def _targets(seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    # below every device's own bound (saturation), so an ideal chip holds them exactly
    return tuple(rng.uniform(0, 12, (ROWS, COLS)).astype(np.float32) for _ in range(2))


def test_the_mvm_combines_the_pairs_with_their_significance():
    """On an ideal chip, an MVM computes x @ sum_k F^k (G+_k - G-_k) / g_max."""
    chip = Chip(_config(pairs=2, f=3.0, ideal=True))
    (p0, n0), (p1, n1) = _targets(0), _targets(1)
    chip.program(0, p0, n0, 0.0, pair=0)
    chip.program(0, p1, n1, 1.0, pair=1)
    x = np.random.default_rng(2).uniform(-1, 1, (5, ROWS)).astype(np.float32)
    w = ((p0 - n0) + 3.0 * (p1 - n1)) / chip.config.g_max_us
    np.testing.assert_allclose(chip.mvm(0, x, 2.0).values, x @ w, rtol=1e-4, atol=1e-4)
    assert chip.mvm(0, x, 2.0).devices == 4 * ROWS * COLS


def test_programming_pair_zero_of_a_two_pair_chip_draws_as_a_single_pair_chip():
    """A second pair changes nothing of the first: the same writes and reads of pair 0 give
    the same devices and values as on a single-pair chip (keys are 2*pair + sign)."""
    one, two = Chip(_config(pairs=1)), Chip(_config(pairs=2))
    gp, gn = _targets(3)
    dev = np.arange(0, ROWS * COLS, 5)
    for c in (one, two):
        c.program(0, gp, gn, 0.0)
        c.apply_pulses(0, Array.POS, dev, PulseKind.SET, 2, 30.0)
    np.testing.assert_array_equal(one.g_prog_us[0], two.g_prog_us[0, :2])
    np.testing.assert_array_equal(one.nu[0], two.nu[0, :2])
    a = one.read_devices(0, Array.BOTH, None, 3600.0).values
    b = two.read_devices(0, Array.BOTH, None, 3600.0).values
    np.testing.assert_array_equal(a, b)
    pa = one.probe(0, np.arange(ROWS), Array.DIFF, 3601.0).values
    pb = two.probe(0, np.arange(ROWS), Array.DIFF, 3601.0).values
    np.testing.assert_array_equal(pa, pb)


def test_writes_reads_and_probes_touch_only_the_named_pair():
    """Programming, pulsing and re-programming pair 1 leaves pair 0 as it was; reads and
    probes of pair 1 see pair 1's devices."""
    chip = Chip(_config(pairs=2, ideal=True))
    (p0, n0), (p1, n1) = _targets(4), _targets(5)
    chip.program(0, p0, n0, 0.0, pair=0)
    chip.program(0, p1, n1, 1.0, pair=1)
    before = chip.g_prog_us[0, :2].copy()
    dev = np.array([0, 5, 17])
    chip.program_devices(0, Array.NEG, dev, np.full(3, 12.5, np.float32), 2.0, pair=1)
    chip.apply_pulses(0, Array.POS, dev, PulseKind.RESET, 1, 3.0, pair=1)
    np.testing.assert_array_equal(chip.g_prog_us[0, :2], before)
    g = chip.read_devices(0, Array.BOTH, None, 4.0, pair=1).values
    np.testing.assert_allclose(g[1].ravel()[dev], 12.5, atol=1e-5)
    assert np.all(g[0].ravel()[dev] < 2.0)  # RESET: about 0 uS
    np.testing.assert_allclose(np.delete(g[0].ravel(), dev), np.delete(p1.ravel(), dev), atol=1e-5)
    codes = chip.probe(0, np.arange(ROWS), Array.DIFF, 5.0, pair=0)
    np.testing.assert_allclose(codes.values * codes.scale_us, p0 - n0, atol=codes.scale_us)


def test_an_unknown_pair_is_refused_and_changes_nothing():
    """A pair the chip does not have (or not an integer) is INVALID_ARGUMENT, nothing
    changes; a single-pair chip has only pair 0."""
    chip = Chip(_config(pairs=2))
    gp, gn = _targets(6)
    chip.program(0, gp, gn, 0.0)
    state = (chip.g_prog_us.copy(), chip.op_counter, chip.now_s)
    dev = np.array([1, 2])
    calls = [
        lambda p: chip.program(1, gp, gn, 5.0, pair=p),
        lambda p: chip.program_devices(0, Array.POS, dev, np.ones(2, np.float32), 5.0, pair=p),
        lambda p: chip.apply_pulses(0, Array.POS, dev, PulseKind.SET, 1, 5.0, pair=p),
        lambda p: chip.read_devices(0, Array.POS, None, 5.0, pair=p),
        lambda p: chip.read_devices(0, Array.POS, dev, 5.0, pair=p),
        lambda p: chip.probe(0, np.arange(3), Array.DIFF, 5.0, pair=p),
    ]
    for call in calls:
        for bad in (2, -1, 1.0, True):
            with pytest.raises(InvalidArgument, match="pair"):
                call(bad)
    assert (chip.g_prog_us.tobytes(), chip.op_counter, chip.now_s) == (
        state[0].tobytes(), state[1], state[2])  # fmt: skip
    single = Chip(_config(pairs=1))
    with pytest.raises(InvalidArgument, match="pairs 0..0"):
        single.program(0, gp, gn, 0.0, pair=1)


def test_chip_state_grows_with_the_pairs():
    """Each pair adds two arrays of device state; F is the chip's, as configured."""
    one, two = _config(pairs=1), _config(pairs=2, f=2.5)
    assert two.state_bytes == 2 * one.state_bytes
    assert Chip(two).g_prog_us.shape == (2, 4, ROWS, COLS)
    assert two.significance == (1.0, 2.5)
    with pytest.raises(ValueError):
        _config(pairs=5)
