"""One error mapping for both services: status codes, messages, rich field violations."""

from __future__ import annotations

import grpc
import numpy as np
import pydantic
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from controller.rpc.client import TwinClient
from device_twin import errors
from device_twin.config import ChipConfig
from device_twin.errors import InvalidArgument, NotFound, TwinError
from pcmtwin import status
from pcmtwin.codec import numpy_to_tensor
from pcmtwin.credentials import make_channel
from pcmtwin.v1 import host_pb2, twin_pb2, twin_pb2_grpc
from tests.controller.servers import InProcess, tiny_network
from tests.device_twin.service.conftest import start_inprocess

TYPED = (errors.InvalidArgument, errors.NotFound, errors.AlreadyExists,
         errors.FailedPrecondition, errors.ResourceExhausted)  # fmt: skip


def field_violations(err: grpc.RpcError) -> list[tuple[str, str]]:
    """The google.rpc.BadRequest field violations of a failed call, read with grpcio-status."""
    found = []
    for detail in rpc_status.from_call(err).details:
        bad = error_details_pb2.BadRequest()
        if detail.Unpack(bad):
            found += [(v.field, v.description) for v in bad.field_violations]
    return found


def assert_readable(message: str) -> None:
    """No pydantic dump, documentation link or internal name in a message."""
    for leak in ("input_value", "https://", "pydantic", "For further information", "__"):
        assert leak not in message, message


def test_each_typed_error_maps_to_its_status_and_back():
    """A TwinError is answered with the status its .code names, and a client turns that
    status back into the same class with the same message and violations."""
    for cls in TYPED:
        exc = cls("the tile is wrong", field="tile")
        r = status.refusal(exc)
        assert r.code.name == cls.code and r.message == "the tile is wrong"
        back = status.error_from_status(r.code, r.message, r.violations)
        assert type(back) is cls and str(back) == str(exc)
        assert back.violations == (("tile", "the tile is wrong"),)
    other = status.error_from_status(grpc.StatusCode.UNAVAILABLE, "down")
    assert isinstance(other, status.TwinRpcError) and other.code == "UNAVAILABLE"


def test_pydantic_errors_name_their_fields_without_dumps():
    """A config that fails validation is INVALID_ARGUMENT; each error is a violation named by
    its path under the request field, and the message quotes no input and links nowhere."""
    with pytest.raises(pydantic.ValidationError) as err:
        ChipConfig.model_validate_json('{"tile_rows": 0, "n_tiles": "many"}')
    e = status.invalid_argument(err.value, "config_json", "chip config")
    assert {f for f, _ in e.violations} == {"config_json.tile_rows", "config_json.n_tiles"}
    assert str(e).startswith("chip config is not valid: config_json.")
    assert_readable(str(e))
    stray = status.refusal(err.value)  # one a servicer did not convert itself
    assert stray.code == grpc.StatusCode.INVALID_ARGUMENT
    assert {f for f, _ in stray.violations} == {"tile_rows", "n_tiles"}
    assert_readable(stray.message)
    assert status.field_path("layers", 2, "weight", "data") == "layers[2].weight.data"


def test_a_bug_is_internal_and_names_nothing(caplog):
    """An unexpected exception is INTERNAL with a fixed message; its traceback is logged."""

    class _SecretHelperError(Exception):
        pass

    r = status.refusal(_SecretHelperError("at /srv/x.py"), "a test call")
    assert r.code == grpc.StatusCode.INTERNAL
    assert "Secret" not in r.message and "/srv" not in r.message
    assert "internal error in a test call" in caplog.text


def test_details_stay_small():
    """Violations are capped in number and length, so the details fit in gRPC's metadata."""
    many = InvalidArgument("bad", violations=[(f"f{i}", "x" * 5000) for i in range(100)])
    st = status.to_grpc_status(status.refusal(many))
    details = dict(st.trailing_metadata)["grpc-status-details-bin"]
    assert len(details) <= status.MAX_DETAILS_BYTES + 100
    assert st.code == grpc.StatusCode.INVALID_ARGUMENT and st.details == "bad"


def test_twin_refusals_carry_field_violations_over_grpc():
    """Over loopback, a refused CrossbarTwin call keeps its plain code and message and adds a
    BadRequest naming the field; TwinClient raises the core's error with those violations."""
    server = start_inprocess()
    try:
        with make_channel(server.address) as ch:
            stub = twin_pb2_grpc.CrossbarTwinStub(ch)
            with pytest.raises(grpc.RpcError) as err:
                stub.CreateChip(twin_pb2.CreateChipRequest(config_json='{"tile_rows": 0}'))
            assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert err.value.details().startswith("chip config is not valid: config_json.tile_rows")
            assert_readable(err.value.details())
            assert [f for f, _ in field_violations(err.value)] == ["config_json.tile_rows"]
            chip_id = stub.CreateChip(twin_pb2.CreateChipRequest(config_json="{}")).chip_id
            x = numpy_to_tensor(np.zeros((1, 4), np.int8))
            with pytest.raises(grpc.RpcError) as err:
                stub.Mvm(twin_pb2.MvmRequest(chip_id=chip_id, tile=0, x=x, at_s=1.0))
            assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert field_violations(err.value) == [("x.dtype", err.value.details())]
        with TwinClient(server.address) as client, pytest.raises(InvalidArgument) as typed:
            client.mvm(chip_id, 0, np.zeros((1, 4), np.int8), at_s=1.0)
        assert typed.value.violations == (("x.dtype", str(typed.value)),)
    finally:
        server.stop(grace_s=0)


def test_chip_host_refusals_use_the_same_mapping():
    """ChipHost answers a bad chip config as the twin does: INVALID_ARGUMENT, a readable
    message, and a BadRequest naming chip_config_json's field."""
    s = InProcess()
    try:
        request = host_pb2.LoadNetworkRequest(
            network=tiny_network().to_proto(), chip_config_json='{"tile_rows": 0}'
        )
        with pytest.raises(grpc.RpcError) as err:
            s.stub.LoadNetwork(request, timeout=120)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert_readable(err.value.details())
        assert [f for f, _ in field_violations(err.value)] == ["chip_config_json.tile_rows"]
        with pytest.raises(grpc.RpcError) as err:
            s.stub.Infer(host_pb2.InferRequest(), timeout=120)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert [f for f, _ in field_violations(err.value)] == ["x"]
    finally:
        s.close()


def test_twin_errors_keep_working_without_details():
    """TwinError still takes a bare message (no field): no violations, no details sent."""
    e = TwinError("plain")
    assert e.violations == ()
    st = status.to_grpc_status(status.refusal(NotFound("chip 'a' not found")))
    assert st.code == grpc.StatusCode.NOT_FOUND and st.details == "chip 'a' not found"
