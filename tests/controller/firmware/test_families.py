"""The firmware and every built-in policy run on every device family: a day of a toy network
on each, with corrections where the policy makes them."""

from __future__ import annotations

import numpy as np
import pytest

from controller.firmware import ChipModel, make_environment
from controller.firmware.policies import BUILTIN, load_policy
from device_twin.config import ChipConfig
from device_twin.families import FAMILIES
from tests.controller.helpers import make_mapping, toy_gdc_factory, toy_twin

HOUR, DAY = 3600.0, 86400.0


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_every_policy_runs_on_every_family(family):
    """Each built-in policy completes a day on a chip of each family; the correcting ones
    correct, devices outside tolerance end converged or reported failed, energy adds up."""
    for name in BUILTIN:
        correcting = name in ("threshold", "drift_aware", "periodic_refresh")
        params = {"interval_s": 4 * HOUR} if correcting else {}
        cfg = ChipConfig(n_tiles=2, tile_rows=24, tile_cols=16, seed=3,
                         device={"family": family})  # fmt: skip
        twin, cid = toy_twin(cfg)
        mapped = make_mapping(cfg, [(24, 16), (16, 6)], seed=1)
        env = make_environment()
        model = ChipModel(env, twin, cid, mapped, load_policy(name, params),
                          compensation_factory=toy_gdc_factory)  # fmt: skip
        model.start()
        model.advance(DAY)
        totals = model.totals()
        assert totals.get("error") is None, (family, name, totals.get("error"))
        if correcting:
            assert totals["corrections"] > 0, (family, name)
        twin_pj = sum(e["energy_pj"] for e in twin.energy_ledger(cid).values())
        assert np.isclose(sum(model.ledger.twin_energy_by_op.values()), twin_pj, rtol=1e-12)


class _CountsReprograms:
    """A twin wrapper that counts, per device, the program_devices calls that wrote it."""

    def __init__(self, twin) -> None:
        self._twin = twin
        self.writes: dict[tuple[int, int], int] = {}
        self.failed: set[tuple[int, int]] = set()

    def __getattr__(self, name):
        return getattr(self._twin, name)

    def program_devices(self, chip_id, tile, array, devices, g_target_us, at_s):
        r = self._twin.program_devices(chip_id, tile, array, devices, g_target_us, at_s)
        for d in np.asarray(devices).tolist():
            self.writes[(tile, d)] = self.writes.get((tile, d), 0) + 1
        self.failed |= {(tile, int(d)) for d in r.failed}
        return r


def test_a_device_the_twin_cannot_program_fails_instead_of_being_retried():
    """Devices whose own bound lies below their target (reported by program_devices) fail at
    their next verify read: re-programmed once, not max_reprograms (2) times."""
    from controller.firmware.policies import ThresholdPolicy

    # bounds around 20 uS on a 25 uS chip: the two top levels are out of reach for most devices
    cfg = ChipConfig(n_tiles=2, tile_rows=24, tile_cols=16, seed=5,
                     device={"family": "pcm", "pulse": {"g_per_w_us": 10.0}})  # fmt: skip
    reg, cid = toy_twin(cfg)
    twin = _CountsReprograms(reg)
    mapped = make_mapping(cfg, [(24, 16), (16, 6)], seed=2)
    policy = ThresholdPolicy(interval_s=1e9, method="program", tolerance=0.01, max_iterations=6)
    model = ChipModel(make_environment(), twin, cid, mapped, policy,
                      compensation_factory=toy_gdc_factory)  # fmt: skip
    model.start()
    model.advance(HOUR)
    model.wait(model.trigger_correction(mode="all"))
    assert twin.failed, "the set-up should leave devices out of reach"
    assert all(twin.writes[d] == 1 for d in twin.failed)
    assert max(twin.writes.values()) > 1  # reachable devices were re-programmed again
    assert model.counters()["failed_devices"] >= len(twin.failed)
