"""Request ids on the CrossbarTwin, through the generated stubs: a retry (the same request) is
answered from the record, another request under a used id is refused (also after a restart
on the state directory, and inside a Session, where refusals carry their field violations)."""

from __future__ import annotations

import grpc
import numpy as np
import pytest

from pcmtwin.credentials import make_channel
from pcmtwin.v1 import twin_pb2, twin_pb2_grpc
from tests.controller.servers import from_tensor, tensor
from tests.device_twin.service.conftest import start_inprocess
from tests.pcmtwin.test_status import field_violations


def _program(stub, chip: str, rid: str) -> None:
    g = np.full((4, 8), 5.0, np.float32)
    stub.Program(twin_pb2.ProgramRequest(chip_id=chip, tile=0, g_target_pos_us=tensor(g),
                                         g_target_neg_us=tensor(g), at_s=1.0, request_id=rid))  # fmt: skip


def _setup(stub) -> str:
    chip = stub.CreateChip(twin_pb2.CreateChipRequest(
        config_json='{"n_tiles": 1, "tile_rows": 4, "tile_cols": 8, "seed": 1}')).chip_id  # fmt: skip
    _program(stub, chip, "p-1")
    return chip


def _mvm(chip: str, rid: str, at_s: float = 2.0) -> twin_pb2.MvmRequest:
    x = tensor(np.ones((1, 4), np.float32))
    return twin_pb2.MvmRequest(chip_id=chip, tile=0, x=x, at_s=at_s, request_id=rid)


def _read(chip: str, rid: str) -> twin_pb2.ReadDevicesRequest:
    return twin_pb2.ReadDevicesRequest(chip_id=chip, tile=0, array=twin_pb2.ARRAY_POS,
                                       devices=tensor(np.arange(3)), at_s=2.0, request_id=rid)  # fmt: skip


@pytest.fixture
def twin():
    server = start_inprocess()
    channel = make_channel(server.address)
    yield server, twin_pb2_grpc.CrossbarTwinStub(channel)
    channel.close()
    server.stop(grace_s=0)


def test_a_request_id_reused_for_another_request_is_refused(twin):
    """ReadDevices under the id an Mvm used is INVALID_ARGUMENT naming request_id; the very
    same Mvm again is answered from the record (same values, the chip untouched)."""
    server, stub = twin
    chip = _setup(stub)
    first = stub.Mvm(_mvm(chip, "rid-A"))
    ops = stub.GetChipInfo(twin_pb2.ChipInfoRequest(chip_id=chip)).op_counter
    with pytest.raises(grpc.RpcError) as err:
        stub.ReadDevices(_read(chip, "rid-A"))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "request_id 'rid-A' already named another request" in err.value.details()
    assert [f for f, _ in field_violations(err.value)] == ["request_id"]
    with pytest.raises(grpc.RpcError) as err:  # the same operation at another time
        stub.Mvm(_mvm(chip, "rid-A", at_s=3.0))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    again = stub.Mvm(_mvm(chip, "rid-A"))
    assert again.kind == "mvm" and from_tensor(again.values).tobytes() == (
        from_tensor(first.values).tobytes())  # fmt: skip
    assert stub.GetChipInfo(twin_pb2.ChipInfoRequest(chip_id=chip)).op_counter == ops


def test_chip_creation_and_deletion_ids_name_one_request(twin):
    """CreateChip retried is the same chip; another config under its id is refused; a
    DeleteChip id reused for another chip is refused and deletes nothing."""
    server, stub = twin
    make = twin_pb2.CreateChipRequest(config_json='{"n_tiles": 1}', request_id="c-1")
    a = stub.CreateChip(make).chip_id
    assert stub.CreateChip(make).chip_id == a
    with pytest.raises(grpc.RpcError) as err:
        stub.CreateChip(twin_pb2.CreateChipRequest(config_json='{"n_tiles": 2}', request_id="c-1"))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    b = stub.CreateChip(twin_pb2.CreateChipRequest(config_json='{"n_tiles": 1}')).chip_id
    stub.DeleteChip(twin_pb2.DeleteChipRequest(chip_id=a, request_id="d-1"))
    with pytest.raises(grpc.RpcError) as err:
        stub.DeleteChip(twin_pb2.DeleteChipRequest(chip_id=b, request_id="d-1"))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert list(stub.ListChips(twin_pb2.ListChipsRequest()).chip_ids) == [b]


def test_a_session_refusal_carries_its_field_violations(twin):
    """Inside a Session a refused operation is answered with a google.rpc.Status whose
    BadRequest names the field (a reused request id, a malformed tensor)."""
    from google.rpc import error_details_pb2

    server, stub = twin
    chip = _setup(stub)
    bad_x = _mvm(chip, "")
    bad_x.x.data = b"\0" * 3
    requests = [twin_pb2.SessionRequest(mvm=_mvm(chip, "s-1")),
                twin_pb2.SessionRequest(read_devices=_read(chip, "s-1")),
                twin_pb2.SessionRequest(mvm=bad_x)]  # fmt: skip
    answers = list(stub.Session(iter(requests)))
    assert answers[0].code == 0 and answers[0].result.kind == "mvm"
    fields = []
    for a in answers[1:]:
        assert a.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
        assert a.status.code == a.code and a.status.message == a.message
        bad = error_details_pb2.BadRequest()
        assert a.status.details[0].Unpack(bad)
        fields.append([v.field for v in bad.field_violations])
    assert fields == [["request_id"], ["x.data"]]


def test_request_ids_are_remembered_with_their_requests_across_a_restart(tmp_path):
    """With a state directory, a request id reused for another request after a restart is
    still refused, and the same request still answered from the record."""
    state = tmp_path / "state"
    server = start_inprocess(state_dir=state)
    channel = make_channel(server.address)
    stub = twin_pb2_grpc.CrossbarTwinStub(channel)
    chip = _setup(stub)
    first = stub.Mvm(_mvm(chip, "rid-B"))
    channel.close()
    server.stop(grace_s=0)
    server = start_inprocess(state_dir=state)
    channel = make_channel(server.address)
    stub = twin_pb2_grpc.CrossbarTwinStub(channel)
    try:
        assert stub.Mvm(_mvm(chip, "rid-B")).values.data == first.values.data
        with pytest.raises(grpc.RpcError) as err:
            stub.ReadDevices(_read(chip, "rid-B"))
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    finally:
        channel.close()
        server.stop(grace_s=0)


def test_digests_tell_requests_apart_and_only_digests_of_one_scheme_are_compared():
    """The request digest changes with any field (here one value of an MVM's activation) and
    names its scheme; a digest of another scheme (an older log's blake2b) is not compared."""
    from device_twin.errors import InvalidArgument
    from device_twin.service.persistence.chip_state import check_same_request
    from device_twin.service.servicer import DIGEST_SCHEME, request_digest

    a = _mvm("c", "r-1")
    x = np.ones((1, 4), np.float32)
    x[0, 3] = np.nextafter(np.float32(1.0), np.float32(2.0))  # one ulp apart
    b = twin_pb2.MvmRequest(chip_id="c", tile=0, x=tensor(x), at_s=2.0, request_id="r-1")
    da, db = request_digest(a), request_digest(b)
    assert da == request_digest(_mvm("c", "r-1"))
    assert da != db and da.startswith(f"{DIGEST_SCHEME}:") and len(da.split(":")[1]) == 32
    with pytest.raises(InvalidArgument, match="request_id"):
        check_same_request("r-1", da, db, "Mvm")
    check_same_request("r-1", "0f" * 16, db, "Mvm")  # an older log's digest: accepted
    assert request_digest(_mvm("c", "")) == ""  # no id: nothing to tell apart, nothing hashed
