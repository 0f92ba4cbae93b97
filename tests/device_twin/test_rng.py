"""Keyed random streams: a draw depends on what is drawn (device, write number, instant), never
on how many operations came before, so looking at a chip changes none of its devices."""

import numpy as np
import pytest
from scipy import stats

from device_twin import Array, Chip, ChipConfig, PulseKind
from device_twin.rng import WriteKeys, device_ids, hashed_normal_pairs, splitmix64

R, C = 32, 24
N = R * C


def test_hashed_normal_pairs_are_independent_standard_normals():
    """Two normals per 64-bit hash: each N(0, 1) (KS test over 400,000), uncorrelated, fixed."""
    h = splitmix64(np.arange(400_000, dtype=np.uint64))
    a, b = hashed_normal_pairs(h)
    for z in (a, b):
        assert stats.kstest(z, "norm").pvalue > 1e-3
    assert abs(np.corrcoef(a, b)[0, 1]) < 0.01
    assert abs(np.corrcoef(a[:-1], a[1:])[0, 1]) < 0.01
    np.testing.assert_array_equal(a, hashed_normal_pairs(h)[0])


def test_write_draws_depend_only_on_device_write_number_and_stream():
    """A device's draws for a write are the same whoever else is written with it, and differ
    between its write numbers, streams, tiles and chip seeds."""
    ids = device_ids(np.array([0, 1, 1]), np.array([5, 5, 9]))
    base = WriteKeys(7, 0, ids, np.array([3, 3, 3])).normals(1)[0]
    alone = WriteKeys(7, 0, ids[1:2], np.array([3])).normals(1)[0]
    assert base[1] == alone[0]
    assert len(set(base.tolist())) == 3  # G+ and G- of one cell, another cell: all different
    for other in (WriteKeys(7, 0, ids, np.array([4, 4, 4])).normals(1)[0],
                  WriteKeys(7, 0, ids, np.array([3, 3, 3])).normals(2)[0],
                  WriteKeys(7, 1, ids, np.array([3, 3, 3])).normals(1)[0],
                  WriteKeys(8, 0, ids, np.array([3, 3, 3])).normals(1)[0]):  # fmt: skip
        assert not np.any(other == base)


def _scenario(chip: Chip, look: bool) -> list:
    """Writes and reads at fixed instants; with ``look``, extra reads, probes and MVMs between
    them (also at the very instants of the writes). Returns what the common calls returned."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((4, R)).astype(np.float32)
    out = []

    def extra(t: float) -> None:
        if look:
            chip.read_devices(0, Array.BOTH, None, t)
            chip.probe(0, np.arange(R), Array.BOTH, t)
            chip.mvm(0, x, t)
            chip.read_devices(0, Array.POS, np.arange(0, N, 7), t)

    t = rng.uniform(0, 25, (2, R, C)).astype(np.float32)
    out.append(chip.program(0, t[0], t[1], 0.0).writes)
    extra(10.0)
    extra(3600.0)
    out.append(chip.apply_pulses(0, Array.BOTH, np.arange(0, 2 * N, 3), PulseKind.SET, 2, 3600.0))
    extra(3600.0)
    out.append(chip.program_devices(0, Array.NEG, np.arange(50), np.full(50, 9.0, np.float32),
                                    7200.0))  # fmt: skip
    out.append(chip.read_devices(0, Array.BOTH, None, 86400.0).values)
    out.append(chip.probe(0, np.arange(R), Array.DIFF, 86400.0).values)
    out.append(chip.mvm(0, x, 86400.0).values)
    extra(86400.0)
    out.append(chip.apply_pulses(0, Array.POS, np.arange(N), PulseKind.RESET, 1, 90000.0).writes)
    return out


def test_looking_at_a_chip_changes_none_of_its_devices():
    """Extra device reads, probes and MVMs (even at the instants of writes) leave every later
    write, device read, probe and MVM of the chip bit-identical."""
    cfg = ChipConfig(tile_rows=R, tile_cols=C, seed=11)
    plain, looked = Chip(cfg), Chip(cfg)
    a, b = _scenario(plain, look=False), _scenario(looked, look=True)
    for x, y in zip(a, b, strict=True):
        if hasattr(x, "g_prog_us"):
            for name in ("g_prog_us", "nu", "write_count"):
                np.testing.assert_array_equal(getattr(x, name), getattr(y, name))
        elif hasattr(x, "writes"):
            np.testing.assert_array_equal(x.writes.g_prog_us, y.writes.g_prog_us)
            assert (x.pulses, x.energy_pj) == (y.pulses, y.energy_pj)
        else:
            np.testing.assert_array_equal(x, y)
    for name in ("g_prog_us", "nu", "t_write_s", "write_count"):
        np.testing.assert_array_equal(getattr(plain, name), getattr(looked, name))
    assert looked.op_counter > plain.op_counter


def test_periphery_noise_is_keyed_by_kind_instant_and_call_number():
    """Two probes at one instant draw different ADC noise (the second call is another draw);
    MVMs at that instant do not move the probes' draws."""
    cfg = ChipConfig(tile_rows=R, tile_cols=C, seed=3)
    a, b = Chip(cfg), Chip(cfg)
    t = np.full((R, C), 12.0, np.float32)
    for chip in (a, b):
        chip.program(0, t, t, 0.0)
    x = np.ones((2, R), np.float32)
    b.mvm(0, x, 50.0)
    p1, p2 = a.probe(0, np.arange(R), Array.POS, 50.0), a.probe(0, np.arange(R), Array.POS, 50.0)
    q1 = b.probe(0, np.arange(R), Array.POS, 50.0)
    b.mvm(0, x, 50.0)
    q2 = b.probe(0, np.arange(R), Array.POS, 50.0)
    assert not np.array_equal(p1.values, p2.values)
    np.testing.assert_array_equal(p1.values, q1.values)
    np.testing.assert_array_equal(p2.values, q2.values)


@pytest.mark.parametrize("n_first", [1, 300])
def test_a_devices_write_does_not_depend_on_its_batch(n_first):
    """Programming a device alone or among others gives it the same outcome (same write number)."""
    cfg = ChipConfig(tile_rows=R, tile_cols=C, seed=5)
    a, b = Chip(cfg), Chip(cfg)
    t = np.full((R, C), 10.0, np.float32)
    for chip in (a, b):
        chip.program(0, t, t, 0.0)
    one = a.program_devices(0, Array.POS, np.array([n_first]), np.array([7.0], np.float32), 1.0)
    idx = np.arange(0, 400)
    many = b.program_devices(0, Array.POS, idx, np.full(idx.size, 7.0, np.float32), 1.0)
    assert one.writes.g_prog_us[0] == many.writes.g_prog_us[n_first]
    assert one.writes.nu[0] == many.writes.nu[n_first]
