"""The ChipHost service in process (a twin server and a chip host server on loopback, a host
client using only the generated stubs): events, policy errors, validation, security."""

from __future__ import annotations

import json
import threading
import time

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from pcmtwin.v1 import host_pb2
from tests.controller.servers import InProcess, from_tensor, tensor, tiny_network

HOUR = 3600.0


@pytest.fixture
def servers():
    s = InProcess()
    yield s
    s.close()


def _load(stub, policy="threshold", params=None, chip=None, make_room=False):
    return stub.LoadNetwork(host_pb2.LoadNetworkRequest(
        network=tiny_network().to_proto(), quantiser="multiplicative",
        chip_config_json=json.dumps(chip or {"tile_rows": 16, "tile_cols": 16, "seed": 3}),
        policy=host_pb2.PolicySpec(name=policy, params_json=json.dumps(params or {})),
        make_room=make_room,
    ))  # fmt: skip


def _code(call, *args) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as info:
        call(*args)
    return info.value.code(), info.value.details()


def test_the_event_stream_delivers_every_ledger_event_in_order(servers):
    """A subscribed client gets every event of the ledger, in order, replayed and live."""
    stub = servers.stub
    loaded = _load(stub, "threshold", {"interval_s": HOUR})
    got: list[host_pb2.LedgerEvent] = []
    stream = stub.StreamEvents(host_pb2.StreamEventsRequest(after_seq=0))

    def read() -> None:
        try:
            for ev in stream:
                got.append(ev)
        except grpc.RpcError as exc:  # cancelled by the test at the end
            assert exc.code() == grpc.StatusCode.CANCELLED

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    stub.AdvanceTime(host_pb2.AdvanceTimeRequest(to_s=3 * HOUR + 5))
    x = np.random.default_rng(0).normal(size=(5, 16)).astype(np.float32)
    res = stub.Infer(host_pb2.InferRequest(x=tensor(x), label="stream-test"))
    assert from_tensor(res.y).shape == (5, 4)
    stub.TriggerCorrection(host_pb2.TriggerCorrectionRequest(mode=host_pb2.CORRECTION_MODE_ALL))
    stub.AdvanceTime(host_pb2.AdvanceTimeRequest(by_s=2 * HOUR))
    last = stub.GetStatus(host_pb2.GetStatusRequest()).last_event_seq
    deadline = time.monotonic() + 30
    while (not got or got[-1].seq < last) and time.monotonic() < deadline:
        time.sleep(0.02)
    stream.cancel()
    ledger = servers.host.host._loaded.model.ledger.events
    assert [e.seq for e in got[: len(ledger)]] == list(range(1, len(ledger) + 1))
    assert len(got) >= last == len(ledger)
    for sent, kept in zip(got, ledger, strict=False):
        assert (sent.kind, sent.tile, sent.devices, sent.pulses, sent.end_s, sent.energy_pj) == (
            kept.kind,
            kept.tile,
            kept.devices,
            kept.pulses,
            kept.end_s,
            kept.energy_pj,
        )
    kinds = {e.kind for e in got}
    assert {"program", "probe", "correction", "inference"} <= kinds
    assert loaded.weights_on_chip == 16 * 8 + 8 * 4


def test_a_stream_from_after_seq_starts_there(servers):
    """StreamEvents(after_seq=n) replays only the events after n, then goes live."""
    stub = servers.stub
    _load(stub, "threshold")
    stub.AdvanceTime(host_pb2.AdvanceTimeRequest(to_s=2 * HOUR + 1))
    n = stub.GetStatus(host_pb2.GetStatusRequest()).last_event_seq
    stream = stub.StreamEvents(host_pb2.StreamEventsRequest(after_seq=n - 2))
    first = [next(stream), next(stream)]
    stream.cancel()
    assert [e.seq for e in first] == [n - 1, n]


def test_a_policy_error_stops_the_run_and_the_host_stays_up():
    """A user policy returning a negative interval stops the run with a message naming it;
    the server keeps serving, and another policy lets time go on."""
    s = InProcess(allow_user_policies=True)
    try:
        stub = s.stub
        _load(stub, "tests.controller.user_policies:NegativeInterval")
        code, msg = _code(stub.AdvanceTime, host_pb2.AdvanceTimeRequest(to_s=5 * HOUR))
        assert code == grpc.StatusCode.FAILED_PRECONDITION
        assert "policy 'negative_interval': next_wake_s() returned -5.0" in msg
        status = stub.GetStatus(host_pb2.GetStatusRequest())
        assert "negative_interval" in status.error and status.sim_time_s < 2 * HOUR
        health = health_pb2_grpc.HealthStub(s.channel).Check(health_pb2.HealthCheckRequest())
        assert health.status == health_pb2.HealthCheckResponse.SERVING
        x = tensor(np.zeros((1, 16), np.float32))
        code, msg = _code(stub.Infer, host_pb2.InferRequest(x=x))
        assert code == grpc.StatusCode.FAILED_PRECONDITION and "negative_interval" in msg
        stub.SetPolicy(host_pb2.SetPolicyRequest(policy=host_pb2.PolicySpec(name="threshold")))
        after = stub.AdvanceTime(host_pb2.AdvanceTimeRequest(to_s=5 * HOUR))
        assert after.sim_time_s == 5 * HOUR and after.error == "" and after.corrections > 0
        # a policy that raises: the same, with the exception in the message
        stub.SetPolicy(host_pb2.SetPolicyRequest(policy=host_pb2.PolicySpec(
            name="tests.controller.user_policies:RaisesInDecide")))  # fmt: skip
        code, msg = _code(stub.AdvanceTime, host_pb2.AdvanceTimeRequest(by_s=2 * HOUR))
        assert code == grpc.StatusCode.FAILED_PRECONDITION
        assert "policy 'raises_in_decide': decide() raised ZeroDivisionError: firmware bug" in msg
    finally:
        s.close()


def test_user_policies_need_the_servers_permission(servers):
    """A dotted-path policy is refused unless the server allows user policies."""
    code, msg = _code(_load, servers.stub, "tests.controller.user_policies:NegativeInterval")
    assert code == grpc.StatusCode.PERMISSION_DENIED and "--allow-user-policies" in msg


def test_bad_requests_get_clear_codes_and_change_nothing(servers):
    """Malformed or out-of-order requests are refused with the right code; state is kept."""
    stub = servers.stub
    code, _ = _code(stub.Infer, host_pb2.InferRequest(x=tensor(np.zeros((1, 16), np.float32))))
    assert code == grpc.StatusCode.FAILED_PRECONDITION  # nothing loaded yet
    code, _ = _code(stub.AdvanceTime, host_pb2.AdvanceTimeRequest(to_s=1.0))
    assert code == grpc.StatusCode.FAILED_PRECONDITION
    code, msg = _code(_load, stub, "no_such_policy")
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "unknown policy" in msg
    code, msg = _code(_load, stub, "threshold", {"interval_s": -3})
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "interval_s" in msg
    code, msg = _code(_load, stub, "threshold", None, {"tile_rows": -4})
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "tile_rows" in msg
    code, _ = _code(stub.LoadNetwork, host_pb2.LoadNetworkRequest())
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    _load(stub, "threshold")
    stub.AdvanceTime(host_pb2.AdvanceTimeRequest(to_s=HOUR))
    before = stub.GetStatus(host_pb2.GetStatusRequest())
    bad = [
        (stub.AdvanceTime, host_pb2.AdvanceTimeRequest(to_s=10.0), "FAILED_PRECONDITION"),
        (stub.AdvanceTime, host_pb2.AdvanceTimeRequest(to_s=float("nan")), "INVALID_ARGUMENT"),
        (stub.AdvanceTime, host_pb2.AdvanceTimeRequest(by_s=-1.0), "INVALID_ARGUMENT"),
        (stub.AdvanceTime, host_pb2.AdvanceTimeRequest(), "INVALID_ARGUMENT"),
        (stub.Infer, host_pb2.InferRequest(x=tensor(np.zeros((2, 15), np.float32))),
         "INVALID_ARGUMENT"),
        (stub.Infer, host_pb2.InferRequest(x=tensor(np.full((1, 16), np.nan, np.float32))),
         "INVALID_ARGUMENT"),
        (stub.Infer, host_pb2.InferRequest(x=tensor(np.zeros((1, 16), np.int32))),
         "INVALID_ARGUMENT"),
        (stub.Infer, host_pb2.InferRequest(), "INVALID_ARGUMENT"),
        (stub.SetPolicy, host_pb2.SetPolicyRequest(), "INVALID_ARGUMENT"),
        (stub.SetPolicy, host_pb2.SetPolicyRequest(policy=host_pb2.PolicySpec(
            name="threshold", params_json="[1]")), "INVALID_ARGUMENT"),
        (stub.TriggerCorrection, host_pb2.TriggerCorrectionRequest(tiles=[42]), "NOT_FOUND"),
        (stub.TriggerCorrection, host_pb2.TriggerCorrectionRequest(mode=7), "INVALID_ARGUMENT"),
    ]  # fmt: skip
    for call, request, want in bad:
        code, msg = _code(call, request)
        assert code.name == want, (request, msg)
    after = stub.GetStatus(host_pb2.GetStatusRequest())
    assert after.sim_time_s == before.sim_time_s
    assert after.last_event_seq == before.last_event_seq
    assert after.policy == "threshold"


def test_status_reports_time_policy_corrections_energy_and_drift(servers):
    """GetStatus: sim time, policy, corrections, energy by kind and upkeep energy, drift
    metrics per tile."""
    stub = servers.stub
    _load(stub, "threshold", {"interval_s": HOUR})
    s = stub.AdvanceTime(host_pb2.AdvanceTimeRequest(to_s=2 * HOUR + 1))
    assert s.loaded and s.network == "tiny" and s.policy == "threshold"
    assert s.sim_time_s == 2 * HOUR + 1 and s.monitor_wakeups == 2
    assert s.corrections > 0 and s.correction_pulses > 0
    by_kind = s.energy_by_kind_pj
    assert {"program", "probe", "correction"} <= set(by_kind)
    assert s.upkeep_energy_pj == by_kind["probe"] + by_kind["correction"]
    assert [d.tile for d in s.drift] == [0, 1]
    assert all(d.drift_metric > 0 and d.at_s == pytest.approx(2 * HOUR) for d in s.drift)
    assert json.loads(s.policy_json)["interval_s"] == HOUR
    assert 0 < s.availability <= 1


def test_health_reflection_and_token():
    """Health answers without a token; every other call needs it; reflection lists ChipHost."""
    s = InProcess(token="s3cret")
    try:
        code, msg = _code(s.stub.GetStatus, host_pb2.GetStatusRequest())
        assert code == grpc.StatusCode.UNAUTHENTICATED
        health = health_pb2_grpc.HealthStub(s.channel)
        ok = health.Check(health_pb2.HealthCheckRequest(service="pcmtwin.v1.ChipHost"))
        assert ok.status == health_pb2.HealthCheckResponse.SERVING
        meta = [("authorization", "Bearer s3cret")]
        assert not s.stub.GetStatus(host_pb2.GetStatusRequest(), metadata=meta).loaded
        refl = reflection_pb2_grpc.ServerReflectionStub(s.channel)
        req = reflection_pb2.ServerReflectionRequest(list_services="")
        (resp,) = list(refl.ServerReflectionInfo(iter([req]), metadata=meta))
        names = {x.name for x in resp.list_services_response.service}
        assert "pcmtwin.v1.ChipHost" in names and "grpc.health.v1.Health" in names
        # the host reached its twin with the same token: loading works end to end
        out = s.stub.LoadNetwork(host_pb2.LoadNetworkRequest(
            network=tiny_network().to_proto(),
            chip_config_json=json.dumps({"tile_rows": 16, "tile_cols": 16})), metadata=meta)  # fmt: skip
        assert out.status.loaded
    finally:
        s.close()


def test_realtime_host_paces_device_time_and_refuses_advance():
    """With --realtime, device time follows the wall clock and AdvanceTime is refused."""
    s = InProcess(realtime=1.0)
    try:
        _load(s.stub, "threshold", {"interval_s": 0.5})
        t0 = s.stub.GetStatus(host_pb2.GetStatusRequest()).sim_time_s
        w0 = time.monotonic()
        time.sleep(1.5)
        t1 = s.stub.GetStatus(host_pb2.GetStatusRequest())
        elapsed = time.monotonic() - w0
        assert t1.realtime_factor == 1.0
        # device time moves, never ahead of the wall clock (how far behind it a loaded
        # machine lags is not asserted: tests never assert on wall time)
        assert 0 < t1.sim_time_s - t0 <= elapsed + 0.1
        assert t1.monitor_wakeups >= 1
        code, msg = _code(s.stub.AdvanceTime, host_pb2.AdvanceTimeRequest(by_s=10))
        assert code == grpc.StatusCode.FAILED_PRECONDITION and "realtime" in msg
        res = s.stub.Infer(host_pb2.InferRequest(x=tensor(np.ones((2, 16), np.float32))))
        assert res.end_s >= res.start_s >= res.submitted_s >= t0
    finally:
        s.close()


def test_a_long_advance_stops_at_its_deadline_and_the_host_stays_responsive(servers):
    """AdvanceTime with a deadline returns DEADLINE_EXCEEDED, having advanced part of the way;
    the host answers status while it runs (a status showing it RUNNING); absurd targets are
    refused. (No wall-clock bounds: the machine may be loaded; a status call that did not
    answer within its 30 s timeout would fail the test.)"""
    stub = servers.stub
    _load(stub, "threshold", {"interval_s": HOUR})
    answered: list[host_pb2.ChipStatus] = []
    done = threading.Event()

    def poll() -> None:
        while not done.is_set() or not answered:
            answered.append(stub.GetStatus(host_pb2.GetStatusRequest(), timeout=30))
            time.sleep(0.05)

    poller = threading.Thread(target=poll)
    poller.start()
    try:
        code, msg = _code(lambda r: stub.AdvanceTime(r, timeout=1.5),
                          host_pb2.AdvanceTimeRequest(by_s=1e11))  # fmt: skip
    finally:
        done.set()
        poller.join()
    assert code == grpc.StatusCode.DEADLINE_EXCEEDED
    running = [a for a in answered if a.advance.state == host_pb2.ADVANCE_STATE_RUNNING]
    assert running, [host_pb2.AdvanceState.Name(a.advance.state) for a in answered]
    assert all(0 <= a.advance.fraction < 1 and a.advance.target_s >= 1e11 for a in running)
    s = stub.GetStatus(host_pb2.GetStatusRequest())
    assert HOUR < s.sim_time_s < 1e11 and s.monitor_wakeups > 0 and s.error == ""
    code, msg = _code(stub.AdvanceTime, host_pb2.AdvanceTimeRequest(to_s=1e15))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "latest device time" in msg


def test_load_network_refuses_an_absurd_annealing_budget(servers):
    """A quantiser asking for hours of annealing is refused before any work."""
    q = {"kind": "multiplicative", "annealing": {"n_steps": 100_000, "moves_per_step": 1000}}
    request = host_pb2.LoadNetworkRequest(network=tiny_network().to_proto(),
                                          quantiser=json.dumps(q))  # fmt: skip
    code, msg = _code(servers.stub.LoadNetwork, request)
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED and "annealing" in msg
    assert not servers.stub.GetStatus(host_pb2.GetStatusRequest()).loaded


def test_a_realtime_host_replaces_its_network():
    """With --realtime, LoadNetwork over a running network replaces it (the old driver stops
    without being joined under the lock, which deadlocked); device time keeps following the
    wall clock, on the new chip only."""
    s = InProcess(realtime=1.0)
    try:
        first = _load(s.stub, "threshold", {"interval_s": 0.5})
        time.sleep(0.3)
        done: list = []
        loader = threading.Thread(target=lambda: done.append(_load(s.stub, "threshold")),
                                  daemon=True)  # fmt: skip
        loader.start()
        loader.join(60)
        assert done, "a second LoadNetwork in realtime mode did not return"
        second = done[0]
        assert second.chip_id != first.chip_id
        assert s.twin.registry.list_chips() == [second.chip_id]
        t0 = s.stub.GetStatus(host_pb2.GetStatusRequest()).sim_time_s
        time.sleep(0.5)
        t1 = s.stub.GetStatus(host_pb2.GetStatusRequest())
        assert t1.chip_id == second.chip_id and t1.sim_time_s > t0 and t1.error == ""
    finally:
        s.close()


def test_at_the_twins_chip_limit_a_load_keeps_the_running_network_unless_told():
    """The new chip is created before the old one is deleted: a twin holding at most one chip
    refuses it, and the host keeps its network (saying why and what to do). With
    ``make_room=True`` the host frees the running chip and loads the new network."""
    from controller.host.chip_host import ChipHost
    from controller.rpc.client import TwinClient
    from device_twin.config import ChipConfig
    from device_twin.errors import ResourceExhausted
    from device_twin.service.server import ServerOptions, TwinServer

    twin = TwinServer(ServerOptions(address="127.0.0.1:0", max_chips=1))
    twin.start()
    client = TwinClient(twin.address)
    host = ChipHost(client)
    cfg = ChipConfig(tile_rows=16, tile_cols=16, seed=3)
    try:
        first = host.load_network(tiny_network(), chip_config=cfg)
        with pytest.raises(ResourceExhausted) as info:
            host.load_network(tiny_network(1), chip_config=cfg)
        assert "at most 1 chips" in str(info.value) and "--max-chips" in str(info.value)
        assert host.status()["chip_id"] == first["chip_id"]
        assert twin.registry.list_chips() == [first["chip_id"]]
        host.infer(np.ones((2, 16), np.float32))
        second = host.load_network(tiny_network(1), chip_config=cfg, make_room=True)
        assert twin.registry.list_chips() == [second["chip_id"]] != [first["chip_id"]]
        assert host.infer(np.ones((2, 16), np.float32)).y.shape == (2, 4)
    finally:
        host.close()
        client.close()
        twin.stop(grace_s=0)


def test_make_room_over_grpc_replaces_the_network_on_a_full_twin():
    """Through the stubs: on a twin holding one chip, LoadNetwork is refused with
    RESOURCE_EXHAUSTED and the running network answers on; with make_room it is replaced."""
    s = InProcess(twin_options={"max_chips": 1})
    try:
        first = _load(s.stub)
        code, details = _code(_load, s.stub)
        assert code == grpc.StatusCode.RESOURCE_EXHAUSTED and "make_room" in details
        assert s.stub.GetStatus(host_pb2.GetStatusRequest()).chip_id == first.chip_id
        second = _load(s.stub, make_room=True)
        assert second.chip_id != first.chip_id
        assert s.stub.GetStatus(host_pb2.GetStatusRequest()).chip_id == second.chip_id
        assert s.twin.registry.list_chips() == [second.chip_id]
    finally:
        s.close()


def test_a_stream_ends_with_aborted_when_its_network_is_replaced(servers):
    """StreamEvents open on a network ends with ABORTED when LoadNetwork replaces it, so a
    client can tell it from a normal end; a new stream follows the new network."""
    first = _load(servers.stub)
    stream = servers.stub.StreamEvents(host_pb2.StreamEventsRequest(after_seq=0))
    assert next(stream).seq >= 1  # live
    second = _load(servers.stub)
    with pytest.raises(grpc.RpcError) as ended:
        for _ in stream:
            pass
    assert ended.value.code() == grpc.StatusCode.ABORTED
    assert "replaced by LoadNetwork" in ended.value.details()
    assert second.chip_id != first.chip_id
    again = servers.stub.StreamEvents(host_pb2.StreamEventsRequest(after_seq=0))
    assert next(again).seq >= 1
    again.cancel()


def test_a_misspelt_policy_parameter_is_named_with_the_closest_one(servers):
    """A policy parameter the policy does not have is refused (INVALID_ARGUMENT) with a field
    violation naming it, the closest parameter and every accepted one; durations take the
    scenario's strings."""
    from tests.pcmtwin.test_status import field_violations

    with pytest.raises(grpc.RpcError) as err:
        _load(servers.stub, "threshold", {"treshold": 0.1, "interval_s": "1h"})
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    ((field, said),) = field_violations(err.value)
    assert field == "policy.params_json"
    listed = servers.stub.ListPolicies(host_pb2.ListPoliciesRequest()).policies
    (threshold,) = [p for p in listed if p.name == "threshold"]
    accepted = ", ".join(q.name for q in threshold.parameters)
    assert said == ("treshold: unknown parameter; did you mean 'threshold'? (the parameters "
                    f"are {accepted})")  # fmt: skip
    assert "_CorrectingPolicy" not in err.value.details()
    _load(servers.stub, "threshold", {"threshold": 0.1, "interval_s": "1h"})
    status = servers.stub.GetStatus(host_pb2.GetStatusRequest())
    assert json.loads(status.policy_json)["interval_s"] == 3600.0


def test_chip_serve_warns_when_its_twin_does_not_answer(caplog):
    """A ChipHost server started against a twin that does not answer logs a warning naming
    the address, and serves anyway (a refused load says why)."""
    import logging

    from controller.host.service import ChipHostServer, HostServerOptions
    from tests.device_twin.service.conftest import free_port

    twin = f"127.0.0.1:{free_port()}"
    server = ChipHostServer(HostServerOptions(twin_address=twin, address="127.0.0.1:0"))
    with caplog.at_level(logging.WARNING, logger="controller.host.service"):
        server.start()
    try:
        assert f"the twin at {twin} does not answer" in caplog.text
        assert server.check_twin(timeout_s=0.2) is False
    finally:
        server.stop(grace_s=0)
