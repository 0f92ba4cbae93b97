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


@pytest.mark.parametrize("loop", ["twin", "steps"])
def test_a_device_the_twin_cannot_program_fails_instead_of_being_retried(loop):
    """Devices whose own bound lies below their target fail at their next verify read:
    re-programmed once, not max_reprograms (2) times; reachable devices may be re-programmed
    again. The same on the twin's loop (ProgramVerify) and step by step."""
    from controller.firmware.policies import ThresholdPolicy

    # bounds around 20 uS on a 25 uS chip: the two top levels are out of reach for most devices
    cfg = ChipConfig(n_tiles=2, tile_rows=24, tile_cols=16, seed=5,
                     device={"family": "pcm", "pulse": {"g_per_w_us": 10.0}})  # fmt: skip
    twin, cid = toy_twin(cfg)
    mapped = make_mapping(cfg, [(24, 16), (16, 6)], seed=2)
    policy = ThresholdPolicy(interval_s=HOUR, threshold=0.01, method="program", tolerance=0.01,
                             max_iterations=6, loop=loop)  # fmt: skip
    model = ChipModel(make_environment(), twin, cid, mapped, policy,
                      compensation_factory=toy_gdc_factory)  # fmt: skip
    model.start()
    model.advance(HOUR - 1)
    before = twin.with_chip(cid, lambda c: c.write_count.copy())
    model.advance(HOUR + 60)  # one wake-up and its corrections
    chip = twin.with_chip(cid, lambda c: c)
    rewrites = chip.write_count - before
    n = cfg.tile_rows * cfg.tile_cols
    out_of_reach = 0
    for t in model.firmware.tiles:
        arrays = np.repeat(np.arange(2), n)
        index = np.tile(np.arange(n), 2)
        bound = chip.pulse_model.bound_us(t, arrays, index).reshape(2, -1)
        target = model.firmware.target_us[t].reshape(2, -1)
        sigma = chip.family.programming_sigma_us(target)
        unreachable = (bound < target - sigma) & (rewrites[t].reshape(2, -1) > 0)
        out_of_reach += int(unreachable.sum())
        assert np.all(rewrites[t].reshape(2, -1)[unreachable] == 1)
    assert out_of_reach, "the set-up should leave devices out of reach"
    assert rewrites.max() > 1  # reachable devices were re-programmed again
    assert model.counters()["failed_devices"] >= out_of_reach
