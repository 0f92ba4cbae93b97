"""Firmware on a chip with two pairs per weight (Mackin 2022): programming every pair,
probing every pair, correcting both pairs or the least significant one only."""

from __future__ import annotations

import numpy as np
import torch

from controller.firmware import ChipModel, make_environment
from controller.firmware.policies import load_policy
from controller.workloads.mapping import map_network, tiles_needed
from controller.workloads.network import NetworkDescription
from controller.workloads.quantisers import DualPairQuantiser, MultiplicativeQuantiser
from controller.workloads.zoo import digits_mlp
from device_twin import Array, ChipConfig
from tests.controller.helpers import toy_twin

HOUR = 3600.0
F = 2.0


def _model(policy, seed: int = 3, quantiser=None):
    torch.manual_seed(0)
    desc = NetworkDescription.from_torch(digits_mlp(), (1, 8, 8), name="digits_mlp")
    cfg = ChipConfig(n_tiles=tiles_needed(desc, 64, 64), tile_rows=64, tile_cols=64, seed=seed,
                     pairs_per_weight=2, significance_factor=F)  # fmt: skip
    mapped = map_network(desc, quantiser or DualPairQuantiser(), cfg)
    twin, cid = toy_twin(cfg)
    model = ChipModel(make_environment(), twin, cid, mapped, policy)
    model.start()
    return model, twin, cid


def _weight_error(model, twin, cid, at_s: float) -> np.ndarray:
    """|sum_k F^k (G+_k - G-_k) - target| / g_max of every weight in use, read now."""
    fw = model.firmware
    out = []
    for t in fw.tiles:
        read = sum(F**k * np.subtract(*twin.read_devices(cid, t, Array.BOTH, None, at_s, pair=k)
                                      .values) for k in range(2))  # fmt: skip
        target = sum(F**k * (fw.target_us[t, 2 * k] - fw.target_us[t, 2 * k + 1])
                     for k in range(2))  # fmt: skip
        out.append((np.abs(read - target) / fw.g_max_us)[fw.used[t]])
    return np.concatenate(out)


def _corrections(model) -> list[dict]:
    return [e.detail for e in model.ledger.events if e.kind == "correction"]


def test_every_pair_is_programmed_and_probed():
    """Start programs both pairs of every tile to their targets; a wake-up probes both
    pairs of every tile on the same rows, and the report holds a reading of each."""
    policy = load_policy("threshold", {"interval_s": HOUR, "threshold": 1.0})  # never corrects
    model, twin, cid = _model(policy)
    fw = model.firmware
    for t in fw.tiles:
        for k in range(2):
            g = twin.read_devices(cid, t, Array.BOTH, None, 2.0, pair=k).values
            want = fw.target_us[t, 2 * k : 2 * k + 2]
            assert np.abs(g - want)[:, fw.used[t]].mean() < 1.0  # programming noise only
        assert np.any(fw.target_us[t, 2:][:, fw.used[t]] > 0)  # the MSP holds weights
    model.advance(HOUR + 1)
    report = model.view.last_report
    assert set(report.pairs) == {0, 1} and report.tiles is report.pairs[0]
    for t in fw.tiles:
        r0, r1 = report.pairs[0][t], report.pairs[1][t]
        assert r1.pair == 1 and np.array_equal(r0.rows, r1.rows)
        np.testing.assert_array_equal(r1.target_us[0], fw.target_us[t, 2, r1.rows])
    probes = [e.detail for e in model.ledger.events if e.kind == "probe"]
    assert probes and all(p["pairs"] == [0, 1] for p in probes)


def test_threshold_on_all_pairs_corrects_each_pair_to_its_targets():
    """``pairs="all"``: jobs name their pair, both pairs get corrected, and the weights read
    back closer to their targets than without correction."""
    policy = load_policy("threshold", {"interval_s": HOUR, "threshold": 0.02, "tolerance": 0.02})
    model, twin, cid = _model(policy)
    model.advance(HOUR + 60)
    jobs = _corrections(model)
    assert {j["pair"] for j in jobs} == {0, 1}
    fixed = _weight_error(model, twin, cid, model.env.now)
    ref, rtwin, rcid = _model(load_policy("gdc"))
    ref.advance(HOUR + 60)
    drifted = _weight_error(ref, rtwin, rcid, ref.env.now)
    assert np.median(fixed) < 0.5 * np.median(drifted)


def test_lsp_only_correction_writes_the_lsp_and_reads_back_within_tolerance():
    """``pairs="lsp"`` on the paper's levels (MSP) with a trimmed LSP: no MSP device is
    written after programming, most retargeted LSP devices verify within the tolerance, and
    the weights (all pairs read) end far closer to their targets than without correction."""
    policy = load_policy(
        "threshold", {"interval_s": HOUR, "threshold": 0.05, "tolerance": 0.03, "pairs": "lsp"}
    )
    trim = MultiplicativeQuantiser(lsp_trim=True)
    model, twin, cid = _model(policy, quantiser=trim)
    programmed_at = model.programmed_at_s
    model.advance(HOUR + 60)
    jobs = _corrections(model)
    assert jobs and {j["pair"] for j in jobs} == {0}
    converged = sum(j["converged"] for j in jobs)
    assert converged >= 0.75 * (converged + sum(j["failed"] for j in jobs))
    fw = model.firmware
    written = fw.last_write_s.transpose(1, 0, 2, 3)[:, fw.used]  # (array, weights in use)
    assert np.all(written[2:] <= programmed_at + 1.0) and np.any(written[:2] > HOUR)
    err = _weight_error(model, twin, cid, model.env.now)
    ref, rtwin, rcid = _model(load_policy("gdc"), quantiser=trim)
    ref.advance(HOUR + 60)
    assert np.median(err) < 0.4 * np.median(_weight_error(ref, rtwin, rcid, ref.env.now))


def test_lsp_only_corrections_read_back_near_the_targets_their_jobs_carried():
    """Read on the twin right after their job (not through the firmware's own verify reads),
    most LSP devices a ``pairs="lsp"`` check wrote sit within the tolerance of the new target
    its job carried (each was more than the 0.05 threshold away before), nearly all within
    twice it; 1/f read noise of a fresh device is about the tolerance, hence not all."""
    policy = load_policy(
        "threshold", {"interval_s": HOUR, "threshold": 0.05, "tolerance": 0.03, "pairs": "lsp"}
    )
    jobs = []
    decide = policy.decide

    def recording(view, report):
        out = list(decide(view, report))
        jobs.extend(out)
        return out

    policy.decide = recording
    model, twin, cid = _model(policy, quantiser=MultiplicativeQuantiser(lsp_trim=True))
    model.advance(HOUR + 1e-3)
    now = model.env.now
    assert jobs and all(j.pair == 0 for j in jobs)
    assert HOUR < model.firmware.last_write_s.max() < now  # the jobs ran, and ended
    g_max = model.firmware.g_max_us
    miss = []
    for j in jobs:
        for array, dev, target in ((Array.POS, j.pos, j.target_pos_us),
                                   (Array.NEG, j.neg, j.target_neg_us)):  # fmt: skip
            g = twin.read_devices(cid, j.tile, array, dev, now, pair=0).values.ravel()
            miss.append(np.abs(g - target) / g_max)
    miss = np.concatenate(miss)
    assert miss.size > 1000
    assert np.mean(miss <= 0.03) > 0.6 and np.mean(miss <= 0.06) > 0.88


def test_a_column_rewrite_on_two_pairs_rewrites_the_column_of_the_pair_it_corrects():
    """``rewrite: columns`` (the default) on two pairs: a correction of pair k rewrites every
    device of pair k holding a level in each column it touches, and none of the other pair's
    columns it did not correct."""
    policy = load_policy("threshold", {"interval_s": HOUR, "threshold": 0.02, "tolerance": 0.02})
    model, _twin, _cid = _model(policy)
    model.advance(HOUR + 60)
    fw = model.firmware
    jobs = [e for e in model.ledger.events if e.kind == "correction"]
    assert jobs
    for t in fw.tiles:
        for k in range(2):
            written = fw.last_write_s[t, 2 * k : 2 * k + 2] >= HOUR  # (2, rows, cols)
            held = fw.used[t] & (fw.target_us[t, 2 * k : 2 * k + 2] > 0)
            cols = np.flatnonzero(written.any(axis=(0, 1)))
            assert (written | ~held)[:, :, cols].all()
    assert any((fw.last_write_s[t, 2 * k : 2 * k + 2] >= HOUR).any()
               for t in fw.tiles for k in range(2))  # fmt: skip
