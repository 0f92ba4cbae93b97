"""The firmware's seams: processes driven with a fake context and fake collaborators (no
ChipModel, no twin), the stepping loop on a bare SimPy environment, the named quantities."""

from __future__ import annotations

import time
from types import SimpleNamespace

import numpy as np
import pytest
import simpy

from controller.firmware.config import ControllerConfig
from controller.firmware.context import ChipContext
from controller.firmware.firmware import Firmware, FirmwareView
from controller.firmware.guard import GuardedPolicy
from controller.firmware.ledger import Ledger
from controller.firmware.monitor import DriftMonitor, tile_reading
from controller.firmware.policies import POS, BasePolicy, CorrectionJob, ThresholdPolicy
from controller.firmware.policies.base import MonitorReport
from controller.firmware.quantities import JobStats, counters
from controller.firmware.stepping import advance_to, step_until
from controller.firmware.tiles import TileLocks
from controller.firmware.trigger import CorrectionTrigger
from tests.controller.helpers import make_mapping, toy_chip

HOUR = 3600.0
PROBE_LATENCY_S = 1e-6


class FakeTwin:
    """Answers probes with every device exactly at its level (codes of q/4 uS)."""

    def __init__(self, fw: Firmware, trace: list) -> None:
        self.fw, self.trace = fw, trace
        self.scale_us = float(fw.q_us[0, 0]) / 4

    def probe(self, chip_id, tile, rows, array, at_s, col_start=0, col_count=None):
        self.trace.append(("probe", at_s))
        cols = slice(col_start, col_start + col_count)
        codes = np.stack([self.fw.target_us[tile, a][rows, cols] / self.scale_us for a in (0, 1)])
        return SimpleNamespace(kind="probe", values=np.rint(codes).astype(np.int32),
                               scale_us=self.scale_us, latency_s=PROBE_LATENCY_S,
                               energy_pj=2.0, pulses=0)  # fmt: skip


def _context(env: simpy.Environment, trace: list) -> tuple[ChipContext, Firmware]:
    cfg = toy_chip(1, 8, 8)
    fw = Firmware(cfg.n_tiles, cfg.tile_rows, cfg.tile_cols, cfg.g_max_us)
    fw.load(make_mapping(cfg, [(8, 8)]))
    view = FirmwareView(fw, now=lambda: env.now, t0_s=20.0, energy=dict,
                        corrections=lambda: 0, programmed_at=lambda: 0.0)  # fmt: skip
    ctx = ChipContext(env, FakeTwin(fw, trace), "chip", view, Ledger(), TileLocks(env),
                      ControllerConfig())  # fmt: skip
    return ctx, fw


class FakeTrigger:
    """Records what the monitor hands it; answers with one (pretend) job outcome."""

    def __init__(self, env: simpy.Environment, trace: list) -> None:
        self.env, self.trace = env, trace

    def submit(self, report, policy, mode="policy"):
        self.trace.append(("trigger", self.env.now, report, policy.name, mode))
        done = self.env.event()
        done.succeed(["a job outcome"])
        return done


def test_the_monitor_waits_for_due_work_then_probes_and_hands_its_report_and_policy_on():
    """At each wake-up the monitor first waits for the work due then (before_probe), probes
    through the twin at that moment, hands report and policy to the trigger, and lets the
    after-correction work run; it never sees a ChipModel."""
    env, trace, errors = simpy.Environment(), [], []
    ctx, _ = _context(env, trace)

    def before_probe(at_s):
        trace.append(("before", at_s))
        yield env.timeout(0.5)  # an evaluation due at the wake-up holds the tiles

    def after_correction(at_s):
        trace.append(("after", at_s))
        yield env.timeout(0)

    monitor = DriftMonitor(ctx, FakeTrigger(env, trace), before_probe, after_correction,
                           errors.append)  # fmt: skip
    monitor.start(GuardedPolicy(ThresholdPolicy(interval_s=HOUR)), anchor_s=0.0)
    env.run(until=2 * HOUR + 10)
    assert errors == [] and monitor.wakeups == 2
    kinds = [t[0] for t in trace]
    assert kinds == ["before", "probe", "trigger", "after"] * 2
    assert [t[1] for t in trace if t[0] == "probe"] == [HOUR + 0.5, 2 * HOUR + 0.5]
    _, at_s, report, policy, mode = trace[2]
    assert (at_s, policy, mode) == (HOUR + 0.5 + PROBE_LATENCY_S, "threshold", "policy")
    # every device read exactly at its level: no drift, and the metrics say so
    assert report.tiles[0].drift_metric == 0.0 and report.tiles[0].max_distance == 0.0
    assert monitor.tile_metrics[0]["at_s"] == 2 * HOUR + 0.5
    probes = [e for e in ctx.ledger.events if e.kind == "probe"]
    assert [e.start_s for e in probes] == [HOUR + 0.5, 2 * HOUR + 0.5]
    assert all(e.policy == "" and e.energy_pj == 2.0 for e in probes)


def test_a_policy_error_in_the_monitor_goes_to_its_error_callback():
    """A policy that answers nonsense stops monitoring through on_error; the simulation
    itself goes on (nothing is raised into SimPy)."""

    class Negative(BasePolicy):
        name = "negative"

        def next_wake_s(self, view):
            return -1.0

    env, trace, errors = simpy.Environment(), [], []
    ctx, _ = _context(env, trace)
    idle = lambda at_s: iter(())  # noqa: E731 - nothing due
    monitor = DriftMonitor(ctx, FakeTrigger(env, trace), idle, idle, errors.append)
    monitor.start(GuardedPolicy(Negative()), anchor_s=0.0)
    env.run(until=HOUR)
    assert len(errors) == 1 and "the interval must be > 0" in str(errors[0])
    assert trace == [] and monitor.wakeups == 0


def test_the_trigger_asks_the_reports_policy_and_passes_the_monitors_reads_on():
    """The trigger decides with the policy that came with the report, gives each job to the
    pulse generator with the monitor's reads of its devices, and tells the policy each
    outcome."""
    env, trace = simpy.Environment(), []
    ctx, fw = _context(env, trace)
    rows = np.arange(8)
    g = {a: fw.target_us[0, a][rows] + 0.5 for a in (0, 1)}
    report = MonitorReport(at_s=0.0, tiles={0: tile_reading(ctx.view, 0, rows, g)})

    class Two(BasePolicy):
        name = "two"
        done: list = []

        def decide(self, view, report):
            return [CorrectionJob(0, pos=np.array([1, 9]), reason="test")]

        def on_job_done(self, view, outcome):
            self.done.append(outcome)

    class FakePulses:
        def submit(self, job, scheme, first_read_us=None):
            trace.append((job.reason, first_read_us))
            return env.process(self._job(job))

        def _job(self, job):
            yield env.timeout(1.0)
            return SimpleNamespace(job=job, end_s=env.now)

    trigger = CorrectionTrigger(ctx, FakePulses())
    done = trigger.submit(report, GuardedPolicy(Two()))
    env.run(until=done)
    ((reason, first),) = trace
    assert reason == "test" and set(first) == {POS}
    assert np.array_equal(first[POS], g[POS].reshape(-1)[[1, 9]])
    assert len(done.value) == 1 and Two.done == done.value


def test_stepping_stops_before_or_after_the_events_due_at_the_target():
    """advance_to(T, inclusive=False) leaves the events due at T waiting; inclusive runs them
    and what they schedule at T."""
    env, seen = simpy.Environment(), []

    def at(t, tag):
        yield env.timeout(t)
        seen.append(tag)
        yield env.timeout(0)
        seen.append(tag + "+0")

    env.process(at(1.0, "a"))
    env.process(at(2.0, "b"))
    never = lambda: False  # noqa: E731
    assert advance_to(env, 2.0, False, never) and env.now == 2.0
    assert seen == ["a", "a+0"]
    assert advance_to(env, 2.0, True, never) and seen == ["a", "a+0", "b", "b+0"]


def test_stepping_stops_at_a_failure_and_at_the_wall_clock_budget():
    """The loop stops as soon as the run has failed, and gives up (False) once the deadline
    has passed, to be called again."""
    env, failed = simpy.Environment(), []

    def ticker():
        for i in range(100):
            yield env.timeout(1.0)
            if i == 9:
                failed.append(i)

    env.process(ticker())
    assert advance_to(env, 50.0, True, lambda: bool(failed)) and env.now == 10.0
    failed.clear()
    assert not advance_to(env, 50.0, True, lambda: False, deadline=time.monotonic() - 1)
    assert env.now == 10.0  # nothing ran: the budget was spent already
    assert step_until(env, env.timeout(5.0), lambda: False) and env.now == 15.0


def test_counters_name_upkeep_as_probes_plus_correction_jobs():
    """upkeep_energy_pj is the probes' and the correction jobs' energy (twin + controller),
    nothing else; every kind also has its own energy_<kind>_pj."""
    led = Ledger()
    ops = led.action()
    ops.add(SimpleNamespace(kind="program", energy_pj=100.0, latency_s=0.0, pulses=7))
    led.add("program", 0.0, 1.0, ops=ops)
    for kind, e, ctrl in (("probe", 3.0, 0.5), ("correction", 10.0, 1.5)):
        ops = led.action()
        ops.add(SimpleNamespace(kind="read", energy_pj=e, latency_s=0.0, pulses=2))
        led.add(kind, 1.0, 2.0, ops=ops, controller_energy_pj=ctrl)
    c = counters(led, JobStats(jobs=1, devices=4, failed_devices=1), 1, 0.99)
    assert c["upkeep_energy_pj"] == 3.0 + 0.5 + 10.0 + 1.5
    assert c["energy_program_pj"] == 100.0 and c["energy_correction_pj"] == 11.5
    assert c["correction_pulses"] == 2 and c["corrections"] == 1
    assert c["twin_energy_pj"] == 113.0 and c["controller_energy_pj"] == 2.0
    with pytest.raises(ValueError, match="unknown event kind 'refresh'"):
        led.add("refresh", 2.0, 3.0)
