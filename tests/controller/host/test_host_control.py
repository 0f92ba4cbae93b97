"""Controlling time and the network through the ChipHost stubs (issue 18 items 1 and 7):
cancelling AdvanceTime, its progress, what runs during it, the next wake-up, unloading, and
where the network sits on the chip."""

from __future__ import annotations

import json
import threading
import time

import grpc
import numpy as np
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from pcmtwin.v1 import host_pb2
from tests.controller.servers import InProcess, from_tensor, tensor, tiny_network, until

HOUR = 3600.0
MONTH = 30 * 86400.0
CHIP = {"tile_rows": 16, "tile_cols": 16, "seed": 3}
ST = host_pb2.AdvanceState


@pytest.fixture
def servers():
    s = InProcess()
    yield s
    s.close()


def _load(stub, interval_s: float = HOUR, quantiser: str = "multiplicative", chip=None):
    return stub.LoadNetwork(host_pb2.LoadNetworkRequest(
        network=tiny_network().to_proto(), quantiser=quantiser,
        chip_config_json=json.dumps(chip or CHIP),
        policy=host_pb2.PolicySpec(name="threshold", params_json=json.dumps(
            {"interval_s": interval_s})),
    ))  # fmt: skip


def _status(stub) -> host_pb2.ChipStatus:
    return stub.GetStatus(host_pb2.GetStatusRequest())


def _running(stub) -> host_pb2.ChipStatus | None:
    """The status once an AdvanceTime runs and has gone through a wake-up."""
    s = _status(stub)
    running = s.advance.state == ST.ADVANCE_STATE_RUNNING and s.advance.monitor_wakeups > 0
    return s if running else None


def test_cancelling_advance_time_stops_it_where_the_status_says(servers):
    """A month of minutely wake-ups cancelled by the client stops: device time no longer
    moves, the status says CANCELLED and where it stopped, and time goes on from there."""
    stub = servers.stub
    _load(stub, interval_s=60.0)
    call = stub.AdvanceTime.future(host_pb2.AdvanceTimeRequest(by_s=MONTH))
    until("the advance runs", lambda: _running(stub))
    call.cancel()
    stopped = until("the advance stops", lambda: (
        s := _status(stub)).advance.state == ST.ADVANCE_STATE_CANCELLED and s)  # fmt: skip
    time.sleep(0.5)  # had it not stopped, time would move on meanwhile
    later = _status(stub)
    assert later.sim_time_s == stopped.sim_time_s == stopped.advance.reached_s
    assert 0 < stopped.advance.fraction < 1 and stopped.advance.target_s == pytest.approx(MONTH)
    assert later.monitor_wakeups == stopped.monitor_wakeups > 0
    assert stopped.advance.monitor_wakeups == stopped.monitor_wakeups
    after = stub.AdvanceTime(host_pb2.AdvanceTimeRequest(by_s=10.0))
    assert after.sim_time_s == stopped.sim_time_s + 10.0
    assert after.advance.state == ST.ADVANCE_STATE_DONE and after.advance.fraction == 1.0


def test_a_deadline_stops_advance_time_and_says_how_far_it_got(servers):
    """AdvanceTime past its deadline answers DEADLINE_EXCEEDED with an ErrorInfo (from_s,
    reached_s, target_s) that matches the status."""
    stub = servers.stub
    _load(stub, interval_s=60.0)
    with pytest.raises(grpc.RpcError) as err:
        # the host stops at 90 % of the deadline: the rest leaves time for its last slice
        # (50 ms of model time, longer on a loaded machine) and its answer
        stub.AdvanceTime(host_pb2.AdvanceTimeRequest(by_s=MONTH), timeout=5.0)
    assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    s = _status(stub)
    assert s.advance.state == ST.ADVANCE_STATE_DEADLINE_EXCEEDED
    (detail,) = rpc_status.from_call(err.value).details
    info = error_details_pb2.ErrorInfo()
    assert detail.Unpack(info) and info.reason == "ADVANCE_STOPPED" and info.domain == "pcmtwin"
    assert float(info.metadata["reached_s"]) == s.advance.reached_s == s.sim_time_s
    assert float(info.metadata["target_s"]) == s.advance.target_s


def test_calls_during_a_long_advance_run_at_the_time_reached(servers):
    """While an AdvanceTime runs, GetStatus reports its progress and an Infer runs at the
    device time reached and returns before the advance ends; a second AdvanceTime is refused
    with ABORTED; the first then reaches its target."""
    stub = servers.stub
    _load(stub, interval_s=60.0)
    target = 6 * HOUR
    call = stub.AdvanceTime.future(host_pb2.AdvanceTimeRequest(to_s=target))
    first = until("the advance runs", lambda: _running(stub))
    second = until("progress", lambda: (s := _running(stub)) and (
        s.advance.reached_s > first.advance.reached_s) and s)  # fmt: skip
    assert 0 < first.advance.fraction < second.advance.fraction < 1
    y = stub.Infer(host_pb2.InferRequest(x=tensor(np.ones((2, 16), np.float32)), label="mid"))
    assert second.advance.reached_s <= y.submitted_s < target
    during = _status(stub)
    with pytest.raises(grpc.RpcError) as err:
        stub.AdvanceTime(host_pb2.AdvanceTimeRequest(by_s=1.0))
    assert err.value.code() == grpc.StatusCode.ABORTED and "another AdvanceTime" in (
        err.value.details())  # fmt: skip
    done = call.result(timeout=600)
    assert done.sim_time_s == target and done.advance.state == ST.ADVANCE_STATE_DONE
    if during.advance.state == ST.ADVANCE_STATE_RUNNING:  # the Infer did not wait for the end
        assert y.end_s < target


def test_load_network_during_an_advance_ends_it_with_aborted(servers):
    """LoadNetwork while AdvanceTime runs replaces the network; the advance ends ABORTED."""
    stub = servers.stub
    _load(stub, interval_s=60.0)
    call = stub.AdvanceTime.future(host_pb2.AdvanceTimeRequest(by_s=MONTH))
    until("the advance runs", lambda: _running(stub))
    loaded = _load(stub)
    with pytest.raises(grpc.RpcError) as err:
        call.result(timeout=60)
    assert err.value.code() == grpc.StatusCode.ABORTED
    after = _status(stub)
    assert after.chip_id == loaded.chip_id and after.sim_time_s < 1.0  # programming only


def test_status_says_when_the_policy_wakes_next(servers):
    """next_wake_s: the policy's next wake-up (anchored at programming), unset for a policy
    that never wakes."""
    stub = servers.stub
    loaded = _load(stub, interval_s=HOUR)
    assert loaded.status.next_wake_s == pytest.approx(HOUR, abs=1e-3)
    s = stub.AdvanceTime(host_pb2.AdvanceTimeRequest(to_s=HOUR + 1))
    assert s.next_wake_s == pytest.approx(2 * HOUR, abs=1e-3)
    s = stub.SetPolicy(host_pb2.SetPolicyRequest(policy=host_pb2.PolicySpec(name="gdc")))
    assert not s.HasField("next_wake_s")


def test_unload_network_frees_the_chip_and_ends_the_streams(servers):
    """UnloadNetwork deletes the chip on the twin, ends event streams with ABORTED saying
    so, and leaves nothing loaded (calls that need a network say so); twice is fine."""
    stub = servers.stub
    _load(stub)
    stream = stub.StreamEvents(host_pb2.StreamEventsRequest(after_seq=0))
    assert next(stream).seq >= 1
    s = stub.UnloadNetwork(host_pb2.UnloadNetworkRequest())
    assert not s.loaded and s.chip_id == "" and servers.twin.registry.list_chips() == []
    with pytest.raises(grpc.RpcError) as ended:
        for _ in stream:
            pass
    assert ended.value.code() == grpc.StatusCode.ABORTED and "unloaded" in ended.value.details()
    with pytest.raises(grpc.RpcError) as err:
        stub.Infer(host_pb2.InferRequest(x=tensor(np.ones((1, 16), np.float32))))
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert not stub.UnloadNetwork(host_pb2.UnloadNetworkRequest()).loaded
    assert _load(stub).status.loaded


def test_get_network_maps_layers_to_tiles_and_reads_back_the_quantised_weights(servers):
    """GetNetwork: each analog layer's blocks cover its matrix once, on the tiles the status
    reports drift for; the weights read back are the uniform quantiser's levels (within half
    a level of the network's weights)."""
    stub = servers.stub
    chip = {"tile_rows": 8, "tile_cols": 8, "seed": 3}
    _load(stub, quantiser="uniform", chip=chip)
    stub.AdvanceTime(host_pb2.AdvanceTimeRequest(to_s=HOUR + 1))
    lay = stub.GetNetwork(host_pb2.GetNetworkRequest(include_weights=True))
    desc = tiny_network()
    assert [la.name for la in lay.layers] == [la.name for _, la in desc.analog_layers()]
    assert (lay.tile_rows, lay.tile_cols, lay.quantiser) == (8, 8, "uniform")
    for placement, (_, layer) in zip(lay.layers, desc.analog_layers(), strict=True):
        cover = np.zeros((placement.rows, placement.cols), int)
        for b in placement.blocks:
            assert b.row_offset + b.rows <= 8 and b.col_offset + b.cols <= 8
            cover[b.layer_row_start:b.layer_row_start + b.rows,
                  b.layer_col_start:b.layer_col_start + b.cols] += 1  # fmt: skip
        assert (cover == 1).all()
        w = layer.weight.to_numpy()
        w_q = from_tensor(placement.weight)
        step = placement.q_pos_us / lay.g_max_us * placement.out_scale
        assert w_q.shape == w.shape and step > 0
        assert np.allclose(w_q / step, np.round(w_q / step), atol=1e-3)
        assert np.abs(w_q - w).max() <= step / 2 + 1e-6
    tiles = sorted(b.tile for la in lay.layers for b in la.blocks)
    assert tiles == list(lay.tiles) == [d.tile for d in _status(stub).drift]
    assert not stub.GetNetwork(host_pb2.GetNetworkRequest()).layers[0].HasField("weight")


def test_get_network_refuses_weights_over_the_message_limit():
    """Weights that would not fit in an answer are refused (RESOURCE_EXHAUSTED naming
    include_weights); the layout alone is answered."""
    from tests.pcmtwin.test_status import field_violations
    from tests.reliability.host_harness import mlp

    s = InProcess(max_message_bytes=256 * 1024)
    try:
        big = mlp(np.random.default_rng(0), [256, 224])  # 224 KiB of weights: fits a request
        s.stub.LoadNetwork(host_pb2.LoadNetworkRequest(network=big.to_proto(), quantiser="none",
                                                        chip_config_json=json.dumps(CHIP)))  # fmt: skip
        with pytest.raises(grpc.RpcError) as err:
            s.stub.GetNetwork(host_pb2.GetNetworkRequest(include_weights=True))
        assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert [f for f, _ in field_violations(err.value)] == ["include_weights"]
        assert len(s.stub.GetNetwork(host_pb2.GetNetworkRequest()).layers[0].blocks) == 16 * 14
    finally:
        s.close()


def test_get_status_answers_while_the_model_is_busy(servers):
    """GetStatus answers during a long AdvanceTime (each answer reports it RUNNING), from
    several clients at once."""
    stub = servers.stub
    _load(stub, interval_s=60.0)
    call = stub.AdvanceTime.future(host_pb2.AdvanceTimeRequest(by_s=MONTH))
    until("the advance runs", lambda: _running(stub))
    seen: list[int] = []

    def poll() -> None:
        for _ in range(5):
            seen.append(stub.GetStatus(host_pb2.GetStatusRequest(), timeout=60).advance.state)

    pollers = [threading.Thread(target=poll) for _ in range(3)]
    for p in pollers:
        p.start()
    for p in pollers:
        p.join()
    call.cancel()
    assert seen.count(ST.ADVANCE_STATE_RUNNING) >= 10


def test_reflection_v1_and_v1alpha_describe_every_chip_host_call(servers):
    """Server reflection, as grpc.reflection.v1 and v1alpha, serves host.proto with every
    ChipHost call (discovery, UnloadNetwork, GetNetwork included) and the messages they use."""
    from google.protobuf import descriptor_pb2

    from tests.pcmtwin.test_serving import REFLECTION, reflect

    want = {"LoadNetwork", "UnloadNetwork", "GetNetwork", "Infer", "GetStatus", "AdvanceTime",
            "SetPolicy", "TriggerCorrection", "StreamEvents", "ListPolicies", "ListQuantisers",
            "GetConfigSchema"}  # fmt: skip
    for version in REFLECTION:
        got = reflect(servers.channel, version, file_containing_symbol="pcmtwin.v1.ChipHost")
        files = {f.name: f for f in (descriptor_pb2.FileDescriptorProto.FromString(b)
                 for b in got.file_descriptor_response.file_descriptor_proto)}  # fmt: skip
        host = files["pcmtwin/v1/host.proto"]
        (service,) = host.service
        assert {m.name for m in service.method} == want, version
        messages = {m.name for m in host.message_type}
        assert {"NetworkLayout", "AdvanceProgress", "PolicyInfo", "ConfigSchemas"} <= messages
        got = reflect(servers.channel, version, list_services="")
        names = {s.name for s in got.list_services_response.service}
        assert {"pcmtwin.v1.ChipHost", "grpc.reflection.v1.ServerReflection"} <= names
