"""Family ``pcm_hermes`` against aihwkit's HermesNoiseModel, with one and two devices per cell:
the same formula device by device for the same normals, and its statistics over >= 100,000
devices per case."""

import numpy as np
import pytest
import torch
from aihwkit.inference.noise import hermes as aihwkit_hermes
from aihwkit.inference.noise.hermes import HermesNoiseModel
from pydantic import ValidationError

from device_twin import Array, Chip, ChipConfig
from device_twin.config import PulseModelConfig
from device_twin.families import HermesDeviceConfig, make_family
from tests.device_twin.families.conftest import N_DEVICES, YEAR_S, batch, white

G_MAX = {1: 10.35, 2: 20.7}
# aihwkit 1.1's HermesNoiseModel indexes with a list (a torch deprecation, not ours)
pytestmark = pytest.mark.filterwarnings("ignore:Using a non-tuple sequence:UserWarning")


@pytest.mark.parametrize("n_dev", [1, 2])
def test_programming_equals_aihwkit_for_the_same_normals(aihwkit_draws, n_dev):
    """g_prog and nu equal aihwkit's for the same normals, over 200,000 targets in [0, g_max]."""
    rng = np.random.default_rng(n_dev)
    g_t = rng.uniform(0, G_MAX[n_dev], N_DEVICES).astype(np.float32)
    g_t[:30] = 0.0
    z1, z2 = rng.standard_normal((2, N_DEVICES)).astype(np.float32)
    fam = make_family(HermesDeviceConfig(num_devices=n_dev, drift_scale=0.9), G_MAX[n_dev])
    g_prog, nu = fam.programmed(g_t, z1, z2)
    aihwkit_draws(aihwkit_hermes, z1, z2)
    model = HermesNoiseModel(num_devices=n_dev, drift_scale=0.9)
    ref_g = model.apply_programming_noise_to_conductance(torch.from_numpy(g_t)).numpy()
    ref_nu = model.generate_drift_coefficients(torch.from_numpy(g_t)).numpy()
    np.testing.assert_allclose(g_prog, ref_g, rtol=1e-5, atol=2e-5)
    np.testing.assert_allclose(nu, ref_nu, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("n_dev", [1, 2])
@pytest.mark.parametrize("age_s", [0.0, 60.0, 86400.0, YEAR_S])
def test_read_equals_aihwkit_for_the_same_normals(aihwkit_draws, n_dev, age_s):
    """Drift and 1/f read noise equal aihwkit's apply_drift_noise_to_conductance, device by device."""
    rng = np.random.default_rng(10 + n_dev)
    g_prog = rng.uniform(0, 1.1 * G_MAX[n_dev], N_DEVICES).astype(np.float32)
    g_prog[:30] = 0.0
    nu = rng.uniform(0, 0.15, N_DEVICES).astype(np.float32)
    xi = rng.standard_normal(N_DEVICES).astype(np.float32)
    fam = make_family(HermesDeviceConfig(num_devices=n_dev, read_noise_scale=1.2), G_MAX[n_dev])
    ours = fam.read(batch(g_prog, nu, age_s), white(xi)).numpy()
    aihwkit_draws(aihwkit_hermes, xi)
    model = HermesNoiseModel(num_devices=n_dev, read_noise_scale=1.2)
    ref = model.apply_drift_noise_to_conductance(
        torch.from_numpy(g_prog), torch.from_numpy(nu), age_s
    ).numpy()
    np.testing.assert_allclose(ours, ref, rtol=3e-5, atol=3e-5)


def _chip(n_dev: int, seed: int, **device) -> Chip:
    # bounds far above g_max: these tests see the noise model alone (saturation: test_pulses)
    pulse = PulseModelConfig.from_aihwkit(w_max_dtod=0.0, g_per_w_us=G_MAX[n_dev])
    dev = HermesDeviceConfig(num_devices=n_dev, pulse=pulse, **device)
    return Chip(ChipConfig(tile_rows=320, tile_cols=320, seed=seed, device=dev))


@pytest.mark.parametrize("n_dev", [1, 2])
@pytest.mark.parametrize("level", [0.1, 0.5, 0.9])
def test_chip_statistics_match_aihwkit_sampling(n_dev, level):
    """On a chip (204,800 devices per case): programming spread, mean nu and read-noise spread at
    a day and a year equal those of aihwkit's own draws within 3 % (5 % for read noise)."""
    g_us = level * G_MAX[n_dev]
    target = np.full((320, 320), g_us, np.float32)
    model = HermesNoiseModel(num_devices=n_dev)
    torch.manual_seed(3)
    ref_g = model.apply_programming_noise_to_conductance(torch.full((400_000,), g_us))
    ref_nu = model.generate_drift_coefficients(torch.full((400_000,), g_us))
    res = _chip(n_dev, 1).program(0, target, target, at_s=0.0)
    assert abs(res.writes.g_prog_us.std() / float(ref_g.std()) - 1) < 0.03
    assert abs(res.writes.nu.mean() / float(ref_nu.mean()) - 1) < 0.03
    quiet = HermesNoiseModel(num_devices=n_dev, prog_noise_scale=0.0, drift_scale=0.0)
    for t_s in (86400.0, YEAR_S):
        chip = _chip(n_dev, 2, prog_noise_scale=0.0, drift_scale=0.0)
        chip.program(0, target, target, at_s=0.0)
        g = chip.read_devices(0, Array.POS, None, t_s).values
        ref = quiet.apply_drift_noise_to_conductance(
            torch.full((400_000,), g_us), torch.zeros(400_000), t_s
        )
        assert abs(g.std() / float(ref.std()) - 1) < 0.05


def test_modes_set_their_characterised_range_and_refuse_beyond():
    """Two devices per cell: g_max 20.7 uS, t0 300 s; one: 10.35 uS, 200 s; a larger g_max is
    refused; the config travels as JSON."""
    two = ChipConfig(device={"family": "pcm_hermes"})
    one = ChipConfig(device={"family": "pcm_hermes", "num_devices": 1})
    assert (two.g_max_us, two.device.t0_s, one.g_max_us, one.device.t0_s) == (20.7, 300.0, 10.35,
                                                                               200.0)  # fmt: skip
    assert one.device.write_energy.reset_pulse_pj * 2 == two.device.write_energy.reset_pulse_pj
    with pytest.raises(ValidationError, match="characterised up to 10.35"):
        ChipConfig(g_max_us=20.0, device={"family": "pcm_hermes", "num_devices": 1})
    assert ChipConfig.model_validate_json(two.model_dump_json()) == two
