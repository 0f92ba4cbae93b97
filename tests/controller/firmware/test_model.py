"""The chip model: corrections verified through the twin, the energy ledger against the
twin's, the order of events at one instant, inference behind busy tiles, realtime pacing."""

from __future__ import annotations

import time

import numpy as np
import pytest

from controller.firmware import ChipModel, make_environment
from controller.firmware.policies import NEG, POS, CorrectionJob, JobOutcome, ThresholdPolicy
from device_twin.chip import Array
from tests.controller.helpers import make_mapping, toy_chip, toy_gdc_factory, toy_twin

HOUR, DAY = 3600.0, 86400.0


def _setup(policy, seed=0, evaluator=None, rows=32, cols=32, **chip_kw):
    cfg = toy_chip(2, rows, cols, seed=seed, **chip_kw)
    twin, cid = toy_twin(cfg)
    mapped = make_mapping(cfg, [(rows, cols), (rows, 8)], seed=seed)
    env = make_environment()
    model = ChipModel(env, twin, cid, mapped, policy, evaluator=evaluator,
                      compensation_factory=toy_gdc_factory)  # fmt: skip
    return model, twin, cid, mapped


class ReadBack(ThresholdPolicy):
    """The paper's threshold policy, reading every corrected device back through the twin."""

    def __init__(self, twin, chip_id, **kw):
        super().__init__(**kw)
        self.twin, self.chip_id = twin, chip_id
        self.checked: list[tuple[JobOutcome, dict[int, np.ndarray]]] = []

    def on_job_done(self, view, outcome):
        t = outcome.job.tile
        reads = {}
        for a in (POS, NEG):
            idx = np.concatenate([outcome.converged[a], outcome.failed[a]])
            if idx.size:
                g = self.twin.read_devices(self.chip_id, t, a, idx, view.now_s).values
                reads[a] = (g - view.target_us[t, a].reshape(-1)[idx]) / view.g_max_us
        self.checked.append((outcome, reads))


class _CountsSetPulses:
    """A twin wrapper that counts the SET pulses of ProgramVerify loops."""

    def __init__(self, twin) -> None:
        self._twin, self.set_pulses = twin, 0

    def __getattr__(self, name):
        return getattr(self._twin, name)

    def program_verify(self, *args, **kw):
        r = self._twin.program_verify(*args, **kw)
        self.set_pulses += r.verify.set_pulses
        return r


@pytest.mark.parametrize("loop", ["twin", "steps"])
@pytest.mark.parametrize("method", ["auto", "pulse"])
def test_corrected_devices_read_back_within_tolerance_or_are_reported_failed(method, loop):
    """After every job, each device reads back (through the twin) within tolerance of its
    level, or it is reported as failed; none is lost or counted twice (on the twin's loop and
    step by step)."""
    cfg_kw = {"read_noise_scale": 0.0}  # a read-back shows the state itself, not a noise draw
    cfg = toy_chip(2, 32, 32, seed=0, **cfg_kw)
    reg, cid = toy_twin(cfg)
    twin = _CountsSetPulses(reg)
    mapped = make_mapping(cfg, [(32, 32), (32, 8)], seed=0)
    model = ChipModel(make_environment(), twin, cid, mapped, None,
                      compensation_factory=toy_gdc_factory)  # fmt: skip
    tol = 0.03
    policy = ReadBack(twin, cid, threshold=0.05, tolerance=tol, method=method, loop=loop)
    model.set_policy(policy)
    model.start()
    model.advance(6 * HOUR + 1)
    assert len(policy.checked) >= 6
    n_failed = n_ok = 0
    for outcome, reads in policy.checked:
        job = outcome.job
        for a, wanted in ((POS, job.pos), (NEG, job.neg)):
            got = np.concatenate([outcome.converged[a], outcome.failed[a]])
            assert np.array_equal(np.sort(got), np.sort(wanted))
            if got.size == 0:
                continue
            n_conv = outcome.converged[a].size
            dev = np.abs(reads[a])
            assert np.all(dev[:n_conv] <= tol + 1e-4), dev[:n_conv].max()
            assert np.all(dev[n_conv:] > tol - 1e-4)
            n_failed += got.size - n_conv
            n_ok += n_conv
    assert n_ok > 0
    assert model.counters()["failed_devices"] == n_failed
    if method == "pulse":
        set_pulses = model.ledger.twin_calls_by_op.get("set_pulse", 0) + twin.set_pulses
        assert set_pulses > 0


def test_a_job_out_of_reprograms_fails_its_devices_without_writing_them():
    """With no re-program allowed, every device outside tolerance is reported failed."""
    from controller.firmware.policies import PulseScheme

    class NoRewrites(ThresholdPolicy):
        def pulse_scheme(self, view, job):
            return PulseScheme(method="program", max_reprograms=0)

    model, twin, cid, _ = _setup(NoRewrites(rewrite="devices"))
    model.start()
    model.advance(HOUR + 1)
    ev = [e for e in model.ledger.events if e.kind == "correction"]
    assert ev and all(e.detail["failed"] == e.devices and e.pulses == 0 for e in ev)
    assert model.ledger.twin_calls_by_op["program"] == 2  # the initial programming only


def _accuracy_like(mapped):
    """An evaluator: mean |w_read - w_target| of tile 0 through identity MVMs (g_max units)."""

    def evaluate(mvm, comp):
        tm = mapped.tiles[0]
        k, n = mapped.shapes[0]
        w = mvm(tm.tile, np.eye(k, dtype=np.float32), 0, 0, n)
        target = (tm.g_target_pos_us - tm.g_target_neg_us)[:k, :n] / mapped.g_max_us
        return {"weight_error": float(np.abs(w - target).mean())}

    return evaluate


def test_ledger_energy_equals_the_twins_reported_energy():
    """The ledger's energy (per operation kind and in total) is what the twin reported."""
    model, twin, cid, mapped = _setup(ThresholdPolicy(), evaluator=None)
    model.evaluations.evaluator = _accuracy_like(mapped)
    model.schedule_evaluations([1.0, HOUR, 5 * HOUR])
    model.start()
    model.advance(2 * HOUR + 10)
    done = model.infer(np.random.default_rng(0).normal(size=(4, 32)).astype(np.float32))
    model.wait(done)
    model.wait(model.trigger_correction(mode="all"))
    model.advance(6 * HOUR + 1)
    twin_ledger = twin.energy_ledger(cid)
    led = model.ledger
    assert set(led.twin_energy_by_op) == set(twin_ledger)
    for kind, entry in twin_ledger.items():
        assert led.twin_energy_by_op[kind] == pytest.approx(entry["energy_pj"], rel=1e-12)
        assert led.twin_calls_by_op[kind] == entry["calls"]
    total = sum(e["energy_pj"] for e in twin_ledger.values())
    assert sum(ev.energy_pj for ev in led.events) == pytest.approx(total, rel=1e-12)
    assert led.twin_energy_pj == pytest.approx(total, rel=1e-12)
    # the controller's digital energy is booked apart, and only where it did work
    assert led.controller_energy_pj > 0
    assert all(ev.controller_energy_pj == 0 for ev in led.events if ev.kind == "program")
    kinds = {ev.kind for ev in led.events}
    assert {"program", "calibration", "probe", "correction", "inference", "evaluation"} <= kinds


def _weight_error_from_reads(model, twin, cid, mapped):
    """An evaluator: mean |w_read - w_target| of tile 0 from device reads (g_max units)."""

    def evaluate(mvm, comp):
        tm = mapped.tiles[0]
        at = model.env.now
        gp = twin.read_devices(cid, tm.tile, POS, None, at).values
        gn = twin.read_devices(cid, tm.tile, NEG, None, at).values
        err = ((gp - gn) - (tm.g_target_pos_us - tm.g_target_neg_us)) / mapped.g_max_us
        return {"weight_error": float(np.abs(err[tm.used]).mean())}

    return evaluate


def test_an_evaluation_at_a_wake_up_sees_the_chip_before_and_after_the_correction():
    """An evaluation at T sees the chip before the correction at T; a second row records the
    state right after it."""
    model, twin, cid, mapped = _setup(ThresholdPolicy(interval_s=HOUR))
    model.evaluations.evaluator = _weight_error_from_reads(model, twin, cid, mapped)
    model.schedule_evaluations([HOUR / 2, HOUR], ["half", "one"])
    model.start()
    model.advance(HOUR + 60)
    rows = {(r["label"], r["phase"]): r for r in model.timeline}
    b, a = "before_correction", "after_correction"
    assert set(rows) == {("half", b), ("one", b), ("one", a)}
    before, after = rows[("one", b)], rows[("one", a)]
    assert before["measured_s"] == HOUR and before["corrections"] == 0
    assert after["measured_s"] > HOUR and after["corrections"] > 0
    assert after["weight_error"] < 0.5 * before["weight_error"]
    assert rows[("half", b)]["weight_error"] < before["weight_error"]
    # and in the ledger: the evaluation at T ended before the first probe at T began
    ev = model.ledger.events
    first_eval = next(e for e in ev if e.kind == "evaluation" and e.start_s == HOUR)
    first_probe = next(e for e in ev if e.kind == "probe")
    assert first_eval.end_s <= first_probe.start_s


def test_a_host_inference_at_a_wake_up_runs_before_its_correction():
    """Advancing to T without the work due at T, an inference made at T sees the chip before
    the correction scheduled at T."""
    model, *_ = _setup(ThresholdPolicy(interval_s=HOUR))
    model.start()
    model.advance(HOUR, inclusive=False)
    assert model.env.now == HOUR and "probe" not in model.ledger.totals
    x = np.ones((2, 32), np.float32)
    res = model.wait(model.infer(x))
    model.advance(HOUR + 60)
    first_probe = next(e for e in model.ledger.events if e.kind == "probe")
    assert res.start_s == HOUR and res.end_s <= first_probe.start_s
    assert model.counters()["corrections"] > 0


def test_inference_waits_for_tiles_under_correction_and_records_its_latency():
    """A host inference queued during a correction cycle never overlaps a probe or a
    correction of a tile; it waits for them, and its latency counts the wait."""
    model, _, _, mapped = _setup(ThresholdPolicy(interval_s=DAY))
    model.start()
    model.advance(HOUR)
    job = model.trigger_correction(mode="all")
    while model.pulses.jobs_running == 0:  # until a correction job holds its tile
        model.env.step()
    x = np.random.default_rng(1).normal(size=(3, 32)).astype(np.float32)
    done = [model.infer(x, label=f"host{i}") for i in range(3)]
    outs = [model.wait(d).y for d in done]
    model.wait(job)
    assert all(o.shape == (3, 8) and np.all(np.isfinite(o)) for o in outs)
    busy = [e for e in model.ledger.events if e.kind in ("correction", "probe")]
    inf = [e for e in model.ledger.events if e.kind == "inference"]
    assert len(inf) == 3 and any(e.kind == "correction" for e in busy)
    for i in inf:
        for b in busy:
            assert i.end_s <= b.start_s or i.start_s >= b.end_s, (i, b)
    assert all(i.detail["queued_s"] > 0 for i in inf)
    assert inf[0].start_s >= min(b.end_s for b in busy if b.kind == "correction")
    stats = model.inference.stats
    assert stats.requests == 3
    assert stats.latency_s_max >= max(i.end_s - i.detail["submitted_s"] for i in inf) - 1e-12


def test_ledger_subscribers_get_every_event_in_order():
    """Subscribers see each ledger event once, in sequence order, as it is recorded."""
    model, *_ = _setup(ThresholdPolicy())
    seen = []
    model.ledger.subscribe(seen.append)
    model.start()
    model.advance(3 * HOUR + 1)
    assert [e.seq for e in seen] == list(range(1, len(model.ledger.events) + 1))
    assert seen == model.ledger.events
    assert all(a.end_s <= b.end_s for a, b in zip(seen, seen[1:], strict=False))


def test_realtime_mode_paces_simulated_time_against_the_wall_clock():
    """At factor 1.0 a few simulated seconds take at least as many wall seconds, at factor 4
    at least a quarter: pacing never runs ahead of the wall clock. (How far behind it a
    loaded machine lags is not asserted: tests never assert on wall time.)"""
    for factor, sim_s in ((1.0, 3.0), (4.0, 4.0)):
        cfg = toy_chip(1, 8, 8)
        twin, cid = toy_twin(cfg)
        mapped = make_mapping(cfg, [(8, 8)])
        env = make_environment(realtime=factor)
        model = ChipModel(env, twin, cid, mapped, ThresholdPolicy(interval_s=0.25),
                          compensation_factory=None)  # fmt: skip
        model.start()
        t0 = time.monotonic()
        model.advance(sim_s)
        wall = time.monotonic() - t0
        expected = sim_s / factor
        assert wall >= 0.97 * expected  # pacing never runs ahead of the wall clock
        assert env.factor == 1.0 / factor  # SimPy's wall seconds per simulated second
        assert model.monitor.wakeups >= int(sim_s / 0.25) - 1


def test_twin_arrays_match_the_policy_constants():
    """The policies' POS/NEG/DIFF are the twin's array numbers."""
    from controller.firmware.policies import DIFF

    assert (int(Array.POS), int(Array.NEG), int(Array.DIFF)) == (POS, NEG, DIFF)
    job = CorrectionJob(0, pos=np.array([1, 2]))
    assert job.devices == 2
