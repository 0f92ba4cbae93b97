"""The energy ledger is exact for known operation counts (DESIGN.md §6 figures, the family's
write energy and read duration)."""

import math

import numpy as np
import pytest

from device_twin import Array, Chip, ChipConfig, PulseKind
from device_twin.config import DeviceModelConfig, EnergyModelConfig, WriteEnergyConfig

R, C = 16, 8
E = EnergyModelConfig()
W = DeviceModelConfig().write_energy
T_READ = DeviceModelConfig().t_read_s
READ_PJ_AT_25US = 0.2**2 * 25e-6 * T_READ * 1e12  # V^2 * G * t_read: 0.25 pJ


def _chip(write: WriteEnergyConfig | None = None, **energy) -> Chip:
    dev = DeviceModelConfig(prog_noise_scale=0.0, drift_scale=0.0, read_noise_scale=0.0,
                            **({"write_energy": write} if write else {}))  # fmt: skip
    return Chip(
        ChipConfig(tile_rows=R, tile_cols=C, device=dev, energy=EnergyModelConfig(**energy))
    )


def test_default_figures_are_the_design_table():
    """Defaults: SET 22.5 pJ/150 ns, RESET 12 pJ/40 ns, read 0.2 V for t_read = 250 ns (0.25 pJ at
    25 uS), ADC 1.67 pJ, DAC 0.42 pJ, MVM 130 ns."""
    assert (W.set_pulse_pj, W.set_pulse_s, W.reset_pulse_pj, W.reset_pulse_s) == (
        22.5,
        150e-9,
        12.0,
        40e-9,
    )
    assert (E.read_voltage_v, T_READ) == (0.2, 250e-9)
    assert pytest.approx(0.25) == READ_PJ_AT_25US
    assert (E.adc_conversion_pj, E.dac_row_drive_pj) == (1.67, 0.42)
    assert E.mvm_latency_s == 130e-9


def test_moved_energy_fields_are_refused_with_where_they_went():
    """The pulse and read figures that left EnergyModelConfig are refused with a pointer."""
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="device.write_energy"):
        EnergyModelConfig(set_pulse_pj=1.0)


def test_set_and_reset_pulse_energy_is_count_times_pulse():
    """n SET pulses cost n x 22.5 pJ; n RESET pulses cost n x 12 pJ, whatever the devices."""
    chip = _chip()
    z = np.zeros((R, C), np.float32)
    chip.program(0, z, z, 0.0)
    before = chip.ledger.to_dict()
    r1 = chip.apply_pulses(0, Array.POS, np.arange(10), PulseKind.SET, np.arange(1, 11), 1.0)
    r2 = chip.apply_pulses(0, Array.NEG, np.arange(7), PulseKind.RESET, 3, 2.0)
    assert r1.pulses == 55 and r1.energy_pj == pytest.approx(55 * 22.5, rel=1e-12)
    assert r2.pulses == 21 and r2.energy_pj == pytest.approx(21 * 12.0, rel=1e-12)
    led = chip.ledger.to_dict()
    assert led["set_pulse"]["energy_pj"] == pytest.approx(55 * 22.5)
    assert led["reset_pulse"]["energy_pj"] == pytest.approx(21 * 12.0)
    assert led["program"] == before["program"]
    # ten devices pulsed in parallel: the slowest (10 pulses) sets the latency
    assert r1.latency_s == pytest.approx(10 * 150e-9)


def test_program_energy_counts_reset_pulses_and_verify_reads():
    """program = one RESET per device + the nominal SET pulses to the target + one verify read
    (device read at the target + ADC) per pulse, at most max_iterations; latency by groups."""
    chip = _chip()
    gp = np.full((R, C), 12.5, np.float32)
    gn = np.zeros((R, C), np.float32)
    res = chip.program(0, gp, gn, 0.0)
    pulses = int(np.searchsorted(chip.pulse_model.nominal_levels_us(), 12.5 - 1e-6))
    n = 2 * R * C
    n_pulses = R * C * pulses
    expect = n * 12.0 + n_pulses * (22.5 + 1.67) + n_pulses * READ_PJ_AT_25US * 12.5 / 25.0
    assert res.iterations == n_pulses
    assert res.pulses == n + n_pulses
    assert res.energy_pj == pytest.approx(expect, rel=1e-12)
    # 256 devices at a time: one group, as slow as its slowest device
    assert res.latency_s == pytest.approx(40e-9 + pulses * (150e-9 + T_READ))
    high = chip.program(0, np.full((R, C), 25.0, np.float32), gn, 1.0)
    assert high.iterations == R * C * 30  # capped by max_iterations


def test_read_probe_and_mvm_energy_are_exact():
    """Reads, probes and MVMs cost device reads (0.1 pJ x g/g_max) plus ADC and DAC as counted."""
    chip = _chip()
    gp = np.full((R, C), 25.0, np.float32)
    gn = np.full((R, C), 5.0, np.float32)
    chip.program(0, gp, gn, 0.0)
    g_pos = chip.read_devices(0, Array.POS, None, 0.5).values  # at or below each device's bound
    rd = chip.read_devices(0, Array.POS, np.arange(20), 1.0)
    e_read = READ_PJ_AT_25US * g_pos.reshape(-1)[:20] / 25.0
    assert rd.energy_pj == pytest.approx(float(np.sum(e_read)) + 20 * 1.67)
    assert rd.latency_s == pytest.approx(math.ceil(20 / C) * T_READ)
    pr = chip.probe(0, np.arange(3), Array.DIFF, 2.0)
    g_rows = float(g_pos[:3].sum()) + 3 * C * 5.0
    assert pr.energy_pj == pytest.approx(3 * 0.42 + 3 * C * 1.67 + READ_PJ_AT_25US * g_rows / 25)
    assert pr.latency_s == pytest.approx(3 * 130e-9)
    x = np.zeros((4, R), np.float32)
    x[:, :5] = 1.0  # five rows driven at full amplitude
    mv = chip.mvm(0, x, 3.0)
    g5 = float(g_pos[:5].sum()) + 5 * C * 5.0
    assert mv.energy_pj == pytest.approx(4 * (R * 0.42 + C * 1.67) + 4 * READ_PJ_AT_25US * g5 / 25)
    assert mv.latency_s == pytest.approx(4 * 130e-9)


def test_ledger_totals_are_the_sum_of_operation_results():
    """The ledger's totals equal the sum of the energies and latencies each operation reported."""
    chip = Chip(ChipConfig(tile_rows=R, tile_cols=C, seed=3))
    rng = np.random.default_rng(0)
    results = [chip.program(0, rng.uniform(0, 25, (R, C)).astype(np.float32),
                            rng.uniform(0, 25, (R, C)).astype(np.float32), 0.0)]  # fmt: skip
    t = 1.0
    for _ in range(5):
        results.append(chip.apply_pulses(0, Array.POS, np.arange(5), PulseKind.SET, 2, t))
        results.append(chip.probe(0, np.arange(R), Array.NEG, t + 1))
        results.append(chip.mvm(0, rng.normal(size=(3, R)).astype(np.float32), t + 2))
        results.append(chip.read_devices(0, Array.NEG, np.arange(9), t + 3))
        t += 10
    assert chip.ledger.total_energy_pj == pytest.approx(sum(r.energy_pj for r in results))
    assert chip.ledger.total_latency_s == pytest.approx(sum(r.latency_s for r in results))
    led = chip.ledger.to_dict()
    assert led["mvm"]["calls"] == 5 and led["set_pulse"]["pulses"] == 50


def test_energy_figures_are_configurable():
    """Changing a figure in the energy model changes the ledger accordingly."""
    chip = _chip(WriteEnergyConfig(set_pulse_pj=10.0, set_pulse_s=1e-7, reset_pulse_pj=1.0,
                                   reset_pulse_s=1e-8))  # fmt: skip
    z = np.zeros((R, C), np.float32)
    chip.program(0, z, z, 0.0)
    assert chip.apply_pulses(0, Array.POS, np.arange(4), PulseKind.SET, 2, 1.0).energy_pj == 80.0
