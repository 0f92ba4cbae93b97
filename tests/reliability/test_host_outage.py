"""A ChipHost whose twin (a real process) goes away (issue 18 item 2): the run waits and goes
on, health and status say the twin is unreachable meanwhile, calls that need it answer
UNAVAILABLE at once; a twin restarted on its state directory continues the chip exactly (the
same numbers as a run without the outage); one restarted without it is reported as having
lost the chip."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from controller.host.service import ChipHostServer, HostServerOptions
from pcmtwin.v1 import host_pb2, host_pb2_grpc, twin_pb2, twin_pb2_grpc
from tests.controller.servers import InProcess, tensor, tiny_network, until
from tests.pcmtwin.server_process import ServerProcess

HOUR = 3600.0
HEALTH = health_pb2.HealthCheckResponse
SAME = ("sim_time_s", "monitor_wakeups", "corrections", "devices_corrected",
        "correction_pulses", "twin_energy_pj", "upkeep_energy_pj", "inferences")  # fmt: skip


class Host:
    """A ChipHost server in this process over the twin at ``address``, and its stubs."""

    def __init__(self, address: str) -> None:
        self.server = ChipHostServer(HostServerOptions(twin_address=address,
                                                       address="127.0.0.1:0"))  # fmt: skip
        self.server.start()
        self.channel = grpc.insecure_channel(self.server.address)
        self.stub = host_pb2_grpc.ChipHostStub(self.channel)
        self.health = health_pb2_grpc.HealthStub(self.channel)
        self.closed = False

    def serving(self) -> int:
        return self.health.Check(health_pb2.HealthCheckRequest(), timeout=30).status

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.channel.close()
            self.server.stop(grace_s=0)


def _load(stub) -> None:
    stub.LoadNetwork(host_pb2.LoadNetworkRequest(
        network=tiny_network().to_proto(),
        chip_config_json=json.dumps({"tile_rows": 16, "tile_cols": 16, "seed": 3}),
        policy=host_pb2.PolicySpec(name="threshold", params_json='{"interval_s": 60}'),
    ), timeout=300)  # fmt: skip


def _infer(stub, timeout_s: float = 300):
    return stub.Infer(host_pb2.InferRequest(x=tensor(np.ones((2, 16), np.float32))),
                      timeout=timeout_s)  # fmt: skip


def _reference() -> host_pb2.ChipStatus:
    """The same calls without an outage (an in-process twin)."""
    s = InProcess()
    try:
        _load(s.stub)
        s.stub.AdvanceTime(host_pb2.AdvanceTimeRequest(to_s=TARGET_S))
        _infer(s.stub)
        return s.stub.GetStatus(host_pb2.GetStatusRequest())
    finally:
        s.close()


#: An advance across many minutely wake-ups (a few seconds of wall time): the twin is
#: killed while it runs.
TARGET_S = 3 * HOUR + 1


def test_a_twin_outage_is_waited_out_and_never_stops_the_run(tmp_path: Path):
    """The twin is killed during an AdvanceTime across many wake-ups: the advance waits;
    meanwhile health says NOT_SERVING, GetStatus answers (twin unreachable) and Infer is
    UNAVAILABLE at once; once the twin is back on its state directory the advance reaches
    its target with the numbers of a run without the outage, and the host serves again."""
    state = tmp_path / "state"
    twin = ServerProcess(tmp_path, "--state-dir", str(state))
    host = Host(twin.address)
    try:
        _load(host.stub)
        call = host.stub.AdvanceTime.future(host_pb2.AdvanceTimeRequest(to_s=TARGET_S))
        until("the advance runs", lambda: host.stub.GetStatus(
            host_pb2.GetStatusRequest()).monitor_wakeups >= 10)  # fmt: skip
        twin.kill()
        until("health follows the twin", lambda: host.serving() == HEALTH.NOT_SERVING)
        away = host.stub.GetStatus(host_pb2.GetStatusRequest(), timeout=30)
        assert not away.twin_reachable and away.loaded and away.error == ""
        assert away.advance.state == host_pb2.ADVANCE_STATE_RUNNING
        assert away.sim_time_s < TARGET_S
        with pytest.raises(grpc.RpcError) as err:
            _infer(host.stub, timeout_s=30)
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE
        assert "cannot be reached" in err.value.details()
        twin = ServerProcess(tmp_path, "--state-dir", str(state), port=twin.port)
        done = call.result(timeout=300)
        assert done.error == "" and done.advance.state == host_pb2.ADVANCE_STATE_DONE
        until("health follows the twin", lambda: host.serving() == HEALTH.SERVING)
        _infer(host.stub)
        after = host.stub.GetStatus(host_pb2.GetStatusRequest())
        assert after.twin_reachable and after.twin_unreachable_s == 0.0
        reference = _reference()
        assert [getattr(after, f) for f in SAME] == [getattr(reference, f) for f in SAME]
    finally:
        host.close()
        twin.stop()


def test_a_twin_back_without_its_state_is_reported_as_having_lost_the_chip(tmp_path: Path):
    """A twin restarted without a state directory no longer holds the chip: the host says
    so (loaded false, the error names the chip and --state-dir), Infer answers
    FAILED_PRECONDITION with the same words, and LoadNetwork loads the network again; a host
    stopped while its twin is gone does not wait for it."""
    twin = ServerProcess(tmp_path)
    host = Host(twin.address)
    try:
        _load(host.stub)
        chip = host.stub.GetStatus(host_pb2.GetStatusRequest()).chip_id
        twin.kill()
        twin = ServerProcess(tmp_path, port=twin.port)
        lost = until("the host notices", lambda: (
            s := host.stub.GetStatus(host_pb2.GetStatusRequest())).error and s)  # fmt: skip
        assert not lost.loaded and f"the twin lost chip {chip!r}" in lost.error
        assert "--state-dir" in lost.error and "LoadNetwork" in lost.error
        with pytest.raises(grpc.RpcError) as err:
            _infer(host.stub)
        assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert err.value.details() == lost.error
        _load(host.stub)
        assert _infer(host.stub).end_s >= 0 and host.serving() == HEALTH.SERVING
        # a host that stops while its twin is away does not wait for the twin
        twin.kill()
        stopping = threading.Thread(target=host.close)
        stopping.start()
        stopping.join(timeout=60)  # a hang check: its twin client would wait 120 s
        assert not stopping.is_alive(), "the host waited for a twin that is gone"
    finally:
        host.close()
        twin.stop()


def test_a_chip_lost_between_two_looks_at_the_twin_is_reported():
    """A chip that disappears from a twin that never looked down (restarted between two of
    the host's health checks, or deleted by another client) is noticed while the host is
    idle: GetStatus says loaded false and why, Infer answers FAILED_PRECONDITION with the
    same words, health stays SERVING."""
    s = InProcess()
    try:
        _load(s.stub)
        chip = s.stub.GetStatus(host_pb2.GetStatusRequest()).chip_id
        with grpc.insecure_channel(s.twin.address) as channel:
            twin_pb2_grpc.CrossbarTwinStub(channel).DeleteChip(
                twin_pb2.DeleteChipRequest(chip_id=chip))  # fmt: skip
        lost = until("the host notices", lambda: (
            st := s.stub.GetStatus(host_pb2.GetStatusRequest())).error and st)  # fmt: skip
        assert not lost.loaded and lost.twin_reachable
        assert f"the twin lost chip {chip!r}" in lost.error and "LoadNetwork" in lost.error
        with pytest.raises(grpc.RpcError) as err:
            _infer(s.stub)
        assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert err.value.details() == lost.error
        health = health_pb2_grpc.HealthStub(s.channel)
        assert health.Check(health_pb2.HealthCheckRequest()).status == HEALTH.SERVING
    finally:
        s.close()
