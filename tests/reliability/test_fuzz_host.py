"""Fuzzing every ChipHost RPC with random and extreme messages (hypothesis).

Each test sends one RPC's requests with the generated stubs and ``HostHarness.run`` checks the
answer and both servers after each case (see tests/reliability/host_harness.py): a defined
status code, a live host, nothing changed by a refused request, no chip left behind on the
twin, finite status numbers and physical device state. Networks are random small MLPs and
CNNs, or those broken in one of many ways (shapes, NaN, dtypes, byte lengths, pickles in
tensor data, unknown or nameless layers, absurd sizes); configs, quantisers and policies are
valid, garbage or hostile (dotted paths to ``os:system``).
"""

from __future__ import annotations

import json
import math
import threading
import time

import grpc
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from controller.host.chip_host import ChipHost
from controller.rpc.client import TwinClient
from device_twin.chip import MAX_TIME_S
from device_twin.service.server import ServerOptions, TwinServer
from pcmtwin.v1 import host_pb2, network_pb2
from tests.reliability.fuzzing import (
    PICKLE_BYTES,
    Field,
    bad_tensors,
    fill,
    fuzz_settings,
    int64s,
    np_tensor,
    raw_tensor,
    tally,
)
from tests.reliability.host_harness import (
    ADVANCE_DEADLINE_S,
    BASELINE,
    BASELINE_CHIP,
    LIMIT,
    HostHarness,
    cnn,
    mlp,
)
from tests.reliability.refusals import check_refusal, rich_status


@pytest.fixture(scope="module")
def host():
    h = HostHarness()
    yield h
    h.close()


# --- networks -------------------------------------------------------------------------------
@st.composite
def good_networks(draw) -> network_pb2.NetworkDescription:
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    if draw(st.booleans()):
        sizes = draw(st.lists(st.integers(1, 24), min_size=2, max_size=4))
        return mlp(rng, sizes).to_proto()
    h, w = draw(st.integers(4, 9)), draw(st.integers(4, 9))
    return cnn(rng, h, w, draw(st.integers(1, 3))).to_proto()


def _analog(msg: network_pb2.NetworkDescription):
    for layer in msg.layers:
        kind = layer.WhichOneof("kind")
        if kind in ("linear", "conv2d"):
            return getattr(layer, kind)
    raise AssertionError("no analog layer")


MUTATIONS = ("weight_shape", "nan_weight", "pickle_data", "dtype", "nameless_layer", "dup_name",
             "dotted_name", "input_shape", "in_features", "no_layers", "huge_declared",
             "many_relu", "metadata", "kernel", "bias_shape", "batchnorm", "odd_names",
             "garbage_tensor")  # fmt: skip


@st.composite
def bad_networks(draw) -> network_pb2.NetworkDescription:
    """A good network broken in one way (some ways stay valid: hostile names, metadata)."""
    msg = draw(good_networks())
    lay = _analog(msg)
    what = draw(st.sampled_from(MUTATIONS))
    if what == "weight_shape":
        lay.weight.shape[:] = draw(st.lists(st.integers(-2, 40), max_size=4))
    elif what == "nan_weight":
        a = np.frombuffer(lay.weight.data, "<f4").copy()
        a[draw(st.integers(0, a.size - 1))] = draw(st.sampled_from((np.nan, np.inf, -np.inf)))
        lay.weight.data = a.tobytes()
    elif what == "pickle_data":
        pad = PICKLE_BYTES + b"\0" * (-len(PICKLE_BYTES) % 4)
        lay.weight.CopyFrom(raw_tensor(pad, draw(st.sampled_from(("uint8", "float32"))),
                                       [len(pad)]))  # fmt: skip
    elif what == "dtype":
        lay.weight.dtype = draw(st.sampled_from(("int32", "float16", "object", "", "bool", "<f4")))
    elif what == "nameless_layer":
        msg.layers.add(name="")
    elif what == "dup_name":
        msg.layers.add(name=msg.layers[0].name).relu.SetInParent()
    elif what == "dotted_name":
        msg.layers[0].name = draw(st.sampled_from(
            ("a.b", "__import__('os').system('touch /tmp/pcm-pwned')", " x", "", "x" * 129)))  # fmt: skip
    elif what == "input_shape":
        msg.input_shape[:] = draw(st.sampled_from(([], [0], [1, 2, 3, 4], [2**40], [-1])))
    elif what == "in_features":
        if msg.layers[0].WhichOneof("kind") == "linear":
            msg.layers[0].linear.in_features += draw(st.integers(1, 5))
        else:
            msg.layers[0].conv2d.in_channels = draw(st.sampled_from((0, 2, -1)))
    elif what == "no_layers":
        del msg.layers[:]
    elif what == "huge_declared":
        if msg.layers[0].WhichOneof("kind") == "linear":
            msg.layers[0].linear.out_features = 2**40
        msg.input_shape[0] = 2**40
    elif what == "many_relu":
        for i in range(draw(st.integers(1, 300))):
            msg.layers.add(name=f"r{i}").relu.SetInParent()
    elif what == "metadata":
        msg.metadata["!!python/object/apply:os.system"] = "touch /tmp/pcm-pwned"
        msg.metadata["pickle"] = PICKLE_BYTES.hex()
    elif what == "kernel":
        if msg.layers[0].WhichOneof("kind") == "conv2d":
            c = msg.layers[0].conv2d
            c.kernel_size[:] = draw(st.sampled_from(([0, 0], [50, 50], [3], [3, 3, 3])))
            c.stride[:] = draw(st.sampled_from(([], [0, 0], [2**40, 1])))
        else:
            msg.layers.add(name="pool").max_pool2d.kernel_size[:] = [2, 2]
    elif what == "bias_shape":
        lay.bias.CopyFrom(np_tensor(np.zeros(draw(st.integers(0, 50)), np.float32)))
    elif what == "batchnorm":
        bn = msg.layers.add(name="bn").batch_norm2d
        bn.num_features = draw(st.integers(-1, 4))
        bn.running_mean.CopyFrom(np_tensor(np.zeros(max(bn.num_features, 0), np.float32)))
        bn.running_var.CopyFrom(np_tensor(-np.ones(max(bn.num_features, 0), np.float32)))
    elif what == "odd_names":
        msg.name = draw(st.text(max_size=200))
        msg.layers[-1].name = draw(st.sampled_from(("!!python/name:os.system", "☃", "\x00")))
    else:
        t = draw(bad_tensors(LIMIT))
        if t is None:
            lay.ClearField("weight")
        else:
            lay.weight.CopyFrom(t)
    return msg


def _json(obj) -> str:
    return json.dumps(obj)


QUANTISERS = Field(
    st.sampled_from(
        (
            "",
            "multiplicative",
            "uniform",
            "none",
            _json({"kind": "uniform", "n_levels": 4}),
            _json({"kind": "multiplicative", "n_levels": 3, "annealing": {"n_steps": 20}}),
        )
    )  # fmt: skip
    | st.none().map(lambda _: "multiplicative"),
    st.sampled_from(
        (
            "x",
            "{",
            "[]",
            "null",
            _json({"kind": "nope"}),
            _json({"kind": "uniform", "n_levels": 0}),
            _json({"kind": "multiplicative", "n_levels": 256}),
            _json({"kind": "multiplicative", "annealing": {"n_steps": -1}}),
            "!!python/object/apply:os.system ['id']",
        )
    )  # fmt: skip
    | st.text(max_size=30),
)
CHIP_CONFIGS = Field(
    st.builds(
        lambda r, c, s: _json({"tile_rows": r, "tile_cols": c, "seed": s}),
        st.sampled_from((8, 16, 32)),
        st.sampled_from((8, 16, 32)),
        st.integers(0, 99),
    )
    | st.just(""),
    st.sampled_from(
        (
            "{",
            "[]",
            _json({"tile_rows": 0}),
            _json({"tile_rows": 9000}),
            _json({"n_tile": 1}),
            _json({"tile_cols": "16"}),
            '{"seed": -5}',
            '{"g_max_us": -1}',
            '{"device": {"t0_s": 0}}',
            "null",
        )
    )  # fmt: skip
    | st.text(max_size=30),
)
CONTROLLER_CONFIGS = Field(
    st.sampled_from(("", _json({"pulse_channels": 1}), _json({"rows_fraction": 0.5}))),
    st.sampled_from(
        (
            "{",
            _json({"pulse_channels": 0}),
            _json({"rows_fraction": 2}),
            _json({"nope": 1}),
            _json({"progress_steps": -1}),
            "[1]",
        )
    )  # fmt: skip
    | st.text(max_size=20),
)


def _policy(name: str, **params) -> host_pb2.PolicySpec:
    return host_pb2.PolicySpec(name=name, params_json=_json(params) if params else "")


GOOD_POLICIES = st.one_of(
    st.sampled_from((_policy("none"), _policy("gdc"), _policy("gdc", compensation=None))),
    st.builds(lambda name, i, th: _policy(name, interval_s=i, threshold=th),
              st.sampled_from(("threshold", "drift_aware", "budget")),
              st.sampled_from((3600.0, 86400.0, 6 * 3600.0)), st.sampled_from((0.02, 0.05, 0.2))),
    st.builds(lambda i: _policy("periodic_refresh", interval_s=i), st.sampled_from((3600.0, 86400.0))),
    st.just(_policy("adaptive", base_interval_s=3600.0)),
    st.just(_policy("threshold", interval_s="1h")),  # durations as in a scenario file
)  # fmt: skip
BAD_POLICIES = st.one_of(
    st.sampled_from((
        _policy("os:system", command="touch /tmp/pcm-pwned"),
        _policy("tests.controller.user_policies:NegativeInterval"),
        _policy("/tmp/evil.py:Policy"), _policy("builtins:eval"), _policy("no_such_policy"),
        _policy("threshold", interval_s=-1), _policy("threshold", interval_s=0),
        _policy("threshold", interval_s="1 fortnight"), _policy("threshold", nope=1),
        _policy("threshold", interval_s=math.inf), _policy("gdc", compensation="x"),
        _policy("threshold", interval_s=1e-6), _policy("threshold", interval_s=True),
        _policy("column_refresh", interval_s=0.01), _policy("column_refresh", threshold=True),
        _policy("budget", budget_pj_per_day=False), _policy("adaptive", growth=True),
        host_pb2.PolicySpec(name="threshold", params_json="[1]"),
        host_pb2.PolicySpec(name="threshold", params_json="{"),
        host_pb2.PolicySpec(name="threshold", params_json='{"interval_s": NaN}'),
        host_pb2.PolicySpec(name="gdc", params_json="x" * 100_000),
    )),
    st.builds(host_pb2.PolicySpec, name=st.text(max_size=30), params_json=st.text(max_size=30)),
)  # fmt: skip


@fuzz_settings(80)
@given(f=fill({"network": Field(good_networks(), bad_networks() | st.none()),
               "quantiser": QUANTISERS, "chip_config_json": CHIP_CONFIGS,
               "policy": Field(GOOD_POLICIES | st.none(), BAD_POLICIES),
               "controller_config_json": CONTROLLER_CONFIGS}))  # fmt: skip
def test_load_network(host, f):
    """LoadNetwork with random, broken and hostile networks, quantisers, configs, policies."""
    host.baseline()
    request = host_pb2.LoadNetworkRequest(**{k: v for k, v in f.items() if v is not None})
    code, _, response = host.run("LoadNetwork", request)
    if code == grpc.StatusCode.OK:
        assert response.status.loaded and response.weights_on_chip > 0
        assert host.twin.registry.list_chips() == [response.chip_id]


# --- inference ------------------------------------------------------------------------------
@st.composite
def infer_inputs(draw, good: bool) -> tuple[str, object]:
    """("x", array) to be shaped for the loaded network at send time, or ("raw", Tensor)."""
    if good:
        return "good", (draw(st.integers(1, 4)), draw(st.integers(0, 2**32 - 1)),
                        draw(st.sampled_from(("float32", "float64"))))  # fmt: skip
    kind = draw(st.sampled_from(("extreme", "shape", "batch0", "int", "raw", "big")))
    if kind == "raw":
        return "raw", draw(bad_tensors(LIMIT))
    return kind, draw(st.integers(0, 2**32 - 1))


def _x(host: HostHarness, spec) -> object:
    kind, arg = spec
    shape = host.input_shape
    if kind == "good":
        batch, seed, dtype = arg
        return np_tensor(np.random.default_rng(seed).uniform(-1, 1, (batch, *shape)).astype(dtype))
    if kind == "raw":
        return arg
    rng = np.random.default_rng(arg)
    if kind == "extreme":
        x = rng.uniform(-1, 1, (2, *shape))
        x.reshape(-1)[rng.integers(x.size)] = rng.choice([np.nan, np.inf, -np.inf, 1e300, -1e30])
        return np_tensor(x)
    if kind == "shape":
        return np_tensor(rng.uniform(-1, 1, (2, *[s + 1 for s in shape])).astype(np.float32))
    if kind == "batch0":
        return np_tensor(np.zeros((0, *shape), np.float32))
    if kind == "int":
        return np_tensor(np.ones((1, *shape), np.int32))
    n = LIMIT // 4 // max(1, math.prod(shape)) + 2  # a request over the message limit
    return np_tensor(np.zeros((n, *shape), np.float32))


@fuzz_settings(100)
@given(f=fill({"x": Field(infer_inputs(True), infer_inputs(False)),
               "label": Field(st.text(max_size=20), st.text(min_size=100, max_size=3000))}))  # fmt: skip
def test_infer(host, f):
    """Infer with inputs of the right and wrong shape, dtype, values and size."""
    host.baseline()
    x = _x(host, f["x"])
    request = host_pb2.InferRequest(label=f["label"])
    if x is not None:
        request.x.CopyFrom(x)
    code, _, response = host.run("Infer", request)
    if code == grpc.StatusCode.OK:
        y = np.frombuffer(response.y.data, "<f4")
        assert np.isfinite(y).all() and response.end_s >= response.start_s >= 0


# --- time -----------------------------------------------------------------------------------
@st.composite
def advance_targets(draw, good: bool) -> tuple[str | None, float]:
    if good:
        which = draw(st.sampled_from(("to_s", "by_s")))
        return which, draw(st.floats(0.0, 2 * 3600.0))
    which = draw(st.sampled_from(("to_s", "by_s", None)))
    value = draw(st.sampled_from((-1.0, -1e300, math.nan, math.inf, -math.inf, 1e30, 1e15,
                                  MAX_TIME_S, 5e-324, -1e-9, 3e7)) | st.floats())  # fmt: skip
    return which, value


def _advance_request(host: HostHarness, target) -> host_pb2.AdvanceTimeRequest:
    """The request; good ``to_s`` targets are offsets from now, made absolute here."""
    which, value = target
    if which is None:
        return host_pb2.AdvanceTimeRequest()
    if which == "to_s" and value >= 0 and math.isfinite(value) and value < 1e6:
        value += host.status().sim_time_s
    return host_pb2.AdvanceTimeRequest(**{which: value})


@fuzz_settings(80)
@given(target=st.booleans().flatmap(advance_targets), policy=st.sampled_from(
    (None, None, _policy("none"), _policy("gdc"))))  # fmt: skip
def test_advance_time(host, target, policy):
    """AdvanceTime to or by any time: later, earlier, NaN, Inf, enormous, or none, under a
    periodic policy or one that never wakes."""
    host.baseline()
    if policy is not None:
        host.stub.SetPolicy(host_pb2.SetPolicyRequest(policy=policy), timeout=300)
    request = _advance_request(host, target)
    before = host.status().sim_time_s
    # a short deadline: an advance over years of hourly wake-ups stops there (and says so)
    code, _, response = host.run("AdvanceTime", request, timeout_s=ADVANCE_DEADLINE_S)
    if code == grpc.StatusCode.OK:
        which = request.WhichOneof("target")
        want = request.to_s if which == "to_s" else before + request.by_s
        assert response.sim_time_s == want


# --- policies and corrections ----------------------------------------------------------------
@fuzz_settings(60)
@given(policy=st.booleans().flatmap(lambda ok: GOOD_POLICIES if ok else BAD_POLICIES))
def test_set_policy(host, policy):
    """SetPolicy with built-ins, garbage, hostile dotted paths and bad parameters."""
    host.baseline()
    code, _, response = host.run("SetPolicy", host_pb2.SetPolicyRequest(policy=policy))
    if code == grpc.StatusCode.OK:
        assert response.policy == policy.name


@fuzz_settings(60)
@given(f=fill({
    "tiles": Field(st.lists(st.sampled_from((0, 1)), max_size=2, unique=True),
                   st.lists(int64s() | st.sampled_from((2, 5, -1)), min_size=1, max_size=3)
                   | st.sampled_from(([0, 0], [1, 0, 1]))),  # each tile at most once
    "mode": Field(st.sampled_from((0, 1, 2)), st.sampled_from((3, -1)) | st.integers(-(2**31), 2**31 - 1)),
}))  # fmt: skip
def test_trigger_correction(host, f):
    """TriggerCorrection of any tiles in any mode."""
    host.baseline()
    code, _, response = host.run("TriggerCorrection", host_pb2.TriggerCorrectionRequest(**f))
    if code == grpc.StatusCode.OK:
        assert response.end_s >= response.start_s and response.failed_devices >= 0


@fuzz_settings(40)
@given(after=st.sampled_from((0, 1, 2, -1)) | st.integers(-3, 0) | int64s())
def test_stream_events(host, after):
    """StreamEvents from any point: every event sent is newer and in order."""
    host.baseline()
    last = host.status().last_event_seq
    after_seq = after if after < 0 or after > 2**40 else max(0, last - after)
    host.run("StreamEvents", host_pb2.StreamEventsRequest(after_seq=after_seq))


# --- the network: unloading, reading back; discovery -------------------------------------------
@fuzz_settings(40)
@given(unload_first=st.booleans(), include_weights=st.booleans(), reload=st.booleans())
def test_unload_and_get_network(host, unload_first, include_weights, reload):
    """GetNetwork with or without weights, on a loaded network or none; UnloadNetwork with a
    network loaded or not: the layout covers the network, an unloaded host holds no chip."""
    host.baseline(force=reload)
    if unload_first:
        code, _, status = host.run("UnloadNetwork", host_pb2.UnloadNetworkRequest())
        assert code == grpc.StatusCode.OK and not status.loaded
    code, _, lay = host.run("GetNetwork", host_pb2.GetNetworkRequest(
        include_weights=include_weights))  # fmt: skip
    if unload_first:
        assert code == grpc.StatusCode.FAILED_PRECONDITION
    elif code == grpc.StatusCode.OK:
        assert lay.weights_on_chip == sum(b.rows * b.cols for la in lay.layers
                                          for b in la.blocks)  # fmt: skip
        assert all(la.HasField("weight") == include_weights for la in lay.layers)


@fuzz_settings(10)
@given(rpc=st.sampled_from(("ListPolicies", "ListQuantisers", "GetConfigSchema")),
       loaded=st.booleans())  # fmt: skip
def test_discovery(host, rpc, loaded):
    """The discovery calls answer the same with or without a network, and change nothing."""
    if loaded:
        host.baseline()
    else:
        host.run("UnloadNetwork", host_pb2.UnloadNetworkRequest())
    request = getattr(host_pb2, SERVICE.methods_by_name[rpc].input_type.name)()
    code, _, response = host.run(rpc, request)
    assert code == grpc.StatusCode.OK and response.ByteSize() > 0


# --- raw bytes --------------------------------------------------------------------------------
SERVICE = host_pb2.DESCRIPTOR.services_by_name["ChipHost"]
RPCS = [m.name for m in SERVICE.methods if m.name != "StreamEvents"]


@fuzz_settings(60)
@given(rpc=st.sampled_from(RPCS), payload=st.binary(max_size=120) | st.sampled_from(
    (PICKLE_BYTES, b"\x0a\x00", b"\x12\x03abc", b"\x09" + b"\xff" * 8)))  # fmt: skip
def test_raw_bytes(host, rpc, payload):
    """Every unary RPC with arbitrary bytes: decodable bytes are a request like any other;
    undecodable ones get gRPC's INTERNAL "Exception deserializing request!"."""
    host.baseline()
    cls = getattr(host_pb2, SERVICE.methods_by_name[rpc].input_type.name)
    try:
        request = cls.FromString(payload)
    except Exception:
        request = None
    timeout_s = ADVANCE_DEADLINE_S if rpc == "AdvanceTime" else 300
    before = host.observe()
    try:
        host.channel.unary_unary(f"/{SERVICE.full_name}/{rpc}")(payload, timeout=timeout_s)
        code, details = grpc.StatusCode.OK, ""
    except grpc.RpcError as exc:
        code, details = exc.code(), exc.details() or ""
        check_refusal(request, code, details, rich_status(exc))
    if request is None:
        tally(f"ChipHost.{rpc}", "undecodable: INTERNAL")
        assert code == grpc.StatusCode.INTERNAL and "deserializing" in details
        host.check_alive()
        assert host.observe()[0] == before[0]
        return
    host.after_case(rpc, code, details, before)


# --- regressions: host defects these tests found (fixed in a32f1fa) ------------------------------
class _BreakableTwin:
    """A twin client whose calls can be made to fail, to stop a run that would not stop."""

    def __init__(self, client) -> None:
        self.client, self.broken = client, False

    def __getattr__(self, name):
        attr = getattr(self.client, name)
        if not callable(attr):
            return attr

        def call(*args, **kw):
            if self.broken:
                raise RuntimeError("twin cut off by the test")
            return attr(*args, **kw)

        return call


def test_an_enormous_advance_stops_at_its_deadline():
    """AdvanceTime with a deadline returns soon after it (DEADLINE_EXCEEDED, time advanced as
    far as it got), however far the target: here 2.5e8 hourly wake-ups."""
    server = TwinServer(ServerOptions(address="127.0.0.1:0"))
    server.start()
    twin = _BreakableTwin(TwinClient(server.address))
    chip_host = None
    try:
        chip_host = ChipHost(twin)
        chip_host.load_network(
            BASELINE, "multiplicative", None, ("threshold", {"interval_s": 3600})
        )
        outcome: dict = {}

        def advance() -> None:
            try:
                chip_host.advance(by_s=0.9 * MAX_TIME_S, deadline=time.monotonic() + 1.0)
            except Exception as exc:
                outcome["error"] = exc

        worker = threading.Thread(target=advance, daemon=True)
        t0 = time.monotonic()
        worker.start()
        worker.join(timeout=30)  # generous: a hang check, not a timing one
        returned_in_s = None if worker.is_alive() else time.monotonic() - t0
        twin.broken = True  # stop the run if it is still going
        worker.join(timeout=120)
        assert returned_in_s is not None, "AdvanceTime did not return 29 s after its deadline"
        assert getattr(outcome.get("error"), "code", "") == "DEADLINE_EXCEEDED"
    finally:
        if chip_host is not None:
            chip_host.close()
        twin.client.close()
        server.stop(grace_s=0)


class _Annealed(Exception):
    pass


def test_load_network_refuses_an_absurd_annealing_budget(host, monkeypatch):
    """A quantiser asking for hours of annealing is refused before any annealing runs."""
    import controller.workloads.quantisers as quantisers

    def anneal(*args, **kw):
        raise _Annealed("annealing started")

    monkeypatch.setattr(quantisers, "anneal_bases", anneal)
    quantiser = _json({"kind": "multiplicative",
                       "annealing": {"n_steps": 100_000, "moves_per_step": 1000}})  # fmt: skip
    request = host_pb2.LoadNetworkRequest(network=BASELINE.to_proto(), quantiser=quantiser,
                                          chip_config_json=BASELINE_CHIP)  # fmt: skip
    code, details, _ = host.call("LoadNetwork", request)
    assert code in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.RESOURCE_EXHAUSTED), details


def test_advance_time_beyond_the_twins_last_instant_is_refused(host):
    """AdvanceTime beyond the twin's last device time is refused and the host keeps serving
    inferences."""
    host.baseline(force=True)
    host.stub.SetPolicy(host_pb2.SetPolicyRequest(policy=_policy("none")), timeout=300)
    code, _, _ = host.call("AdvanceTime", host_pb2.AdvanceTimeRequest(to_s=2 * MAX_TIME_S))
    try:
        assert code == grpc.StatusCode.INVALID_ARGUMENT
        host.check_infer()
    finally:
        host.baseline(force=True)
