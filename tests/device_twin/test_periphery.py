"""MVMs and probes go through aihwkit's periphery: exact when perfect, aihwkit's errors otherwise."""

import numpy as np
import pytest
import torch
from aihwkit.simulator.tiles.analog_mvm import AnalogMVM
from aihwkit.simulator.tiles.inference_torch import TorchInferenceTile

from device_twin import Array, Chip, ChipConfig, InvalidArgument
from device_twin.config import DeviceModelConfig, IOConfig, PeripheryConfig
from device_twin.periphery import make_rpu_config

ROWS, COLS = 128, 96


def _programmed_chip(periphery: PeripheryConfig, seed: int = 0, **device) -> tuple[Chip, float]:
    cfg = ChipConfig(tile_rows=ROWS, tile_cols=COLS, seed=seed, periphery=periphery,
                     device=DeviceModelConfig(**device))  # fmt: skip
    chip = Chip(cfg)
    rng = np.random.default_rng(seed)
    w = np.clip(rng.normal(0, 0.4, (ROWS, COLS)), -1, 1)
    g = np.abs(w) * cfg.g_max_us
    chip.program(0, np.where(w > 0, g, 0).astype(np.float32),
                 np.where(w < 0, g, 0).astype(np.float32), at_s=0.0)  # fmt: skip
    return chip, cfg.g_max_us


def _w_eff(chip: Chip, g_max: float, at_s: float) -> np.ndarray:
    """(rows, cols) effective weights read back without read noise (deterministic reads)."""
    gp = chip.read_devices(0, Array.POS, None, at_s).values
    gn = chip.read_devices(0, Array.NEG, None, at_s).values
    return (gp.astype(np.float64) - gn) / g_max


def test_perfect_periphery_mvm_equals_matmul():
    """With a perfect periphery, mvm(x) equals x @ W_eff to float tolerance, drift included."""
    per = PeripheryConfig(forward=IOConfig(is_perfect=True))
    chip, g_max = _programmed_chip(per, read_noise_scale=0.0)
    x = np.random.default_rng(1).normal(size=(64, ROWS)).astype(np.float32)
    w = _w_eff(chip, g_max, 86400.0)
    y = chip.mvm(0, x, 86400.0).values
    np.testing.assert_allclose(y, x @ w, rtol=1e-4, atol=1e-4)


def test_mvm_on_a_block_uses_only_that_block():
    """An mvm on rows r0.. and columns c0..c0+n equals x @ W_eff[block] (perfect periphery)."""
    per = PeripheryConfig(forward=IOConfig(is_perfect=True))
    chip, g_max = _programmed_chip(per, read_noise_scale=0.0)
    x = np.random.default_rng(2).normal(size=(16, 40)).astype(np.float32)
    w = _w_eff(chip, g_max, 10.0)
    y = chip.mvm(0, x, 10.0, row_start=30, col_start=20, col_count=50).values
    np.testing.assert_allclose(y, x @ w[30:70, 20:70], rtol=1e-4, atol=1e-4)


def test_default_periphery_errors_match_aihwkit_tile():
    """With aihwkit's default IO, the mvm error matches an aihwkit TorchInferenceTile's on the same weights."""
    chip, g_max = _programmed_chip(PeripheryConfig(), read_noise_scale=0.0)
    w = _w_eff(chip, g_max, 3600.0).astype(np.float32)
    rng = np.random.default_rng(3)
    x = rng.uniform(-1, 1, size=(2000, ROWS)).astype(np.float32)
    ideal = x @ w
    ours = chip.mvm(0, x, 3600.0).values - ideal
    tile = TorchInferenceTile(COLS, ROWS, rpu_config=make_rpu_config(IOConfig()))
    tile.set_weights(torch.from_numpy(w.T.copy()))
    tile.eval()
    torch.manual_seed(0)
    with torch.no_grad():
        ref = tile(torch.from_numpy(x)).numpy() - ideal
    assert abs(ours.std() / ref.std() - 1) < 0.05
    assert abs(ours.mean() - ref.mean()) < 0.1 * ref.std()
    # the periphery really is noisy: not a perfect matmul
    assert ours.std() > 0.01


def test_probe_is_an_identity_mvm_through_aihwkit():
    """Probe codes equal aihwkit's IO-managed matmul of one-hot inputs, quantised (noise off)."""
    probe = IOConfig(inp_res=0.0, out_bound=1.25, out_res=1 / 254, out_noise=0.0,
                     bound_management="none", noise_management="none")  # fmt: skip
    chip, g_max = _programmed_chip(PeripheryConfig(probe=probe), read_noise_scale=0.0)
    rows = np.array([0, 5, 17, 100])
    res = chip.probe(0, rows, Array.DIFF, 7200.0)
    w = _w_eff(chip, g_max, 7200.0).astype(np.float32)
    eye = torch.eye(ROWS)[rows]
    ref = AnalogMVM.matmul(torch.from_numpy(w.T.copy()), eye, probe.to_aihwkit(), is_test=True)
    np.testing.assert_allclose(res.values * res.scale_us / g_max, ref.numpy(), atol=1e-6)
    assert res.values.dtype == np.int16 and res.values.shape == (4, COLS)


def test_probe_single_array_reads_conductance_in_codes():
    """A POS probe returns codes whose scale_us turns them into G+ within one ADC step plus noise."""
    chip, _ = _programmed_chip(PeripheryConfig(), read_noise_scale=0.0)
    rows = np.arange(ROWS)
    res = chip.probe(0, rows, Array.POS, 60.0)
    g = chip.read_devices(0, Array.POS, None, 60.0).values
    err = res.values * res.scale_us - g
    out_noise_us = chip.config.periphery.probe.out_noise * chip.config.g_max_us
    assert abs(err.mean()) < 0.05
    assert err.std() < np.hypot(out_noise_us, res.scale_us / np.sqrt(12)) * 1.1


def test_probe_of_a_column_range_reads_only_those_columns():
    """A probe of columns c0..c0+n returns those columns of the full probe and converts only them."""
    probe = IOConfig(inp_res=0.0, out_bound=1.25, out_res=1 / 254, out_noise=0.0,
                     bound_management="none", noise_management="none")  # fmt: skip
    chip, _ = _programmed_chip(PeripheryConfig(probe=probe), read_noise_scale=0.0)
    rows = np.array([1, 4, 9])
    full = chip.probe(0, rows, Array.BOTH, 100.0)
    part = chip.probe(0, rows, Array.BOTH, 100.0, col_start=10, col_count=7)
    np.testing.assert_array_equal(part.values, full.values[:, :, 10:17])
    e = chip.config.energy
    assert part.energy_pj < full.energy_pj
    assert part.energy_pj - 2 * 3 * 7 * e.adc_conversion_pj - 2 * 3 * e.dac_row_drive_pj > 0
    with pytest.raises(InvalidArgument, match="out of range"):
        chip.probe(0, rows, Array.POS, 101.0, col_start=COLS - 2, col_count=5)


IO_CASES = {
    "default": IOConfig(),
    "bound management repeats": IOConfig(out_bound=0.5),  # most batches saturate, some twice
    "no bound management": IOConfig(bound_management="none", out_bound=0.5),
    "no noise management": IOConfig(noise_management="none"),
    "neither": IOConfig(noise_management="none", bound_management="none"),
    "noise threshold": IOConfig(nm_thres=0.5),
    "no DAC, no ADC, no noise": IOConfig(inp_res=0.0, out_res=0.0, out_noise=0.0),
    "states as counts": IOConfig(inp_res=126, out_res=510, inp_bound=0.8),
}


@pytest.mark.parametrize("io", IO_CASES.values(), ids=IO_CASES.keys())
def test_twin_forward_periphery_equals_aihwkit_tile_bit_for_bit(io):
    """The twin's in-place forward periphery gives exactly aihwkit TorchInferenceTile's
    outputs (same noise draws), zero rows, all-zero batches and saturation included."""
    from device_twin.periphery import TilePeriphery, fast_path_supported

    assert fast_path_supported(io.to_aihwkit())
    rng = np.random.default_rng(7)
    for k, n, w_std in [(144, 16, 0.3), (256, 64, 1.0), (9, 5, 3.0)]:
        w = torch.from_numpy(rng.normal(0, w_std, (n, k)).astype(np.float32))
        x = torch.from_numpy(rng.normal(0, 1, (500, k)).astype(np.float32)).relu_()
        x[3] = 0.0
        x[7] = -x[8]
        per = TilePeriphery(PeripheryConfig(forward=io), k, n)
        assert per._fast
        per.load_weights(w, key=None)
        tile = TorchInferenceTile(n, k, rpu_config=make_rpu_config(io))
        tile.set_weights(w)
        tile.eval()
        for batch in (x, x[:1], torch.zeros(4, k)):
            torch.manual_seed(k)
            ours = per.mvm(batch)
            torch.manual_seed(k)
            with torch.no_grad():
                theirs = tile(batch)
            assert torch.equal(ours, theirs), (k, (ours - theirs).abs().max())


def test_settings_beyond_the_twin_forward_go_through_aihwkit():
    """Input noise or a perfect periphery (settings the in-place path does not implement) use
    aihwkit's tile itself."""
    from device_twin.periphery import TilePeriphery

    for io in (IOConfig(inp_noise=0.01), IOConfig(is_perfect=True)):
        assert not TilePeriphery(PeripheryConfig(forward=io), 8, 4)._fast
