"""Fuzzing every CrossbarTwin RPC with random and extreme messages (hypothesis).

Each test sends one RPC's requests, built with the generated stubs so that malformed ones
reach the server, and ``TwinHarness.run`` checks the answer and the server after each case
(see tests/reliability/twin_harness.py): a defined status code, a live server, nothing
changed by a refused request, only the addressed devices changed by an accepted one, and
finite, physical device state everywhere. The number of cases per RPC is printed at the end
of the run ("fuzz cases per RPC").
"""

from __future__ import annotations

import json

import grpc
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from device_twin import Array, Chip, ChipConfig
from pcmtwin.v1 import twin_pb2
from tests.reliability.fuzzing import (
    PICKLE_BYTES,
    REQUEST_IDS,
    TIMES,
    At,
    Field,
    bad_tensors,
    chip_ids,
    fill,
    fill_and_flaws,
    float_arrays,
    fuzz_settings,
    index_arrays,
    int64s,
    np_tensor,
    tally,
)
from tests.reliability.refusals import check_refusal, rich_status
from tests.reliability.twin_harness import (
    ALLOWED,
    CFG,
    FIXTURES,
    LIMIT,
    MAX_CHIPS,
    N_DEV,
    QUERIES,
    TwinHarness,
)


@pytest.fixture(scope="module")
def twin():
    h = TwinHarness()
    yield h
    h.close()


class Req:
    """A request whose ``at_s`` is resolved against the addressed chip's clock when sent."""

    def __init__(self, cls, fields: dict, at: At | None = None) -> None:
        self.cls, self.fields, self.at = cls, fields, at

    def build(self, twin: TwinHarness):
        fields = {k: v for k, v in self.fields.items() if v is not None}
        if self.at is not None:
            fields["at_s"] = self.at.resolve(twin.now_s(fields.get("chip_id", "")))
        return self.cls(**fields)

    def __repr__(self) -> str:
        parts = {k: (f"Tensor({v.dtype!r}, {list(v.shape)}, {len(v.data)} B)"
                     if hasattr(v, "dtype") else v) for k, v in self.fields.items()}  # fmt: skip
        return f"{self.cls.__name__}({parts}, at={self.at})"


def requests(cls, timed: bool = True, **fields: Field) -> st.SearchStrategy[Req]:
    """Requests of ``cls`` with no, or one to three, fields broken (``at_s`` included)."""
    every = {**fields, **({"at": TIMES} if timed else {})}
    return fill(every).map(
        lambda f: Req(cls, {k: v for k, v in f.items() if k != "at"}, f.get("at"))
    )


def send(twin: TwinHarness, rpc: str, r: Req) -> None:
    twin.ensure_fixtures()
    twin.run(rpc, r.build(twin))


CHIPS = chip_ids(FIXTURES)
RIDS = Field(REQUEST_IDS, REQUEST_IDS)
BAD_TILES = st.sampled_from((1, 2)) | int64s()
TILE = Field(st.just(0), BAD_TILES)
#: POS, NEG, BOTH (devices over both arrays: index = array * rows * cols + row * cols + col)
ARRAY = Field(
    st.sampled_from((1, 2, 4)), st.sampled_from((0, 3, 5)) | st.integers(-(2**31), 2**31 - 1)
)
SHAPE = (CFG.tile_rows, CFG.tile_cols)
BAD_SHAPES = st.sampled_from([(16, 24), (24,), (0, 16), (24, 16, 1), (), (1, 1), (25, 16)])


def floats(shape, lo, hi, **kw):
    return float_arrays(shape, lo, hi, **kw)


def targets(limit: int = LIMIT) -> Field:
    """Target conductances for a whole tile: in [0, g_max] or not, of the right shape or not."""
    wrong = st.one_of(
        floats(SHAPE, 0.0, CFG.g_max_us, extremes=True),
        BAD_SHAPES.flatmap(lambda s: floats(s, 0.0, CFG.g_max_us)),
        floats(SHAPE, 0.0, CFG.g_max_us, dtypes=("int32", "uint8")),
    )
    return Field(floats(SHAPE, 0.0, CFG.g_max_us).map(np_tensor), bad_tensors(limit, wrong))


# --- chips ----------------------------------------------------------------------------------
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                max_size=4),
    max_leaves=12,
)  # fmt: skip
CONFIG_KEYS = ("n_tiles", "tile_rows", "tile_cols", "g_max_us", "seed", "device", "pulse",
               "periphery", "energy", "program_verify")  # fmt: skip


@st.composite
def config_jsons(draw) -> str:
    if draw(st.booleans()):
        return json.dumps({
            "n_tiles": draw(st.integers(1, 4)), "tile_rows": draw(st.integers(1, 64)),
            "tile_cols": draw(st.integers(1, 64)), "seed": draw(st.integers(0, 2**63 - 1)),
        })  # fmt: skip
    kind = draw(st.sampled_from(("fields", "json", "text", "huge", "special")))
    if kind == "fields":
        keys = draw(st.lists(st.sampled_from(CONFIG_KEYS), max_size=4, unique=True))
        return json.dumps({k: draw(JSON_VALUES) for k in keys})
    if kind == "json":
        return json.dumps(draw(JSON_VALUES))
    if kind == "huge":
        return json.dumps({"n_tiles": 4096, "tile_rows": 8192, "tile_cols": 8192})
    if kind == "special":
        return draw(st.sampled_from((
            '{"seed": -1}', '{"seed": 1e400}', '{"tile_rows": 1.5}', '{"__class__": "os.system"}',
            "!!python/object/apply:os.system", '{"n_tiles": 2, "n_tiles": 3}', "{" * 5000,
            '"\\u0000"', PICKLE_BYTES.hex(), '{"tile_rows": 0}', '{"n_tiles": 5000}',
        )))  # fmt: skip
    return draw(st.text(max_size=60))


NEW_IDS = Field(
    st.just("") | st.text("abcdef0123456789_.-", min_size=1, max_size=12).map(lambda s: f"new-{s}"),
    st.sampled_from((*FIXTURES, "bad id!", "x" * 65, "-x", "\x00", "../x")),
)


@fuzz_settings(100)
@given(f=fill({"config_json": Field(config_jsons(), config_jsons()), "chip_id": NEW_IDS,
               "request_id": RIDS}))  # fmt: skip
def test_create_chip(twin, f):
    """CreateChip with valid, garbage, absurd and oversized configs and ids."""
    twin.ensure_fixtures(keep_scratch=True)
    scratch = twin.scratch_chips()
    if len(scratch) >= MAX_CHIPS - len(FIXTURES) and twin.cases % 3 == 0:
        for cid in scratch:  # make room now and then; otherwise the server is full
            twin.client.delete_chip(cid)
    twin.run("CreateChip", twin_pb2.CreateChipRequest(**f))


@fuzz_settings(50)
@given(chip_id=st.sampled_from((*FIXTURES, "new-0", "new-1")) | CHIPS.bad, rid=REQUEST_IDS)
def test_delete_chip(twin, chip_id, rid):
    """DeleteChip of well-known, scratch and unknown chips."""
    twin.ensure_fixtures(keep_scratch=True)
    scratch = twin.scratch_chips()
    new = f"new-{twin.cases % 2}"
    if twin.cases % 3 == 0 and new not in scratch:
        if len(scratch) >= MAX_CHIPS - len(FIXTURES):
            twin.client.delete_chip(scratch[0])
        twin.client.create_chip(CFG, new)
    twin.run("DeleteChip", twin_pb2.DeleteChipRequest(chip_id=chip_id, request_id=rid))


@fuzz_settings(40)
@given(r=requests(twin_pb2.ChipInfoRequest, timed=False, chip_id=CHIPS))
def test_get_chip_info(twin, r):
    """GetChipInfo of known and unknown chips."""
    send(twin, "GetChipInfo", r)


@fuzz_settings(40)
@given(r=requests(twin_pb2.EnergyLedgerRequest, timed=False, chip_id=CHIPS))
def test_get_energy_ledger(twin, r):
    """GetEnergyLedger of known and unknown chips."""
    send(twin, "GetEnergyLedger", r)


TILE_LISTS = Field(
    st.lists(st.sampled_from((0, 1)), max_size=3), st.lists(BAD_TILES | st.just(0), max_size=6)
)


@fuzz_settings(50)
@given(r=requests(twin_pb2.SnapshotRequest, timed=False, chip_id=CHIPS, tiles=TILE_LISTS))
def test_snapshot(twin, r):
    """Snapshot of any tiles; what it streams is exactly the registry's state."""
    twin.ensure_fixtures()
    request = r.build(twin)
    out = twin.run("Snapshot", request)
    if out.code == grpc.StatusCode.OK and out.response:
        state = twin.copy(request.chip_id)
        for chunk in out.response:
            g = np.frombuffer(chunk.g_prog_us.data, "<f4").reshape(tuple(chunk.g_prog_us.shape))
            rows = slice(chunk.row_start, chunk.row_start + g.shape[1])
            assert np.array_equal(g, state.g[chunk.tile][:, rows])
            assert chunk.now_s == state.now_s and chunk.op_counter == state.op_counter


# --- writes ---------------------------------------------------------------------------------
PROGRAM_REQUESTS = requests(
    twin_pb2.ProgramRequest, chip_id=CHIPS, tile=Field(st.sampled_from((0, 0, 0, 1)), BAD_TILES),
    g_target_pos_us=targets(), g_target_neg_us=targets(), request_id=RIDS,
)  # fmt: skip


@fuzz_settings(100)
@given(r=PROGRAM_REQUESTS)
def test_program(twin, r):
    """Program whole tiles with targets of any shape, dtype and value."""
    send(twin, "Program", r)


@st.composite
def program_devices_requests(draw) -> Req:
    """Devices and one target per device, either of which may be broken (or their lengths
    disagree), with the usual chip, tile, array, time and request id."""
    f, broken = draw(fill_and_flaws(
        {"chip_id": CHIPS, "tile": TILE, "array": ARRAY, "at": TIMES, "request_id": RIDS},
        extra=("devices", "g_target_us", "length"),
    ))  # fmt: skip
    limit = 2 * N_DEV if f["array"] == 4 else N_DEV
    idx = draw(index_arrays(limit, 64, flaw="devices" in broken))
    n = draw(st.integers(0, 70)) if "length" in broken else idx.size
    g = draw(floats((n,), 0.0, CFG.g_max_us, extremes="g_target_us" in broken))
    f["devices"] = np_tensor(idx)
    f["g_target_us"] = np_tensor(g)
    if "devices" in broken and draw(st.booleans()):
        f["devices"] = draw(bad_tensors(LIMIT))
    if "g_target_us" in broken and draw(st.booleans()):
        f["g_target_us"] = draw(bad_tensors(LIMIT))
    at = f.pop("at")
    return Req(twin_pb2.ProgramDevicesRequest, f, at)


@fuzz_settings(120)
@given(r=program_devices_requests())
def test_program_devices(twin, r):
    """ProgramDevices with any indices, targets, arrays, tiles and times."""
    send(twin, "ProgramDevices", r)


@st.composite
def pulse_counts(draw, n: int, bad: bool) -> np.ndarray:
    """Counts in 1..40, a scalar (all devices) or one per device; ``bad``: a wrong length,
    0, negative, over the limit of 1000 per call, huge, or floats."""
    m = draw(st.integers(0, 70)) if bad and draw(st.booleans()) else n
    counts = np.random.default_rng(draw(st.integers(0, 2**32 - 1))).integers(1, 41, m)
    scalar = draw(st.booleans())
    dt = "int64"
    if bad:
        value = draw(st.sampled_from((0, -1, 1000, 1001, 2**31 - 1, -(2**63))))
        counts = np.full(max(m, 1), value, np.int64) if scalar else np.append(counts, value)
        dt = draw(st.sampled_from(("int64", "int32", "uint8", "uint64", "float32")))
    else:
        dt = draw(st.sampled_from(("int64", "int32", "int16", "uint16")))
    if scalar:
        counts = np.append(counts, 1)[:1].reshape(())
    return counts.astype(dt)


@st.composite
def apply_pulses_requests(draw) -> Req:
    """Devices, a pulse kind and counts, any of which may be broken."""
    kinds = Field(
        st.sampled_from((1, 2)), st.sampled_from((0, 3)) | st.integers(-(2**31), 2**31 - 1)
    )
    f, broken = draw(fill_and_flaws(
        {"chip_id": CHIPS, "tile": TILE, "array": ARRAY, "kind": kinds, "at": TIMES,
         "request_id": RIDS},
        extra=("devices", "count"),
    ))  # fmt: skip
    idx = draw(index_arrays(2 * N_DEV if f["array"] == 4 else N_DEV, 48,
                            flaw="devices" in broken))  # fmt: skip
    f["devices"] = np_tensor(idx)
    f["count"] = np_tensor(draw(pulse_counts(idx.size, "count" in broken)))
    for name in ("devices", "count"):
        if name in broken and draw(st.booleans()):
            f[name] = draw(bad_tensors(LIMIT))
    at = f.pop("at")
    return Req(twin_pb2.ApplyPulsesRequest, f, at)


@fuzz_settings(120)
@given(r=apply_pulses_requests())
def test_apply_pulses(twin, r):
    """ApplyPulses: SET/RESET/unknown kinds, counts from -2^63 to 2^31, any devices."""
    send(twin, "ApplyPulses", r)


VERIFY_INTS = {  # field: (good values, broken values)
    "max_iterations": (st.integers(1, 3), st.sampled_from((0, -1, 1001)) | int64s()),
    "max_pulses": (st.integers(1, 64), st.sampled_from((0, -5, 2**31)) | int64s()),
    "max_pulses_per_step": (st.integers(1, 8), st.sampled_from((0, 1001, -1)) | int64s()),
    "max_reprograms": (st.integers(0, 2), st.sampled_from((-1, 1001)) | int64s()),
    "verify_reads": (st.integers(1, 2), st.sampled_from((0, 101)) | int64s()),
}


@st.composite
def program_verify_requests(draw) -> Req:
    """A ProgramVerify job: devices (an array index each), targets, an optional first read,
    the method and limits, any of which may be broken (or their lengths disagree)."""
    ints = {k: Field(st.one_of(good), bad) for k, (good, bad) in VERIFY_INTS.items()}
    f, broken = draw(fill_and_flaws(
        {"chip_id": CHIPS, "tile": TILE, "at": TIMES, "request_id": RIDS,
         "method": Field(st.sampled_from((1, 2, 3)),
                         st.sampled_from((0, 4)) | st.integers(-(2**31), 2**31 - 1)),
         "tolerance_us": Field(st.floats(0.05, 5.0), st.sampled_from(
             (0.0, -1.0, float("nan"), float("inf")))),
         "rewrite_all": Field(st.booleans(), st.booleans()), **ints},
        extra=("devices", "arrays", "g_target_us", "g_read_us", "length"),
    ))  # fmt: skip
    flat = draw(index_arrays(2 * N_DEV, 48, flaw="devices" in broken))
    arrays, idx = np.divmod(flat.astype(np.int64), N_DEV) if flat.ndim == 1 else (flat, flat)
    if "arrays" in broken:
        arrays = draw(st.sampled_from((arrays + 2, -arrays - 1, arrays[:-1], arrays * 1.0)))
    n = draw(st.integers(0, 50)) if "length" in broken else idx.size
    g = draw(floats((n,), 0.0, CFG.g_max_us, extremes="g_target_us" in broken))
    f["devices"], f["arrays"], f["g_target_us"] = np_tensor(idx), np_tensor(arrays), np_tensor(g)
    if draw(st.booleans()) or "g_read_us" in broken:
        f["g_read_us"] = np_tensor(draw(floats(
            (draw(st.integers(0, 50)) if "g_read_us" in broken else idx.size,), 0.0,
            CFG.g_max_us, extremes="g_read_us" in broken)))  # fmt: skip
    if "g_target_us" in broken and draw(st.booleans()):
        f["g_target_us"] = draw(bad_tensors(LIMIT))
    at = f.pop("at")
    return Req(twin_pb2.ProgramVerifyRequest, f, at)


@fuzz_settings(120)
@given(r=program_verify_requests())
def test_program_verify(twin, r):
    """ProgramVerify with any devices, arrays, targets, first reads, methods and limits."""
    send(twin, "ProgramVerify", r)


# --- reads ----------------------------------------------------------------------------------
def indices(limit: int) -> Field:
    good = index_arrays(limit).map(np_tensor)
    return Field(good, bad_tensors(LIMIT, index_arrays(limit, flaw=True)))


READ_REQUESTS = requests(
    twin_pb2.ReadDevicesRequest, chip_id=CHIPS, tile=TILE, array=ARRAY,
    devices=Field(st.none() | indices(N_DEV).good | indices(2 * N_DEV).good, indices(N_DEV).bad),
    request_id=RIDS,
)  # fmt: skip


@fuzz_settings(100)
@given(r=READ_REQUESTS)
def test_read_devices(twin, r):
    """ReadDevices of any devices (or the whole array) at any time."""
    send(twin, "ReadDevices", r)


PROBE_REQUESTS = requests(
    twin_pb2.ProbeRequest, chip_id=CHIPS, tile=TILE,
    array=Field(st.sampled_from((1, 2, 3, 4)), ARRAY.bad), rows=indices(CFG.tile_rows),
    request_id=RIDS,
)  # fmt: skip


@fuzz_settings(100)
@given(r=PROBE_REQUESTS)
def test_probe(twin, r):
    """Probe any rows of any array, including DIFF and unknown arrays."""
    send(twin, "Probe", r)


GOOD_X = st.tuples(st.integers(1, 8), st.integers(1, CFG.tile_rows)).flatmap(
    lambda s: floats(s, -1.0, 1.0)
)
BAD_X = st.one_of(
    st.tuples(st.integers(1, 8), st.integers(1, CFG.tile_rows)).flatmap(
        lambda s: floats(s, -1.0, 1.0, extremes=True)
    ),
    st.sampled_from(((10_000, 1), (70_000, 1))).flatmap(lambda s: floats(s, -1.0, 1.0)),
    st.sampled_from(((0, 4), (4, 0), (2, 25), (4,), (), (1, 2, 3))).flatmap(
        lambda s: floats(s, -1.0, 1.0)
    ),
)


MVM_REQUESTS = requests(
    twin_pb2.MvmRequest, chip_id=CHIPS, tile=TILE,
    x=Field(GOOD_X.map(np_tensor), bad_tensors(LIMIT, BAD_X)),
    row_start=Field(st.sampled_from((0, 0, 0, 1, 8)), st.sampled_from((23, 24)) | int64s()),
    col_start=Field(st.sampled_from((0, 0, 0, 3)), st.sampled_from((15, 16)) | int64s()),
    col_count=Field(st.none() | st.sampled_from((1, 4)), st.sampled_from((0, 16)) | int64s()),
    request_id=RIDS,
)  # fmt: skip


@fuzz_settings(120)
@given(r=MVM_REQUESTS)
def test_mvm(twin, r):
    """Mvm with any inputs, blocks and column counts, up to responses over the limit."""
    send(twin, "Mvm", r)


ACTIVATION_SHAPES = st.tuples(st.integers(1, 3), st.integers(1, 3), st.integers(2, 6),
                              st.integers(2, 6))  # fmt: skip
BAD_ACTIVATIONS = st.one_of(
    ACTIVATION_SHAPES.flatmap(lambda s: floats(s, -1.0, 1.0, extremes=True)),
    st.sampled_from(((0, 1, 4, 4), (1, 1, 0, 4), (4, 4), (1, 2, 3), (1, 1, 1, 1, 1))).flatmap(
        lambda s: floats(s, -1.0, 1.0)
    ),
    st.just((2, 1, 300, 300)).flatmap(lambda s: floats(s, -1.0, 1.0)),  # output over the limit
)


def conv_pairs(good: tuple, minimum: int) -> Field:
    """A (height, width) field: good values (or unset), or wrong lengths, signs and sizes."""
    bad = st.sampled_from(((minimum - 1, 1), (3,), (1, 2, 3), (65, 1), (7, 7))) | st.lists(
        int64s(), max_size=3
    )
    return Field(st.sampled_from(good).map(list), bad.map(list))


CONV_REQUESTS = requests(
    twin_pb2.ConvMvmRequest, chip_id=CHIPS, tile=TILE,
    x=Field(ACTIVATION_SHAPES.flatmap(lambda s: floats(s, -1.0, 1.0)).map(np_tensor),
            bad_tensors(LIMIT, BAD_ACTIVATIONS)),
    kernel=conv_pairs(((3, 3), (1, 1), (2, 3)), 1), stride=conv_pairs(((), (1, 1), (2, 1)), 1),
    padding=conv_pairs(((), (0, 0), (1, 1)), 0), dilation=conv_pairs(((), (1, 1), (1, 2)), 1),
    patch_start=Field(st.sampled_from((0, 0, 1)), int64s()),
    k=Field(st.sampled_from((1, 4, 9)), st.sampled_from((0, 25)) | int64s()),
    row_start=Field(st.sampled_from((0, 0, 3)), st.sampled_from((23, 24)) | int64s()),
    col_start=Field(st.sampled_from((0, 0, 3)), st.sampled_from((15, 16)) | int64s()),
    col_count=Field(st.none() | st.sampled_from((1, 4)), st.sampled_from((0, 16)) | int64s()),
    rows_per_mvm=Field(st.sampled_from((0, 1, 5, 100)), int64s()),
    request_id=RIDS,
)  # fmt: skip


@fuzz_settings(120)
@given(r=CONV_REQUESTS)
def test_conv_mvm(twin, r):
    """ConvMvm with any activations, geometries, windows and block sizes."""
    send(twin, "ConvMvm", r)


# --- sessions -------------------------------------------------------------------------------
SESSION_OPS = {
    "Program": PROGRAM_REQUESTS, "ProgramDevices": program_devices_requests(),
    "ApplyPulses": apply_pulses_requests(), "ReadDevices": READ_REQUESTS,
    "Probe": PROBE_REQUESTS, "Mvm": MVM_REQUESTS, "ProgramVerify": program_verify_requests(),
    "ConvMvm": CONV_REQUESTS,
}  # fmt: skip


@fuzz_settings(150)
@given(op=st.sampled_from(sorted(SESSION_OPS)), data=st.data())
def test_session(twin, op, data):
    """Every device operation's random requests inside a Session stream: the in-stream answer
    is held to the same rules as the unary call's, and the stream itself always ends OK."""
    twin.ensure_fixtures()
    twin.run(op, data.draw(SESSION_OPS[op]).build(twin), session=True)


@fuzz_settings(80)
@given(first=st.sampled_from(sorted(SESSION_OPS)), second=st.sampled_from(sorted(SESSION_OPS)),
       session=st.booleans(), data=st.data())  # fmt: skip
def test_a_request_id_names_one_request(twin, first, second, session, data):
    """Two random device requests on one chip under one request id: if the first was done,
    the second is answered from its record when it is the same request, and never answered
    (nor done) when it is another one: refused with INVALID_ARGUMENT naming request_id, or
    for what else is wrong with it; the chip unchanged."""
    twin.ensure_fixtures()
    rid = f"fuzz-rid-{twin.cases}-{data.draw(st.integers(0, 2**32))}"
    a = data.draw(SESSION_OPS[first]).build(twin)
    a.request_id = rid
    b = data.draw(st.just(a) | SESSION_OPS[second].map(lambda r: r.build(twin)))
    if b is not a:
        b.chip_id, b.request_id = a.chip_id, rid
    send = twin.call_in_session if session else twin.call
    done = send(first, a)
    if done.code == grpc.StatusCode.OK:
        twin.note_busy(first, a, done.response)
    second = first if b is a else second
    before = twin.state()
    out = send(second, b)
    twin.after_case(second, out, before, None, tally_as=f"reused request_id/{second}")
    if done.code != grpc.StatusCode.OK:
        return  # a refused request is not remembered: its id is free
    if second == first and b.SerializeToString(deterministic=True) == a.SerializeToString(
        deterministic=True
    ):  # fmt: skip
        assert out.code == grpc.StatusCode.OK and out.response == done.response
    else:
        assert out.code != grpc.StatusCode.OK, f"{second} answered under {first}'s request_id"


# --- raw bytes --------------------------------------------------------------------------------
_CODE_OF = {c.value[0]: c for c in grpc.StatusCode}
_SESSION_CODES = {c.value[0] for c in ALLOWED["ProgramDevices"] if c != grpc.StatusCode.OK}
SERVICE = twin_pb2.DESCRIPTOR.services_by_name["CrossbarTwin"]
RPCS = [m.name for m in SERVICE.methods]
PAYLOADS = st.binary(max_size=160) | st.sampled_from(
    (PICKLE_BYTES, b"\x0a\xff\xff\xff\xff\x0f", b"\x12\x00" * 50, b"\x08" + b"\xff" * 10)
)


@fuzz_settings(120)
@given(rpc=st.sampled_from(RPCS), payload=PAYLOADS)
def test_raw_bytes(twin, rpc, payload):
    """Every RPC with arbitrary bytes as its request: decodable bytes are a request like any
    other; undecodable ones get gRPC's INTERNAL "Exception deserializing request!", except in
    a Session, which answers them in the stream with INVALID_ARGUMENT."""
    twin.ensure_fixtures()
    cls = getattr(twin_pb2, SERVICE.methods_by_name[rpc].input_type.name)
    try:
        request = cls.FromString(payload)
    except Exception:
        request = None
    # Session decodes its messages itself: undecodable ones are refused inside the stream
    decoded_by_grpc = rpc != "Session"
    if request is not None or not decoded_by_grpc:
        allowed = ALLOWED[rpc]
    else:
        allowed = {grpc.StatusCode.INTERNAL}
    path = f"/{SERVICE.full_name}/{rpc}"
    stream = rpc == "Snapshot"
    if rpc == "Session":  # the bytes as one message of the stream
        call = lambda b, timeout: twin.channel.stream_stream(path)(iter([b]), timeout=timeout)  # noqa: E731
        stream = True
    else:
        call = twin.channel.unary_stream(path) if stream else twin.channel.unary_unary(path)
    before = twin.state()
    refused_in_stream = False
    try:
        response = call(payload, timeout=300)
        if stream:
            answers = list(response)
            if rpc == "Session":  # refusals travel inside the stream
                assert len(answers) == 1
                inner = twin_pb2.SessionResponse.FromString(answers[0])
                refused_in_stream = inner.code != 0
                tally("CrossbarTwin.Session", f"raw, in stream: {_CODE_OF[inner.code].name}")
                if refused_in_stream:
                    assert inner.code in _SESSION_CODES, inner
                    check_refusal(request, _CODE_OF[inner.code], inner.message, inner.status)
                if request is None:
                    assert inner.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
                    assert "is not a pcmtwin.v1.SessionRequest" in inner.message
        code, details = grpc.StatusCode.OK, ""
    except grpc.RpcError as exc:
        code, details = exc.code(), exc.details() or ""
        check_refusal(request, code, details, rich_status(exc))
    if rpc != "Session":
        tally(f"CrossbarTwin.{rpc}", code.name if request is not None else "undecodable: INTERNAL")
    assert code in allowed, f"{rpc} answered {code.name} to {payload!r}: {details}"
    if request is None and decoded_by_grpc:
        assert "deserializing" in details
    twin.check_alive()
    after = twin.state()
    if code != grpc.StatusCode.OK or rpc in QUERIES or refused_in_stream:
        assert set(after) == set(before)
        assert all(after[c].same(before[c]) for c in before)
    for cid, c in after.items():
        twin.check_physical(cid, c)


# --- regressions: core defects these fuzzers found (fixed in c1d0712) -------------------------
def _small_chip(**overrides) -> Chip:
    chip = Chip(ChipConfig(n_tiles=1, tile_rows=4, tile_cols=4, seed=1, **overrides))
    g = np.linspace(0, chip.config.g_max_us, 16, dtype=np.float32).reshape(4, 4)
    chip.program(0, g, g[::-1].copy(), at_s=0.0)
    return chip


@pytest.mark.parametrize("at_s", [3.6e38, 1e300])  # float32 ages overflow from 3.4e38 s
def test_reads_at_times_beyond_float32_stay_finite(at_s):
    """A read or MVM at any accepted time returns finite values (or the time is refused)."""
    chip = _small_chip()
    try:
        r = chip.read_devices(0, Array.POS, None, at_s).values
        y = chip.mvm(0, np.ones((1, 4), np.float32), at_s).values
    except Exception as exc:  # refusing the time is a fine fix too
        assert getattr(exc, "code", "") == "INVALID_ARGUMENT"
        return
    assert np.isfinite(r).all() and np.isfinite(y).all()


@pytest.mark.parametrize("config_json", [
    '{"device": {"prog_noise_scale": Infinity}}', '{"device": {"prog_coeff": [NaN, 0, 0]}}',
    '{"device": {"prog_noise_scale": 1e300}}', '{"g_max_us": 1e-300}',
])  # fmt: skip
def test_every_accepted_config_programs_to_finite_state(config_json):
    """A chip config the twin accepts yields finite device state when programmed."""
    try:
        cfg = ChipConfig.model_validate_json(config_json)
    except ValueError:
        return  # refused: the fix
    chip = _small_chip(**{k: getattr(cfg, k) for k in ("device", "g_max_us")})
    assert np.isfinite(chip.g_prog_us).all() and np.isfinite(chip.nu).all()


def test_mvm_inputs_beyond_float32_are_refused():
    """An MVM input too large for float32 is refused, or the output is finite."""
    chip = _small_chip()
    x = np.array([[1e300, 0.0, 0.0, 0.0]])
    try:
        y = chip.mvm(0, x, 1.0).values
    except Exception as exc:
        assert getattr(exc, "code", "") == "INVALID_ARGUMENT"
        return
    assert np.isfinite(y).all()
