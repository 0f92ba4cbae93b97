"""CrossbarTwin sessions: device operations streamed on one call behave as their unary calls
(results, refusals, auth, limits), and a client whose session breaks carries on unary."""

from __future__ import annotations

import queue

import grpc
import numpy as np
import pytest

from controller.rpc.client import TwinClient
from device_twin import Array, Chip, PulseKind
from device_twin.errors import InvalidArgument, NotFound
from pcmtwin.codec import numpy_to_tensor, result_from_proto
from pcmtwin.credentials import make_channel
from pcmtwin.v1 import twin_pb2, twin_pb2_grpc
from tests.device_twin.service.conftest import (
    assert_same_result,
    random_targets,
    small_config,
    start_inprocess,
)


class RawSession:
    """A Session stream driven by hand: one request in, one response out."""

    def __init__(self, channel: grpc.Channel, metadata=None) -> None:
        self.requests: queue.SimpleQueue = queue.SimpleQueue()
        stub = twin_pb2_grpc.CrossbarTwinStub(channel)
        self.responses = stub.Session(iter(self.requests.get, None), metadata=metadata)

    def send(self, **op) -> twin_pb2.SessionResponse:
        self.requests.put(twin_pb2.SessionRequest(**op))
        return next(self.responses)

    def close(self) -> None:
        self.requests.put(None)


@pytest.fixture
def server():
    s = start_inprocess(max_workers=4)  # at most 2 open sessions
    try:
        yield s
    finally:
        s.stop(0)


def _program(client: TwinClient, chip_id: str, at_s: float = 1.0) -> None:
    cfg = small_config()
    rng = np.random.default_rng(0)
    g = random_targets(rng, (cfg.tile_rows, cfg.tile_cols))
    client.program(chip_id, 0, g, g[::-1].copy(), at_s)


def test_refused_operation_is_answered_in_stream_and_the_session_goes_on(server):
    """A bad request gets its status and message in the stream; state is unchanged and the
    next request on the same stream is served."""
    with TwinClient(server.address) as client:
        chip_id = client.create_chip(small_config(), "sess")
        _program(client, chip_id)
        before = client.snapshot(chip_id)
        channel = make_channel(server.address)
        s = RawSession(channel)
        nan = np.full(3, np.nan, np.float32)
        bad = s.send(program_devices=twin_pb2.ProgramDevicesRequest(
            chip_id=chip_id, tile=0, array=twin_pb2.ARRAY_POS, at_s=5.0,
            devices=numpy_to_tensor(np.arange(3)), g_target_us=numpy_to_tensor(nan)))  # fmt: skip
        assert bad.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
        assert "g_target_us" in bad.message and not bad.HasField("result")
        gone = s.send(probe=twin_pb2.ProbeRequest(chip_id="nope", rows=numpy_to_tensor(
            np.arange(2)), array=twin_pb2.ARRAY_POS, at_s=6.0))  # fmt: skip
        assert gone.code == grpc.StatusCode.NOT_FOUND.value[0]
        empty = s.send()
        assert empty.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
        after = client.snapshot(chip_id)
        assert after.op_counter == before.op_counter and after.now_s == before.now_s
        assert after.g_prog_us[0].tobytes() == before.g_prog_us[0].tobytes()
        ok = s.send(read_devices=twin_pb2.ReadDevicesRequest(
            chip_id=chip_id, tile=0, array=twin_pb2.ARRAY_POS, at_s=10.0,
            devices=numpy_to_tensor(np.arange(4))))  # fmt: skip
        assert ok.code == 0 and result_from_proto(ok.result).values.shape == (4,)
        s.close()
        channel.close()


def test_client_raises_the_refusal_of_a_session_operation(server):
    """TwinClient in session mode raises the same error types as in unary mode."""
    with TwinClient(server.address, session=True) as client:
        chip_id = client.create_chip(small_config())
        with pytest.raises(NotFound, match="nope"):
            client.read_devices("nope", 0, Array.POS, None, 1.0)
        with pytest.raises(InvalidArgument, match="count"):
            _program(client, chip_id)
            client.apply_pulses(chip_id, 0, Array.POS, np.arange(3), PulseKind.SET, -1, 2.0)
        r = client.read_devices(chip_id, 0, Array.POS, np.arange(3), 3.0)
        assert r.values.shape == (3,) and client.session_fallbacks == 0


def test_sessions_beyond_the_limit_are_refused_and_the_client_goes_unary(server):
    """With every session slot taken, a new session gets RESOURCE_EXHAUSTED and a session
    client's operations still succeed, as unary calls."""
    assert server.servicer.max_sessions == 2
    channel = make_channel(server.address)
    held = [RawSession(channel) for _ in range(2)]
    with TwinClient(server.address) as plain:
        chip_id = plain.create_chip(small_config())
    for s in held:  # the first answer proves the session is open on the server
        assert s.send().code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    extra = RawSession(channel)
    with pytest.raises(grpc.RpcError) as refused:
        extra.send()
    assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "at most 2 open sessions" in refused.value.details()
    with TwinClient(server.address, session=True) as client:
        _program(client, chip_id)
        assert client.read_devices(chip_id, 0, Array.NEG, None, 9.0).values.size > 0
        assert client.session_fallbacks >= 1
    for s in held:
        s.close()
    channel.close()


def test_session_requires_the_token_when_one_is_configured():
    """A session without the bearer token is UNAUTHENTICATED; with it, it is served."""
    server = start_inprocess(token="s3cret-token")
    try:
        channel = make_channel(server.address)
        s = RawSession(channel)
        with pytest.raises(grpc.RpcError) as denied:
            s.send()
        assert denied.value.code() == grpc.StatusCode.UNAUTHENTICATED
        channel.close()
        with TwinClient(server.address, token="s3cret-token", session=True) as client:
            chip_id = client.create_chip(small_config())
            _program(client, chip_id)
            assert client.session_fallbacks == 0
    finally:
        server.stop(0)


def test_session_client_survives_a_server_restart_with_the_same_results(tmp_path):
    """The twin is stopped and restarted on its state dir between two operations of a
    session: the client reconnects and every result equals the in-process core's."""
    from tests.device_twin.service.conftest import free_port

    cfg = small_config()
    local = Chip(cfg)
    address = f"127.0.0.1:{free_port()}"
    server = start_inprocess_at(address, tmp_path)
    rng = np.random.default_rng(1)
    g = random_targets(rng, (cfg.tile_rows, cfg.tile_cols))
    calls = [("program", (0, g, g[::-1].copy(), 1.0)),
             ("read_devices", (0, Array.BOTH, None, 10.0)),
             ("probe", (0, np.arange(4), Array.DIFF, 20.0)),
             ("apply_pulses", (0, Array.POS, np.arange(6), PulseKind.SET, 2, 30.0)),
             ("read_devices", (0, Array.POS, np.arange(6), 40.0))]  # fmt: skip
    with TwinClient(address, session=True, retries=40, backoff_max_s=0.5) as client:
        chip_id = client.create_chip(cfg, "restart")
        for i, (name, args) in enumerate(calls):
            if i == 2:
                server.stop(0)
                server = start_inprocess_at(address, tmp_path)
            assert_same_result(getattr(client, name)(chip_id, *args), getattr(local, name)(*args))
        assert client.session_fallbacks >= 1
    server.stop(0)


def start_inprocess_at(address: str, state_dir):
    from device_twin.service.server import ServerOptions, TwinServer

    server = TwinServer(ServerOptions(address=address, state_dir=state_dir))
    server.start()
    return server
