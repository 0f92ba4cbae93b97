"""The twin's ProgramVerify loop and the pulse generator's step-by-step loop: the same physics,
so the same devices, outcomes and energies."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import stats

from controller.firmware import ChipModel, make_environment
from controller.firmware.policies import ThresholdPolicy
from tests.controller.helpers import make_mapping, toy_chip, toy_gdc_factory, toy_twin

HOUR = 3600.0
STATE = ("g_prog_us", "nu", "t_write_s", "write_count")


class _Outcomes(ThresholdPolicy):
    """``threshold``, keeping every job's outcome."""

    def __init__(self, **kw):
        super().__init__(**kw)
        self.outcomes = []

    def on_job_done(self, view, outcome):
        self.outcomes.append(outcome)


def _run(loop: str, seed: int, hours: int = 4, **params):
    cfg = toy_chip(2, 32, 32, seed=seed)
    twin, cid = toy_twin(cfg)
    mapped = make_mapping(cfg, [(32, 32), (32, 8)], seed=seed)
    policy = _Outcomes(threshold=0.05, tolerance=0.03, loop=loop, **params)
    model = ChipModel(make_environment(), twin, cid, mapped, policy,
                      compensation_factory=toy_gdc_factory)  # fmt: skip
    model.start()
    model.advance(hours * HOUR + 60)
    return twin.with_chip(cid, lambda c: c), model, policy.outcomes


@pytest.mark.parametrize(
    "params",
    [{"method": "auto"}, {"method": "pulse", "verify_reads": 2}, {"method": "program"},
     {"method": "program", "max_iterations": 4}],
)  # fmt: skip
def test_both_loops_leave_every_device_bit_for_bit_the_same(params):
    """Hours of hourly corrections on the twin's loop and step by step: every device's state,
    every job's converged and failed devices and final deviations, the pulses, re-programs,
    steps and energies (twin and controller) are the same."""
    chip_t, model_t, out_t = _run("twin", 3, **params)
    chip_s, model_s, out_s = _run("steps", 3, **params)
    for name in STATE:
        assert np.array_equal(getattr(chip_t, name), getattr(chip_s, name)), name
    assert len(out_t) == len(out_s) > 0
    for a, b in zip(out_t, out_s, strict=True):
        assert (a.start_s, a.pulses, a.reprograms, a.iterations) == (
            b.start_s, b.pulses, b.reprograms, b.iterations)  # fmt: skip
        assert a.end_s == pytest.approx(b.end_s, abs=1e-9)
        assert a.energy_pj == pytest.approx(b.energy_pj, rel=1e-12)
        assert a.controller_energy_pj == pytest.approx(b.controller_energy_pj, rel=1e-12)
        for k in (0, 1):
            order_a = np.argsort(np.concatenate([a.converged[k], a.failed[k]]), kind="stable")
            order_b = np.argsort(np.concatenate([b.converged[k], b.failed[k]]), kind="stable")
            assert set(a.converged[k].tolist()) == set(b.converged[k].tolist())
            assert set(a.failed[k].tolist()) == set(b.failed[k].tolist())
            assert np.array_equal(a.final_deviation[k][order_a], b.final_deviation[k][order_b])
    assert model_t.firmware.last_write_s == pytest.approx(model_s.firmware.last_write_s, abs=1e-9)
    assert chip_t.ledger.total_energy_pj == pytest.approx(chip_s.ledger.total_energy_pj, rel=1e-12)
    counts_t, counts_s = model_t.counters(), model_s.counters()
    assert counts_t == pytest.approx(counts_s, rel=1e-12)  # energies summed in another order
    assert "program_verify" in model_t.ledger.twin_calls_by_op
    assert "program_verify" not in model_s.ledger.twin_calls_by_op


def _job_stats(outcomes) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    dev = np.concatenate([np.concatenate([o.final_deviation[0], o.final_deviation[1]])
                          for o in outcomes])  # fmt: skip
    failed = np.array([o.n_failed / o.job.devices for o in outcomes])
    energy = np.array([o.energy_pj / o.job.devices for o in outcomes])
    return dev, failed, energy


def test_both_loops_give_the_same_statistics_on_independent_chips():
    """On chips of different seeds (independent draws), the two loops give the same
    distribution of final deviations (two-sample KS test), the same failed fraction and the
    same energy per corrected device (means within four standard errors)."""
    twin_runs = [_run("twin", s, hours=3)[2] for s in (10, 11, 12)]
    step_runs = [_run("steps", s, hours=3)[2] for s in (20, 21, 22)]
    dev_t, fail_t, pj_t = _job_stats([o for r in twin_runs for o in r])
    dev_s, fail_s, pj_s = _job_stats([o for r in step_runs for o in r])
    assert dev_t.size > 2000 and dev_s.size > 2000
    assert stats.ks_2samp(dev_t, dev_s).pvalue > 1e-3
    for x, y in ((fail_t, fail_s), (pj_t, pj_s)):
        se = np.sqrt(x.var(ddof=1) / x.size + y.var(ddof=1) / y.size)
        assert abs(x.mean() - y.mean()) < 4 * se + 1e-12, (x.mean(), y.mean(), se)


@pytest.mark.parametrize("pairs", ["all", "lsp"])
def test_on_two_pairs_per_weight_both_loops_write_the_same_devices(pairs):
    """On a chip with two pairs per weight, jobs of either pair (every pair, or the least
    significant one only) leave the same devices on both loops, and the firmware's write
    times agree."""
    from controller.firmware.policies import load_policy
    from controller.workloads.mapping import map_network, tiles_needed
    from controller.workloads.network import NetworkDescription
    from controller.workloads.quantisers import DualPairQuantiser, MultiplicativeQuantiser
    from controller.workloads.zoo import digits_mlp
    from device_twin import ChipConfig

    chips = []
    for loop in ("twin", "steps"):
        torch.manual_seed(0)
        desc = NetworkDescription.from_torch(digits_mlp(), (1, 8, 8), name="digits_mlp")
        cfg = ChipConfig(n_tiles=tiles_needed(desc, 64, 64), tile_rows=64, tile_cols=64, seed=3,
                         pairs_per_weight=2, significance_factor=2.0)  # fmt: skip
        quantiser = MultiplicativeQuantiser(lsp_trim=True) if pairs == "lsp" else None
        mapped = map_network(desc, quantiser or DualPairQuantiser(), cfg)
        twin, cid = toy_twin(cfg)
        params = {"interval_s": HOUR, "threshold": 0.02, "tolerance": 0.02, "pairs": pairs,
                  "loop": loop}  # fmt: skip
        model = ChipModel(make_environment(), twin, cid, mapped, load_policy("threshold", params))
        model.start()
        model.advance(2 * HOUR + 60)
        jobs = [e.detail for e in model.ledger.events if e.kind == "correction"]
        assert jobs
        chips.append((twin.with_chip(cid, lambda c: c), model.firmware.last_write_s.copy()))
    (a, wa), (b, wb) = chips
    for name in STATE:
        assert np.array_equal(getattr(a, name), getattr(b, name)), name
    assert wa == pytest.approx(wb, abs=1e-9)
