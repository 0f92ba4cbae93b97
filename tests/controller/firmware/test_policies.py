"""Policies: loading, the built-ins' behaviour on a small chip, the example user policy."""

from __future__ import annotations

import numpy as np
import pytest

from controller.firmware import ChipModel, make_environment
from controller.firmware.policies import (
    BUILTIN,
    PolicyLoadError,
    ThresholdPolicy,
    expected_drift_factor,
    load_policy,
    mu_nu,
)
from tests.controller.helpers import make_mapping, toy_chip, toy_gdc_factory, toy_twin

HOUR, DAY = 3600.0, 86400.0


def _model(policy, seed=0, shapes=((32, 32), (32, 8)), n_tiles=2, **kw):
    cfg = toy_chip(n_tiles, 32, 32, seed=seed, **kw)
    twin, cid = toy_twin(cfg)
    mapped = make_mapping(cfg, list(shapes), seed=seed)
    env = make_environment()
    model = ChipModel(env, twin, cid, mapped, policy, compensation_factory=toy_gdc_factory)
    model.start()
    return model, twin, cid


def test_every_builtin_loads_by_name():
    """Every built-in policy is built by its name with default parameters."""
    for name, cls in BUILTIN.items():
        policy = load_policy(name)
        assert isinstance(policy, cls) and policy.name == name


def test_unknown_policy_and_bad_parameters_are_refused():
    """An unknown name, a missing module and a refused parameter each raise PolicyLoadError."""
    with pytest.raises(PolicyLoadError, match="unknown policy 'nope'"):
        load_policy("nope")
    with pytest.raises(PolicyLoadError, match="cannot import"):
        load_policy("no_such_package.mod:Cls")
    with pytest.raises(PolicyLoadError, match="interval_s: duration -1 is negative"):
        load_policy("threshold", {"interval_s": -1})
    with pytest.raises(PolicyLoadError, match="no_such_param: unknown parameter"):
        load_policy("threshold", {"no_such_param": 1})


def test_mu_nu_and_expected_drift_follow_aihwkit():
    """mu_nu is the mean of aihwkit's drift exponents; the factor is ((t + t0)/t0)^-mu_nu."""
    import torch
    from aihwkit.inference.noise.pcm import PCMLikeNoiseModel

    nm = PCMLikeNoiseModel(g_max=25.0)
    for g_us in (0.5, 3.0, 12.5, 25.0):
        with torch.random.fork_rng():
            torch.manual_seed(1)
            nu = nm.generate_drift_coefficients(torch.full((200_000,), g_us)).numpy()
        assert float(mu_nu(np.array([g_us / 25.0]))[0]) == pytest.approx(nu.mean(), rel=0.02)
    f = expected_drift_factor(np.array([3600.0]), np.array([25.0]), 25.0, t0_s=nm.t_0)
    assert f[0] == pytest.approx((3620 / 20) ** -0.049, rel=1e-9)


def test_threshold_corrects_drifted_devices_and_none_does_not():
    """After an hour, `threshold` corrects devices; `none` never wakes, probes or corrects."""
    m, _, _ = _model(load_policy("threshold"))
    m.advance(HOUR + 1)
    assert m.counters()["corrections"] > 0 and m.counters()["devices_corrected"] > 0
    assert m.ledger.totals["probe"].events == 2
    n, _, _ = _model(load_policy("none"))
    n.advance(DAY)
    assert (
        n.counters()["corrections"] == 0
        and "probe" not in n.ledger.totals
        and n.monitor.wakeups == 0
    )


def test_drift_aware_rewrites_far_fewer_devices_than_threshold():
    """Dividing reads by the expected drift stops ordinary drift from triggering rewrites."""
    only = {"rewrite": "devices"}  # the devices selected, not the columns they are in
    for read_noise, ratio in ((0.0, 0.25), (1.0, 0.6)):
        t, _, _ = _model(load_policy("threshold", only), read_noise_scale=read_noise)
        t.advance(DAY)
        d, _, _ = _model(load_policy("drift_aware", only), read_noise_scale=read_noise)
        d.advance(DAY)
        assert t.counters()["devices_corrected"] > 0
        # what remains is nu spread and programming noise, and a single read's 1/f noise
        # (about 0.04 g_max at the top level, near the threshold itself)
        assert d.counters()["devices_corrected"] < ratio * t.counters()["devices_corrected"]


def test_periodic_refresh_reprograms_everything_without_probing():
    """`periodic_refresh` rewrites every device of the network once per interval, no probes."""
    m, _, _ = _model(load_policy("periodic_refresh", {"interval_s": DAY}))
    m.advance(3 * DAY + 1)
    used_devices = 2 * int(m.firmware.used.sum())
    assert m.counters()["corrections"] == 3 * len(m.firmware.tiles)
    assert m.counters()["devices_corrected"] == 3 * used_devices
    assert "probe" not in m.ledger.totals
    # every used device was written at the last refresh
    last = m.firmware.last_write_s[:, :, :, :][np.stack([m.firmware.used] * 2, axis=1)]
    assert np.all(last >= 3 * DAY)


def test_adaptive_checks_thin_out_as_devices_age():
    """`adaptive` wakes less and less often: drift slows with the log of time."""
    # devices alone: whole-column rewrites would keep the devices young (and the checks hourly)
    m, _, _ = _model(load_policy("adaptive", {"base_interval_s": HOUR, "rewrite": "devices"}))
    m.advance(2 * DAY)
    wake_times = [e.start_s for e in m.ledger.events if e.kind == "probe" and e.tile == 0]
    gaps = np.diff([0.0, *wake_times])
    assert gaps[0] == pytest.approx(HOUR, rel=1e-6)
    assert gaps[-1] > 2 * HOUR
    assert np.all(np.diff(gaps) > -1e-6)


def test_budget_limits_correction_energy_per_day():
    """`budget` keeps a day's correction energy near its budget, worst devices first."""
    t, _, _ = _model(load_policy("threshold"))
    t.advance(DAY)
    per_day = t.ledger.totals["correction"].energy_pj
    budget = per_day / 10
    b, _, _ = _model(load_policy("budget", {"budget_pj_per_day": budget}))
    b.advance(2 * DAY)
    ev = [e for e in b.ledger.events if e.kind == "correction"]
    assert ev, "the budget policy corrected nothing"
    for day in (0, 1):
        spent = sum(e.energy_pj + e.controller_energy_pj for e in ev
                    if day * DAY <= e.end_s < (day + 1) * DAY)  # fmt: skip
        # the cost per device is estimated from the jobs so far: allow a generous margin
        assert spent < 2.0 * budget
    assert b.counters()["devices_corrected"] < 0.5 * 2 * t.counters()["devices_corrected"]


def test_tile_scope_uses_the_papers_drift_metric():
    """With scope='tile', a tile is corrected only when its mean |y_t - y_0| exceeds theta."""
    never = ThresholdPolicy(threshold=10.0, scope="tile")
    m, _, _ = _model(never)
    m.advance(DAY + 1)
    assert m.counters()["corrections"] == 0 and m.monitor.wakeups == 24
    always = ThresholdPolicy(threshold=1e-6, scope="tile")
    a, _, _ = _model(always)
    a.advance(HOUR + 1)
    assert a.counters()["corrections"] == 2


def test_example_policy_loads_by_dotted_path_and_by_file_and_runs():
    """The shipped example policy loads by dotted path and by file path, and corrects."""
    p1 = load_policy("scenarios.examples.level_guard:LevelGuard", {"min_level": 2})
    p2 = load_policy("scenarios/examples/level_guard.py:LevelGuard")
    assert p1.name == p2.name == "level_guard"
    p = load_policy(
        "scenarios.examples.level_guard:LevelGuard",
        {"min_level": 1, "threshold": 0.01, "rows_fraction": 0.25},
    )
    m, _, _ = _model(p)
    m.advance(4 * HOUR + 1)
    probes = [e for e in m.ledger.events if e.kind == "probe"]
    assert {e.detail["rows"] for e in probes} == {8}  # a quarter of 32 rows per wake-up
    assert p.checked > 0 and p.corrected > 0 and m.counters()["corrections"] > 0
