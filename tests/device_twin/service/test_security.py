"""Auth, TLS, bind policy and start-up health of the CrossbarTwin server."""

from __future__ import annotations

import logging

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from typer.testing import CliRunner

from controller.cli import app
from controller.rpc.client import TwinClient, TwinRpcError
from device_twin.service.persistence import DurableRegistry
from device_twin.service.server import ServerOptions, TwinServer
from device_twin.service.servicer import CrossbarTwinServicer
from pcmtwin.credentials import ConfigError, load_token, make_channel
from pcmtwin.serving import check_bind_policy, is_loopback
from pcmtwin.v1 import twin_pb2
from tests.device_twin.service.conftest import self_signed_cert, small_config, start_inprocess

TOKEN = "tok-3f9a1c7e5b2d4680"


def _code(fn) -> str:
    with pytest.raises(TwinRpcError) as err:
        fn()
    return err.value.code


def test_token_required_when_configured(caplog):
    """With a token, calls without it or with a wrong one get UNAUTHENTICATED; the right one
    works; the token never appears in the logs or in error messages."""
    caplog.set_level(logging.DEBUG)
    server = start_inprocess(token=TOKEN)
    try:
        with TwinClient(server.address, retries=0) as anonymous:
            with pytest.raises(TwinRpcError) as err:
                anonymous.list_chips()
            assert err.value.code == "UNAUTHENTICATED"
            assert "missing bearer token" in str(err.value)
        with TwinClient(server.address, token="tok-wrong", retries=0) as wrong:
            with pytest.raises(TwinRpcError) as err:
                wrong.create_chip(small_config())
            assert err.value.code == "UNAUTHENTICATED"
            assert "wrong bearer token" in str(err.value) and TOKEN not in str(err.value)
        with TwinClient(server.address, token=TOKEN) as right:
            chip_id = right.create_chip(small_config(), "authed")
            assert right.list_chips() == [chip_id]
        assert server.registry.list_chips() == ["authed"]  # the refused create did nothing
    finally:
        server.stop()
    assert TOKEN not in caplog.text


def test_health_is_open_but_reflection_needs_the_token():
    """Health checks work without a token (liveness probes); reflection does not."""
    server = start_inprocess(token=TOKEN)
    try:
        with make_channel(server.address) as channel:
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service="pcmtwin.v1.CrossbarTwin"), timeout=60
            )
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
            stub = reflection_pb2_grpc.ServerReflectionStub(channel)
            request = reflection_pb2.ServerReflectionRequest(list_services="")
            with pytest.raises(grpc.RpcError) as err:
                list(stub.ServerReflectionInfo(iter([request]), timeout=60))
            assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
        with make_channel(server.address, token=TOKEN) as channel:
            stub = reflection_pb2_grpc.ServerReflectionStub(channel)
            (reply,) = stub.ServerReflectionInfo(iter([request]), timeout=60)
            assert "pcmtwin.v1.CrossbarTwin" in {
                s.name for s in reply.list_services_response.service
            }
    finally:
        server.stop()


def test_tls_with_a_self_signed_certificate(tmp_path):
    """Over TLS with a token, a client trusting the certificate works; a plaintext client, a
    client trusting another certificate and a client without the token are refused."""
    cert, key = self_signed_cert(tmp_path, "twin")
    other, _ = self_signed_cert(tmp_path, "other")
    server = start_inprocess(tls_cert=cert, tls_key=key, token=TOKEN)
    try:
        with TwinClient(server.address, root_cert=cert, token=TOKEN) as client:
            chip_id = client.create_chip(small_config(), "tls")
            assert client.list_chips() == [chip_id]
        for kw in ({}, {"root_cert": other}):
            with TwinClient(server.address, token=TOKEN, retries=0, timeout_s=60, **kw) as bad:
                assert _code(bad.list_chips) == "UNAVAILABLE"
        with TwinClient(server.address, root_cert=cert, retries=0) as no_token:
            assert _code(no_token.list_chips) == "UNAUTHENTICATED"
    finally:
        server.stop()


def test_loopback_detection():
    """Loopback IPs, localhost and unix sockets are local; wildcards, LAN IPs and names not."""
    for address in ("127.0.0.1:1", "127.5.0.1:1", "[::1]:1", "localhost:1", "unix:/tmp/x"):
        assert is_loopback(address), address
    for address in ("0.0.0.0:1", "[::]:1", "10.1.2.3:1", "192.168.0.1:1", "twin.example:1"):
        assert not is_loopback(address), address


def test_non_loopback_bind_needs_token_or_tls_or_insecure(tmp_path):
    """A public bind is refused without a token or TLS unless --insecure is explicit."""
    with pytest.raises(ConfigError, match="not a loopback address"):
        check_bind_policy(ServerOptions(address="0.0.0.0:50051"))
    with pytest.raises(ConfigError, match="not a loopback address"):
        TwinServer(ServerOptions(address="10.0.0.1:50051"))
    check_bind_policy(ServerOptions(address="0.0.0.0:50051", token=TOKEN))
    check_bind_policy(ServerOptions(address="0.0.0.0:50051", tls_cert=tmp_path, tls_key=tmp_path))
    check_bind_policy(ServerOptions(address="0.0.0.0:50051", insecure=True))
    with pytest.raises(ConfigError, match="both"):
        check_bind_policy(ServerOptions(tls_cert=tmp_path))
    result = CliRunner().invoke(app, ["twin", "serve", "--address", "0.0.0.0:0"], env={})
    assert result.exit_code == 2
    assert "refusing to bind 0.0.0.0:0" in result.output


def test_token_comes_from_file_or_environment(tmp_path):
    """--token-file wins over $PCM_TWIN_TOKEN; an empty file is refused; no token is None."""
    f = tmp_path / "token"
    f.write_text(f"  {TOKEN}\n")
    assert load_token(f, env={"PCM_TWIN_TOKEN": "from-env"}) == TOKEN
    assert load_token(None, env={"PCM_TWIN_TOKEN": "from-env"}) == "from-env"
    assert load_token(None, env={}) is None
    f.write_text("\n")
    with pytest.raises(ConfigError, match="empty"):
        load_token(f, env={})


def test_not_serving_until_state_is_restored(tmp_path):
    """After bind and before restore, health says NOT_SERVING and calls get UNAVAILABLE."""
    server = TwinServer(ServerOptions(address="127.0.0.1:0", state_dir=tmp_path / "state"))
    server.bind()
    try:
        with make_channel(server.address) as channel:
            health = health_pb2_grpc.HealthStub(channel)
            request = health_pb2.HealthCheckRequest(service="pcmtwin.v1.CrossbarTwin")
            assert health.Check(request, timeout=60).status == (
                health_pb2.HealthCheckResponse.NOT_SERVING
            )
            with (
                TwinClient(server.address, retries=0) as client,
                pytest.raises(TwinRpcError, match="restoring"),
            ):
                client.list_chips()
            server.restore()
            assert health.Check(request, timeout=60).status == (
                health_pb2.HealthCheckResponse.SERVING
            )
    finally:
        server.stop()


class _Aborted(Exception):
    pass


class _Context:
    """The part of a grpc.ServicerContext the servicer uses, with a chosen time left."""

    def __init__(self, time_remaining_s: float | None) -> None:
        self._left = time_remaining_s

    def time_remaining(self) -> float | None:
        return self._left

    def abort(self, code: grpc.StatusCode, details: str):
        raise _Aborted(code, details)


def test_servicer_refuses_calls_whose_deadline_has_passed():
    """A call arriving after its deadline gets DEADLINE_EXCEEDED and changes nothing."""
    registry = DurableRegistry()
    servicer = CrossbarTwinServicer(registry)
    servicer.ready.set()
    request = twin_pb2.CreateChipRequest(
        config_json=small_config().model_dump_json(), chip_id="late"
    )
    with pytest.raises(_Aborted) as err:
        servicer.CreateChip(request, _Context(0.0))
    assert err.value.args == (
        grpc.StatusCode.DEADLINE_EXCEEDED,
        "deadline expired before the call ran",
    )
    assert registry.list_chips() == []
    assert servicer.CreateChip(request, _Context(5.0)).chip_id == "late"
    assert registry.list_chips() == ["late"]
