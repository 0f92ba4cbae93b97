"""What a correction rewrites: whole columns keep drift compensation valid; the alternatives."""

from __future__ import annotations

import numpy as np
import pytest

from controller.firmware import ChipModel, make_environment
from controller.firmware.policies import NEG, POS, CorrectionJob, load_policy
from controller.firmware.policies.rewrites import (
    column_errors,
    expand,
    group_decay,
    matched_targets,
    rewritten_columns,
)
from controller.workloads.datasets import load_dataset
from controller.workloads.mapping import evaluate, map_network, tiles_needed
from controller.workloads.training import train_digital
from device_twin import ChipConfig
from device_twin.registry import ChipRegistry
from tests.controller.helpers import make_mapping, toy_chip, toy_gdc_factory, toy_twin

DAY = 86400.0


def _toy(policy, **chip_kw):
    cfg = toy_chip(2, 32, 32, seed=0, **chip_kw)
    twin, cid = toy_twin(cfg)
    mapped = make_mapping(cfg, [(32, 32), (32, 8)], seed=0)
    model = ChipModel(make_environment(), twin, cid, mapped, policy,
                      compensation_factory=toy_gdc_factory)  # fmt: skip
    model.start()
    return model


def test_a_column_rewrite_takes_every_device_of_the_column_that_holds_a_level():
    """`columns` adds every device of the selected devices' columns with a level above 0 uS,
    on both arrays; `tile` every such device of the tile; `devices` only the selected."""
    model = _toy(load_policy("gdc"))
    view = model.view
    job = CorrectionJob(0, pos=np.array([3 * 32 + 5]), neg=np.array([7 * 32 + 9]))
    cols = expand(view, job, "columns")
    for a, idx in ((POS, cols.pos), (NEG, cols.neg)):
        want = np.flatnonzero(
            (view.used[0] & (view.target_us[0, a] > 0) & np.isin(np.arange(32), [5, 9])).ravel()
        )
        assert set(want) <= set(idx) and set(idx) - set(want) <= {3 * 32 + 5, 7 * 32 + 9}
        assert set(idx % 32) == {5, 9}
    tile = expand(view, job, "tile")
    assert tile.pos.size == int((view.used[0] & (view.target_us[0, POS] > 0)).sum())
    assert expand(view, job, "devices") is job


def test_group_rewrites_write_every_device_of_the_group():
    """A group rewrite programs every device of the group, those within tolerance too (their
    ages must match), and records the write time of each."""
    model = _toy(load_policy("threshold", {"interval_s": "1d"}))
    model.advance(DAY + 1)
    written = model.firmware.last_write_s[0] >= DAY
    ev = [e for e in model.ledger.events if e.kind == "correction" and e.tile == 0]
    assert ev and sum(e.devices for e in ev) == int(written.sum())
    cols = np.flatnonzero(written.any(axis=(0, 1)))
    levels = model.firmware.used[0] & (model.firmware.target_us[0] > 0)
    assert np.array_equal(written[:, :, cols], levels[:, :, cols])


def test_matched_targets_are_levels_times_the_groups_drift():
    """`matched` programs each device to its level times the drift its group shows, and the
    policy expects that factor at its next checks."""
    policy = load_policy("drift_aware", {"interval_s": "1d", "rewrite": "matched",
                                         "compensation": "gdc"})  # fmt: skip
    model = _toy(policy)
    model.advance(DAY - 1)
    report = model.view.last_report
    assert report is None
    model.advance(DAY + 1)
    report = model.view.last_report
    tr = report.tiles[0]
    decay = group_decay(model.view, tr, per_column=False)
    assert np.allclose(decay, decay[0]) and 0.5 < decay[0] < 1.0
    job = CorrectionJob(0, pos=np.array([0, 1]), neg=np.array([2]))
    out, f_pos, _ = matched_targets(model.view, job, decay)
    assert np.allclose(out.target_pos_us, model.view.target_us[0, POS].ravel()[[0, 1]] * f_pos)
    assert policy._scale is not None and np.any(policy._scale < 1.0)


def test_column_errors_are_small_once_compensated_and_grow_with_spread():
    """A column whose weights all drifted by one factor has no error after compensation; a
    device off its level raises its column's error only."""
    model = _toy(load_policy("gdc"), read_noise_scale=0.0)
    view = model.view
    from controller.firmware.policies.base import TileReading

    rows = np.arange(32)
    target = {a: view.target_us[0, a] for a in (POS, NEG)}
    g = {a: 0.7 * target[a] for a in (POS, NEG)}
    tr = TileReading(0, rows, g, target, view.used[0], {}, 0.0, 0.0)
    assert np.allclose(column_errors(view, tr, per_column=True), 0.0, atol=1e-6)
    i = int(np.flatnonzero(target[POS][:, 4] > 0)[0])
    g[POS] = g[POS].copy()
    g[POS][i, 4] *= 1.5
    err = column_errors(view, tr, per_column=True)
    assert err[4] > 0.01 and np.allclose(np.delete(err, 4), 0.0, atol=1e-6)


def test_rewritten_columns_are_found_per_block():
    """The columns a job rewrote whole map to the block columns of the compensation."""
    model = _toy(load_policy("gdc"))
    job = expand(model.view, CorrectionJob(1, pos=np.array([2 * 32 + 3])), "columns")
    cols = rewritten_columns(model.view, model.mapped, [job])
    pos = next(p for p, tm in enumerate(model.mapped.tiles) if tm.tile == 1)
    assert list(cols) == [pos] and np.flatnonzero(cols[pos]).tolist() == [3]
    partial = CorrectionJob(1, pos=np.array([2 * 32 + 3]))
    assert rewritten_columns(model.view, model.mapped, [partial]) == {}


def test_column_refresh_rewrites_whole_the_columns_beyond_its_threshold():
    """`column_refresh` rewrites every device holding a level in exactly the columns whose
    compensated error, in the probe its wake-up read, exceeded the threshold."""
    mixed = 0
    for threshold in (0.06, 0.07, 0.09):
        model = _toy(load_policy("column_refresh", {"threshold": threshold, "baseline": False}))
        model.advance(DAY + 1)
        view, report = model.view, model.view.last_report
        for t, tr in report.tiles.items():
            bad = column_errors(view, tr, per_column=True) > threshold
            levels = view.used[t] & (view.target_us[t] > 0)  # (2, rows, cols)
            written = model.firmware.last_write_s[t] >= DAY
            assert np.array_equal(written, levels & bad[None, None, :])
            mixed += bool(
                bad[levels.any(axis=(0, 1))].any() and not bad[levels.any(axis=(0, 1))].all()
            )
    assert mixed, "no threshold left some columns alone and rewrote others"


def test_column_refresh_counts_only_the_error_drift_added_since_a_rewrite():
    """With a baseline (the default), the first check only measures each column; later a
    column is rewritten once sqrt(e^2 - e0^2) exceeds the threshold, and measured afresh."""
    policy = load_policy("column_refresh", {"threshold": 0.03})
    model = _toy(policy)
    model.advance(DAY + 1)
    assert model.counters()["corrections"] == 0
    base = {t: b.copy() for (_, t), b in policy._base.items()}  # keyed (pair, tile)
    assert all(np.isfinite(b[model.view.used[t].any(axis=0)]).all() for t, b in base.items())
    model.advance(2 * DAY + 1)
    tr = model.view.last_report.tiles[0]
    err = column_errors(model.view, tr, per_column=True)
    grown = np.sqrt(np.maximum(err**2 - base[0] ** 2, 0.0)) > 0.03
    written = (model.firmware.last_write_s[0] >= 2 * DAY).any(axis=(0, 1))
    assert np.array_equal(written, grown) and grown.any() and not grown.all()
    assert np.isnan(policy._base[(0, 0)][grown]).all()


# --- on a trained network: corrections never make the chip worse -----------------------------
@pytest.fixture(scope="module")
def digits():
    desc = train_digital("digits_mlp").description
    config = ChipConfig(n_tiles=tiles_needed(desc, 64, 64), tile_rows=64, tile_cols=64, seed=0)
    return config, map_network(desc, "multiplicative", config), load_dataset("digits").test


def _after_minus_before(digits, params: dict, seeds=(0, 1), name="drift_aware") -> float:
    """Mean over instants (days 1..6, daily checks) and seeds of the accuracy right after the
    corrections of an instant minus the accuracy just before them."""
    config, mapped, test = digits
    diffs = []
    for seed in seeds:
        cfg = config.model_copy(update={"seed": seed})
        twin = ChipRegistry()
        cid = twin.create_chip(cfg)
        policy = load_policy(name, {"interval_s": "1d", **params})
        model = ChipModel(
            make_environment(),
            twin,
            cid,
            mapped,
            policy,
            chip_config=cfg,
            evaluator=lambda mvm, c: {"accuracy": evaluate(mapped, mvm, test, c)},
        )
        model.schedule_evaluations([d * DAY for d in range(1, 7)])
        rows = model.simulate(6 * DAY).timeline
        before = {
            r["scheduled_s"]: r["accuracy"] for r in rows if r["phase"] == "before_correction"
        }
        after = {r["scheduled_s"]: r["accuracy"] for r in rows if r["phase"] == "after_correction"}
        assert after and set(after) <= set(before)
        diffs += [after[t] - before[t] for t in after]
    return float(np.mean(diffs))


def test_a_partial_correction_does_not_lower_the_accuracy_right_after_it(digits):
    """drift_aware corrects a share of the devices; rewriting their whole columns (the
    default) leaves the accuracy right after a correction no lower than just before it."""
    assert _after_minus_before(digits, {}) >= -0.01
    assert _after_minus_before(digits, {"threshold": 0.04}, name="column_refresh") >= -0.01


def test_rewriting_only_the_selected_devices_lowers_it(digits):
    """Rewriting only the selected devices puts fresh devices beside drifted ones under one
    compensation factor: the accuracy right after a correction falls (the defect fixed)."""
    assert _after_minus_before(digits, {"rewrite": "devices", "compensation": "gdc"}) < -0.03
