"""A policy that raises or returns nonsense stops the run with a message naming the policy and
what it returned; the model can go on under another policy."""

from __future__ import annotations

import numpy as np
import pytest

from controller.firmware import ChipModel, PolicyError, make_environment
from controller.firmware.policies import (
    BasePolicy,
    CorrectionJob,
    ProbePlan,
    ThresholdPolicy,
    load_policy,
)
from tests.controller.helpers import make_mapping, toy_chip, toy_twin

HOUR = 3600.0


class Bad(ThresholdPolicy):
    """A threshold policy that misbehaves in one method, in one way."""

    name = "bad"

    def __init__(self, method: str, value, **kw):
        super().__init__(**kw)
        self.method, self.value = method, value

    def _maybe(self, method, normal):
        if method != self.method:
            return normal()
        if isinstance(self.value, Exception):
            raise self.value
        return self.value

    def next_wake_s(self, view):
        return self._maybe("next_wake_s", lambda: super(Bad, self).next_wake_s(view))

    def probe_plan(self, view):
        return self._maybe("probe_plan", lambda: super(Bad, self).probe_plan(view))

    def decide(self, view, report):
        return self._maybe("decide", lambda: super(Bad, self).decide(view, report))

    def pulse_scheme(self, view, job):
        return self._maybe("pulse_scheme", lambda: super(Bad, self).pulse_scheme(view, job))


def _model(policy):
    cfg = toy_chip(2, 16, 16)
    twin, cid = toy_twin(cfg)
    mapped = make_mapping(cfg, [(16, 16), (16, 4)])
    model = ChipModel(make_environment(), twin, cid, mapped, policy, compensation_factory=None)
    model.start()
    return model


CASES = [
    ("next_wake_s", -5.0, r"policy 'bad': next_wake_s\(\) returned -5.0: the interval must be > 0"),
    ("next_wake_s", float("nan"), r"next_wake_s\(\) returned nan: expected seconds > 0 or None"),
    ("next_wake_s", "soon", r"next_wake_s\(\) returned 'soon'"),
    ("probe_plan", ProbePlan(tiles=(7,)), r"probe_plan\(\) returned .*unknown tile 7"),
    ("probe_plan", ProbePlan(arrays=(5,)), r"arrays must be distinct values of POS, NEG, DIFF"),
    ("probe_plan", ProbePlan(rows_fraction=2.0), r"rows_fraction must be in \(0, 1\]"),
    ("probe_plan", ProbePlan(pairs=(1,)), r"pair 1: the chip has pairs 0\.\.0 per weight"),
    ("decide", [CorrectionJob(0, pos=np.array([1]), pair=1)], r"pair 1: the chip has pairs 0"),
    ("decide", [CorrectionJob(99, pos=np.array([1]))], r"decide\(\) returned .*unknown tile 99"),
    ("decide", [CorrectionJob(0, pos=np.array([10_000]))], r"pos out of range 0\.\.255"),
    ("decide", [CorrectionJob(0, neg=np.array([3, 3]))], r"neg contains duplicates"),
    ("decide", [CorrectionJob(0, pos=np.array([0.5]))], r"pos must be a 1-D array of integer"),
    ("decide", "everything", r"decide\(\) returned 'everything': expected a list"),
    ("decide", RuntimeError("boom"), r"policy 'bad': decide\(\) raised RuntimeError: boom"),
    ("pulse_scheme", None, None),  # None means "the default scheme": allowed
    ("pulse_scheme", 42, r"pulse_scheme\(\) returned 42: expected a PulseScheme"),
]


@pytest.mark.parametrize(("method", "value", "message"), CASES)
def test_a_misbehaving_policy_stops_the_run_with_a_message(method, value, message):
    """The error names the policy, the method and what it returned; time stops there."""
    model = _model(Bad(method, value, threshold=0.01))
    if message is None:
        model.advance(2 * HOUR)
        assert model.error is None and model.counters()["corrections"] > 0
        return
    with pytest.raises(PolicyError, match=message):
        model.advance(10 * HOUR)
    assert model.error is not None
    assert model.env.now < 2 * HOUR  # stopped at the first bad answer, not at the end
    ev = model.ledger.events[-1]
    assert ev.kind == "policy_error" and ev.policy == "bad"
    assert "bad" in ev.detail["message"]
    # the same error again until the policy is replaced
    with pytest.raises(PolicyError):
        model.advance(10 * HOUR)


def test_after_a_policy_error_another_policy_takes_over():
    """set_policy clears the error and monitoring resumes from the current time."""
    model = _model(Bad("decide", RuntimeError("boom")))
    with pytest.raises(PolicyError):
        model.advance(3 * HOUR)
    stopped = model.env.now
    model.set_policy(load_policy("threshold", {"interval_s": HOUR}))
    model.advance(stopped + 2 * HOUR + 1)
    assert model.error is None and model.counters()["corrections"] > 0
    assert model.ledger.totals["policy"].events == 1


def test_a_replacement_policy_failing_at_start_leaves_the_running_one():
    """set_policy with a policy whose start() raises is refused; the running policy goes on."""

    class Broken(BasePolicy):
        name = "broken"

        def start(self, view):
            raise KeyError("levels")

    model = _model(load_policy("threshold", {"interval_s": HOUR}))
    model.advance(2 * HOUR + 1)
    before = (model.policy_name, len(model.ledger.events), model.counters()["corrections"])
    with pytest.raises(PolicyError, match=r"policy 'broken': start\(\) raised KeyError"):
        model.set_policy(Broken())
    assert (model.policy_name, len(model.ledger.events), model.counters()["corrections"]) == before
    model.advance(5 * HOUR + 1)
    assert model.error is None and model.counters()["corrections"] > before[2]


def test_a_policy_failing_at_start_is_reported_too():
    """An exception in start() stops the run with the policy's name."""

    class Broken(BasePolicy):
        name = "broken"

        def start(self, view):
            raise KeyError("levels")

    model = _model(Broken())
    with pytest.raises(PolicyError, match=r"policy 'broken': start\(\) raised KeyError"):
        model.advance(HOUR)


def test_an_evaluator_failure_stops_the_run_and_is_recorded():
    """An evaluation that raises stops the run at that instant with an 'error' event."""

    def broken(mvm, comp):
        raise ValueError("no test images")

    model = _model(ThresholdPolicy())
    model.evaluations.evaluator = broken
    model.schedule_evaluation(HOUR / 2)
    with pytest.raises(ValueError, match="no test images"):
        model.advance(3 * HOUR)
    assert model.env.now == HOUR / 2
    assert model.ledger.events[-1].kind == "error"
