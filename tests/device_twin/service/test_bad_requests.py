"""Bad requests get the right status code and a message saying what was wrong; the chip is
unchanged afterwards and the server keeps serving."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import grpc
import numpy as np
import pytest

from controller.rpc.client import TwinClient
from device_twin import Array, Chip
from pcmtwin.codec import numpy_to_tensor
from pcmtwin.credentials import make_channel
from pcmtwin.v1 import tensor_pb2, twin_pb2, twin_pb2_grpc
from tests.device_twin.service.conftest import small_config, start_inprocess

CHIP = "bad-requests"
LIMIT = 1024**2
CFG = small_config()  # 2 tiles of 24 x 16; tile 0 programmed, tile 1 not
N = CFG.tile_rows * CFG.tile_cols
INVALID, NOT_FOUND = grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND
PRECONDITION, EXHAUSTED = grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.RESOURCE_EXHAUSTED
T_S = 1000.0  # the chip's time during the cases (reads in between advance it)


def t(a) -> tensor_pb2.Tensor:
    return numpy_to_tensor(np.asarray(a))


def raw(data: bytes, dtype: str, shape: list[int]) -> tensor_pb2.Tensor:
    return tensor_pb2.Tensor(data=data, dtype=dtype, shape=shape)


G = np.full((CFG.tile_rows, CFG.tile_cols), 5.0, np.float32)
DEV = np.array([0, 5, 17], np.int64)


def read(**kw) -> twin_pb2.ReadDevicesRequest:
    base = dict(chip_id=CHIP, tile=0, array=twin_pb2.ARRAY_POS, devices=t(DEV), at_s=T_S * 10)
    return twin_pb2.ReadDevicesRequest(**{**base, **kw})


def pulses(**kw) -> twin_pb2.ApplyPulsesRequest:
    base = dict(chip_id=CHIP, tile=0, array=twin_pb2.ARRAY_POS, devices=t(DEV),
                kind=twin_pb2.PULSE_KIND_SET, count=t(np.int64(1)), at_s=T_S * 10)  # fmt: skip
    return twin_pb2.ApplyPulsesRequest(**{**base, **kw})


def prog_dev(**kw) -> twin_pb2.ProgramDevicesRequest:
    base = dict(chip_id=CHIP, tile=0, array=twin_pb2.ARRAY_NEG, devices=t(DEV),
                g_target_us=t(np.full(3, 4.0, np.float32)), at_s=T_S * 10)  # fmt: skip
    return twin_pb2.ProgramDevicesRequest(**{**base, **kw})


def mvm(**kw) -> twin_pb2.MvmRequest:
    x = np.ones((2, CFG.tile_rows), np.float32)
    return twin_pb2.MvmRequest(**{**dict(chip_id=CHIP, tile=0, x=t(x), at_s=T_S * 10), **kw})


def conv(**kw) -> twin_pb2.ConvMvmRequest:
    x = np.ones((2, 2, 4, 4), np.float32)
    base = dict(chip_id=CHIP, tile=0, x=t(x), at_s=T_S * 10, kernel=[3, 3], padding=[1, 1], k=18)
    return twin_pb2.ConvMvmRequest(**{**base, **kw})


def program(**kw) -> twin_pb2.ProgramRequest:
    base = dict(chip_id=CHIP, tile=0, g_target_pos_us=t(G), g_target_neg_us=t(G), at_s=T_S * 10)
    return twin_pb2.ProgramRequest(**{**base, **kw})


def create(config: str, chip_id: str = "") -> twin_pb2.CreateChipRequest:
    return twin_pb2.CreateChipRequest(config_json=config, chip_id=chip_id)


def too_many_chips(stub: twin_pb2_grpc.CrossbarTwinStub) -> None:
    stub.CreateChip(create(CFG.model_dump_json(), "filler"), timeout=60)
    try:
        stub.CreateChip(create(CFG.model_dump_json(), "one-too-many"), timeout=60)
    finally:
        stub.DeleteChip(twin_pb2.DeleteChipRequest(chip_id="filler"), timeout=60)


@dataclass
class Case:
    name: str
    call: Callable[[twin_pb2_grpc.CrossbarTwinStub], object]
    code: grpc.StatusCode
    message: str


def rpc(method: str, request) -> Callable:
    return lambda stub: getattr(stub, method)(request, timeout=60)


NAN_G = G.copy()
NAN_G[2, 3] = np.nan
BIG = np.zeros(LIMIT // 4 + 1024, np.float32)  # a request over the 1 MiB message limit

CASES = [
    Case("x not 2-D", rpc("Mvm", mvm(x=t(np.ones(CFG.tile_rows, np.float32)))), INVALID,
         "x has shape (24,), expected (batch >= 1, inputs >= 1)"),
    Case("target of wrong shape", rpc("Program", program(g_target_neg_us=t(G[:, :3]))), INVALID,
         "g_target_neg_us has shape (24, 3), expected (24, 16)"),
    Case("unsupported dtype", rpc("Mvm", mvm(x=raw(b"\0" * 8, "float16", [2, 2]))), INVALID,
         "x.dtype 'float16' is not accepted here: expected one of float32, float64"),
    Case("integer targets", rpc("ProgramDevices", prog_dev(g_target_us=t(np.ones(3, np.int32)))),
         INVALID, "g_target_us.dtype 'int32' is not accepted here"),
    Case("byte length vs shape", rpc("Mvm", mvm(x=raw(b"\0" * 12, "float32", [2, 3]))), INVALID,
         "x has 12 bytes of data, but dtype float32 and shape [2, 3] need 24"),
    Case("negative dimension", rpc("Mvm", mvm(x=raw(b"", "float32", [-1, 4]))), INVALID,
         "x.shape [-1, 4] is not valid"),
    Case("absurd shape", rpc("Mvm", mvm(x=raw(b"\0" * 4, "float32", [2**40, 2**40]))), INVALID,
         "need 4835703278458516698824704"),
    Case("NaN target", rpc("Program", program(g_target_pos_us=t(NAN_G))), INVALID,
         "g_target_pos_us contains NaN or Inf"),
    Case("Inf input", rpc("Mvm", mvm(x=t(np.full((1, 4), np.inf, np.float32)))), INVALID,
         "x contains NaN or Inf"),
    Case("negative target", rpc("ProgramDevices", prog_dev(g_target_us=t(np.array([1, -2, 3.0])))),
         INVALID, "g_target_us out of range: conductances must lie in [0, 25.0] uS"),
    Case("target over g_max", rpc("Program", program(g_target_pos_us=t(G * 6))), INVALID,
         "g_target_pos_us out of range: conductances must lie in [0, 25.0] uS"),
    Case("unknown chip", rpc("ReadDevices", read(chip_id="no-such-chip")), NOT_FOUND,
         "chip 'no-such-chip' not found"),
    Case("unknown tile", rpc("Probe", twin_pb2.ProbeRequest(
        chip_id=CHIP, tile=7, rows=t(np.arange(2)), array=twin_pb2.ARRAY_DIFF, at_s=T_S * 10)),
         NOT_FOUND, "tile 7 does not exist: this chip has tiles 0..1"),
    Case("unknown array value", rpc("ReadDevices", read(array=7)), INVALID,
         "unknown array value 7: expected ARRAY_POS (1), ARRAY_NEG (2)"),
    Case("array not set", rpc("ApplyPulses", pulses(array=twin_pb2.ARRAY_UNSPECIFIED)), INVALID,
         "array is not set (ARRAY_UNSPECIFIED)"),
    Case("DIFF outside probe", rpc("ReadDevices", read(array=twin_pb2.ARRAY_DIFF)), INVALID,
         "ARRAY_DIFF is only valid for Probe"),
    Case("unknown pulse kind", rpc("ApplyPulses", pulses(kind=9)), INVALID,
         "unknown pulse kind value 9: expected PULSE_KIND_SET (1) or PULSE_KIND_RESET (2)"),
    Case("time going backwards", rpc("ReadDevices", read(at_s=1.0)), PRECONDITION,
         "time going backwards: at_s=1.0 is before the chip's current time"),
    Case("NaN time", rpc("ReadDevices", read(at_s=math.nan)), INVALID,
         "at_s must be finite and in [0, 1e+12] s"),
    Case("tile not programmed", rpc("ReadDevices", read(tile=1)), PRECONDITION,
         "tile 1 is not programmed: call program first"),
    Case("empty device list", rpc("ReadDevices", read(devices=t(np.zeros(0, np.int64)))), INVALID,
         "devices is empty"),
    Case("duplicate devices", rpc("ApplyPulses", pulses(devices=t(np.array([3, 4, 3])))), INVALID,
         "devices contains duplicates"),
    Case("device index out of range", rpc("ReadDevices", read(devices=t(np.array([0, N])))),
         INVALID, f"devices out of range: expected 0..{N - 1}"),
    Case("pulse count out of range", rpc("ApplyPulses", pulses(count=t(np.int64(1001)))),
         INVALID, "count out of range: expected 1..1000 pulses per device"),
    Case("missing tensor", rpc("Mvm", twin_pb2.MvmRequest(chip_id=CHIP, tile=0, at_s=T_S * 10)),
         INVALID, "x is required: a float Tensor of inputs (batch, k)"),
    Case("convolution without a kernel", rpc("ConvMvm", conv(kernel=[])), INVALID,
         "kernel must be two integers in [1, 64] (height, width), got []"),
    Case("activation not 4-D", rpc("ConvMvm", conv(x=t(np.ones((2, 8), np.float32)))), INVALID,
         "x has shape (2, 8), expected (images >= 1, channels, height, width)"),
    Case("NaN activation", rpc("ConvMvm", conv(x=t(np.full((1, 2, 4, 4), np.nan, np.float32)))),
         INVALID, "x contains NaN or Inf"),
    Case("kernel larger than the input", rpc("ConvMvm", conv(kernel=[7, 7], padding=[0, 0])),
         INVALID, "does not fit an input of 4x4"),
    Case("unrolled columns out of range", rpc("ConvMvm", conv(patch_start=5)), INVALID,
         "unrolled columns 5..22 out of range: 2 channels x 9 kernel positions make 18"),
    Case("unrolled rows past the tile", rpc("ConvMvm", conv(row_start=10)), INVALID,
         "the unrolled input drives rows 10..27, but the tile has 24 rows"),
    Case("convolution over the response limit",
         rpc("ConvMvm", conv(x=t(np.ones((1100, 1, 4, 4), np.float32)), k=9)), EXHAUSTED,
         "a convolution of 17600 positions on 16 columns would return 1126400 bytes"),
    Case("columns out of range", rpc("Mvm", mvm(col_start=10, col_count=10)), INVALID,
         "columns 10..19 out of range: the tile has 16"),
    Case("first column past the tile", rpc("Mvm", mvm(col_start=17)), INVALID,
         "col_start 17 is past the tile's last column: the tile has 16 columns, 0..15"),
    Case("first probed column past the tile", rpc("Probe", twin_pb2.ProbeRequest(
        chip_id=CHIP, tile=0, rows=t(np.arange(2)), array=twin_pb2.ARRAY_POS, at_s=T_S * 10,
        col_start=16)), INVALID, "col_start 16 is past the tile's last column"),
    Case("request over the message limit", rpc("Mvm", mvm(x=t(BIG.reshape(-1, 4)))), EXHAUSTED,
         "larger than max"),
    Case("response over the message limit",
         rpc("Mvm", mvm(x=t(np.ones((LIMIT // 64, 1), np.float32)))), EXHAUSTED,
         "would return 1048576 bytes, over this server's limit"),
    Case("chip over the memory budget",
         rpc("CreateChip", create(small_config(tile_rows=64, tile_cols=64).model_dump_json())),
         EXHAUSTED, "chip state of 327680 bytes does not fit"),  # 20 B per device
    Case("too many chips", too_many_chips, EXHAUSTED, "this twin holds at most 2 chips"),
    Case("bad chip id", rpc("CreateChip", create("{}", "bad id!")), INVALID,
         "chip_id 'bad id!' is not valid"),
    Case("duplicate chip id", rpc("CreateChip", create("{}", CHIP)), grpc.StatusCode.ALREADY_EXISTS,
         f"chip '{CHIP}' already exists"),
    Case("config not JSON", rpc("CreateChip", create("{tiles: 2")), INVALID,
         "chip config is not valid"),
    Case("unknown config field", rpc("CreateChip", create('{"n_tile": 2}')), INVALID,
         "n_tile: Extra inputs are not permitted"),
    Case("config value out of range", rpc("CreateChip", create('{"tile_rows": 0}')), INVALID,
         "tile_rows: Input should be greater than or equal to 1"),
    Case("unknown device family", rpc("CreateChip", create('{"device": {"family": "flash"}}')),
         INVALID, "expected tags: 'pcm', 'pcm_hermes', 'reram_wan2022', 'reram_cmo'"),
    Case("family beyond its range",
         rpc("CreateChip", create('{"g_max_us": 30, "device": {"family": "pcm_hermes"}}')),
         INVALID, "characterised up to 20.7 uS"),
]  # fmt: skip


@pytest.fixture(scope="module")
def twin():
    """A server with small limits, one chip with tile 0 programmed, and its in-process twin."""
    server = start_inprocess(max_message_bytes=LIMIT, max_chips=2, state_budget_bytes=64 * 1024)
    client = TwinClient(server.address, max_message_bytes=8 * LIMIT)
    channel = make_channel(server.address, max_message_bytes=8 * LIMIT)
    local = Chip(CFG)
    client.create_chip(CFG, CHIP)
    client.program(CHIP, 0, G, G * 2, at_s=T_S)
    local.program(0, G, G * 2, at_s=T_S)
    state = {"t": T_S}
    yield client, twin_pb2_grpc.CrossbarTwinStub(channel), local, state
    channel.close()
    client.close()
    server.stop()


def _observe(client: TwinClient) -> tuple:
    info = client.chip_info(CHIP)
    snap = client.snapshot(CHIP)
    arrays = tuple(a[t].tobytes() for a in (snap.g_prog_us, snap.nu, snap.t_write_s) for t in a)
    return (client.list_chips(), info.now_s, info.op_counter, info.programmed_tiles,
            client.energy_ledger(CHIP), arrays)  # fmt: skip


def test_the_table_is_large_and_distinct():
    """The table holds at least 20 distinct bad requests."""
    assert len({c.name for c in CASES}) == len(CASES) >= 20


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bad_request(twin, case: Case):
    """The bad request gets its status code and message, changes nothing, and the server
    still serves: a later read matches the in-process chip exactly."""
    client, stub, local, state = twin
    before = _observe(client)
    with pytest.raises(grpc.RpcError) as err:
        case.call(stub)
    assert err.value.code() == case.code, err.value.details()
    assert case.message in err.value.details()
    assert _observe(client) == before
    state["t"] += 1.0
    remote = client.read_devices(CHIP, 0, Array.NEG, DEV, state["t"])
    assert (
        remote.values.tobytes()
        == local.read_devices(0, Array.NEG, DEV, state["t"]).values.tobytes()
    )
