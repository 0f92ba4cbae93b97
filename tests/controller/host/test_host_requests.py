"""What a host programmer reads through the ChipHost stubs (issue 18 items 4-7): the
discovery calls, refusals that name their field in words, bounds, and accounting that adds
up."""

from __future__ import annotations

import json

import grpc
import numpy as np
import pytest

from controller.host.catalogue import undocumented
from pcmtwin.v1 import host_pb2
from tests.controller.servers import InProcess, tensor, tiny_network
from tests.pcmtwin.test_status import assert_readable, field_violations

HOUR = 3600.0
CHIP = {"tile_rows": 16, "tile_cols": 16, "seed": 3}
BUILTINS = ["none", "gdc", "periodic_refresh", "threshold", "drift_aware", "adaptive", "budget",
            "column_refresh"]  # fmt: skip


@pytest.fixture(scope="module")
def servers():
    s = InProcess()
    yield s
    s.close()


def _policy(name: str = "threshold", **params) -> host_pb2.PolicySpec:
    return host_pb2.PolicySpec(name=name, params_json=json.dumps(params))


def _load(stub, policy=None, chip=None, network=None, **kw):
    return stub.LoadNetwork(host_pb2.LoadNetworkRequest(
        network=network or tiny_network().to_proto(), chip_config_json=json.dumps(chip or CHIP),
        policy=policy or _policy(interval_s=HOUR), **kw))  # fmt: skip


def _refused(call, request) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as err:
        call(request)
    assert_readable(err.value.details())
    for _, description in field_violations(err.value):
        assert_readable(description)
    return err.value


# --- discovery ---------------------------------------------------------------------------------
def test_list_policies_describes_every_parameter(servers):
    """ListPolicies: every built-in, each parameter with type, unit, default and meaning, and a
    documented JSON Schema of its parameters that accepts its defaults."""
    got = servers.stub.ListPolicies(host_pb2.ListPoliciesRequest())
    assert [p.name for p in got.policies] == BUILTINS and not got.user_policies_allowed
    threshold = {p.name: p for p in got.policies}["threshold"]
    interval = {q.name: q for q in threshold.parameters}["interval_s"]
    assert (interval.type, interval.unit, interval.default_text) == ("duration", "s", "1h")
    assert json.loads(interval.default_json) == HOUR and interval.description
    for p in got.policies:
        assert p.summary and all(q.description and q.type for q in p.parameters), p.name
        schema = json.loads(p.params_schema_json)
        assert undocumented(schema) == [], p.name
        assert set(schema.get("properties", {})) == {q.name for q in p.parameters}
        defaults = {q.name: json.loads(q.default_json) for q in p.parameters}
        servers.stub.SetPolicy(host_pb2.SetPolicyRequest(policy=host_pb2.PolicySpec(
            name=p.name, params_json=json.dumps(defaults))))  # fmt: skip


def test_list_quantisers_and_config_schemas_are_documented(servers):
    """ListQuantisers names each quantiser LoadNetwork takes, with its schema; GetConfigSchema
    gives documented schemas (a description for every property, a unit for every number) of
    the controller config and the quantiser, and the twin's chip config."""
    q = servers.stub.ListQuantisers(host_pb2.ListQuantisersRequest())
    kinds = [x.kind for x in q.quantisers]
    assert kinds == ["multiplicative", "uniform", "none", "dual_pair", "wpo"]
    assert q.default_kind == "multiplicative"
    for x in q.quantisers:
        # the weight programming optimiser's search parameters are wpo_config's to document
        missing = undocumented(json.loads(x.config_schema_json))
        assert x.summary and [m for m in missing if not m.startswith("WPOConfig.")] == [], x.kind
    for kind in kinds[:3]:  # dual_pair and wpo need a chip of two pairs per weight
        _load(servers.stub, quantiser=json.dumps({"kind": kind}))
        _load(servers.stub, quantiser=kind)
    schemas = servers.stub.GetConfigSchema(host_pb2.GetConfigSchemaRequest())
    assert undocumented(json.loads(schemas.controller_config)) == []
    assert [m for m in undocumented(json.loads(schemas.quantiser))
            if not m.startswith("WPOConfig.")] == []  # fmt: skip
    chip = json.loads(schemas.chip_config)
    assert {"tile_rows", "tile_cols", "seed"} <= set(chip["properties"])
    # the chip's own sections (device_twin/config.py); the device families' parameters are
    # documented by their modules (device_twin/families/)
    own = ("ChipConfig", "ProgramVerifyConfig", "IOConfig", "PeripheryConfig",
           "EnergyModelConfig")  # fmt: skip
    assert [u for u in undocumented(chip) if u.split(".")[0] in own] == []
    assert chip["properties"]["g_max_us"]["unit"] == "uS"
    controller = json.loads(schemas.controller_config)
    assert controller["properties"]["pulse_channels"]["unit"] == "jobs"


# --- refusals in words -------------------------------------------------------------------------
def test_network_errors_name_the_field_and_the_layer(servers):
    """A malformed tensor is refused naming its field path (layers[2].linear.weight.data) and
    the layer by index and name, without dumps, input values or links."""
    net = tiny_network().to_proto()
    net.layers[2].name = "fc1"
    net.layers[2].linear.weight.data = b"\0" * 10
    err = _refused(servers.stub.LoadNetwork, host_pb2.LoadNetworkRequest(network=net))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    ((field, said),) = field_violations(err)
    assert field == "network.layers[2].linear.weight.data"
    assert "layer 2 ('fc1', Linear): weight.data has 10 bytes, expected 128" in said
    net = tiny_network().to_proto()
    net.layers[0].linear.weight.dtype = "int99"
    net.layers[0].linear.in_features = 17
    err = _refused(servers.stub.LoadNetwork, host_pb2.LoadNetworkRequest(network=net))
    assert [f for f, _ in field_violations(err)] == ["network.layers[0].linear.weight.dtype"]
    net = tiny_network().to_proto()
    net.layers[0].linear.in_features = 17
    err = _refused(servers.stub.LoadNetwork, host_pb2.LoadNetworkRequest(network=net))
    assert [f for f, _ in field_violations(err)] == ["network.layers[0]"]
    assert "expected (8, 17)" in err.details()
    net.layers.add(name="?")
    err = _refused(servers.stub.LoadNetwork, host_pb2.LoadNetworkRequest(network=net))
    assert (
        "network.layers[3]",
        "layer 3 ('?') has no kind: set one of conv2d, linear, relu, "
        "max_pool2d, avg_pool2d, flatten, batch_norm2d, log_softmax, residual",
    ) in field_violations(err)


def test_an_unknown_policy_parameter_lists_the_accepted_ones(servers):
    """An unknown parameter with no close name is refused listing every accepted one; no
    constructor names."""
    err = _refused(servers.stub.SetPolicy, host_pb2.SetPolicyRequest(policy=_policy(foo=1)))
    ((field, said),) = field_violations(err)
    assert field == "policy.params_json" and said.startswith("foo: unknown parameter; the "
                                                              "parameters are interval_s, ")  # fmt: skip
    assert "__init__" not in err.details()


def test_a_failed_make_room_says_the_old_network_was_unloaded():
    """LoadNetwork(make_room) on a full twin that refuses the new chip even alone says the
    running network was unloaded and nothing is loaded now."""
    s = InProcess(twin_options={"state_budget_bytes": 1024**2})
    try:
        _load(s.stub)
        too_big = {"tile_rows": 256, "tile_cols": 256, "seed": 3}  # 2 MB of device state
        with pytest.raises(grpc.RpcError) as err:
            _load(s.stub, chip=too_big, make_room=True)
        assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert_readable(err.value.details())
        assert (
            "The network 'tiny' was unloaded to make room (make_room): no network is loaded now"
        ) in err.value.details()
        assert not s.stub.GetStatus(host_pb2.GetStatusRequest()).loaded
        assert s.twin.registry.list_chips() == []
    finally:
        s.close()


# --- bounds ------------------------------------------------------------------------------------
def test_bounds_on_policies_labels_and_tiles(servers):
    """A wake-up interval below 0.1 s, a boolean for a number, an Infer label of 200 kB and
    a tile named twice are refused, naming the field; nothing changes."""
    stub = servers.stub
    _load(stub)
    before = stub.GetStatus(host_pb2.GetStatusRequest())
    for name, params in (("threshold", {"interval_s": 1e-6}), ("threshold", {"interval_s": True}),
                         ("threshold", {"threshold": False}),
                         ("column_refresh", {"interval_s": 0.01})):  # fmt: skip
        err = _refused(stub.SetPolicy, host_pb2.SetPolicyRequest(policy=_policy(name, **params)))
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
        ((field, said),) = field_violations(err)
        assert field == "policy.params_json" and said.startswith(next(iter(params)))
    err = _refused(stub.Infer, host_pb2.InferRequest(
        x=tensor(np.ones((1, 16), np.float32)), label="x" * 200_000))  # fmt: skip
    assert field_violations(err)[0][0] == "label"
    err = _refused(stub.TriggerCorrection, host_pb2.TriggerCorrectionRequest(tiles=[1, 0, 1]))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and "[1]" in err.details()
    assert field_violations(err)[0][0] == "tiles"
    err = _refused(
        stub.LoadNetwork,
        host_pb2.LoadNetworkRequest(
            network=tiny_network().to_proto(), controller_config_json='{"pulse_channels": true}'
        ),
    )
    assert field_violations(err)[0][0] == "controller_config_json.pulse_channels"
    after = stub.GetStatus(host_pb2.GetStatusRequest())
    assert (after.last_event_seq, after.sim_time_s, after.inferences, after.policy_json) == (
        before.last_event_seq,
        before.sim_time_s,
        before.inferences,
        before.policy_json,
    )


# --- accounting --------------------------------------------------------------------------------
def test_trigger_correction_energy_includes_its_probes(servers):
    """TriggerCorrection.energy_pj is what the call cost the chip, probes included: the rise
    of the status's upkeep energy, and the sum of the call's probe and correction events."""
    stub = servers.stub
    _load(stub)
    stub.AdvanceTime(host_pb2.AdvanceTimeRequest(to_s=HOUR + 1))
    before = stub.GetStatus(host_pb2.GetStatusRequest())
    got = stub.TriggerCorrection(host_pb2.TriggerCorrectionRequest(
        mode=host_pb2.CORRECTION_MODE_ALL))  # fmt: skip
    assert got.probes == 2 and 0 < got.probe_energy_pj < got.energy_pj and got.jobs > 0
    rise = got.status.upkeep_energy_pj - before.upkeep_energy_pj
    assert got.energy_pj == pytest.approx(rise, rel=1e-12)
    stream = stub.StreamEvents(host_pb2.StreamEventsRequest(after_seq=before.last_event_seq))
    events = [next(stream) for _ in range(got.status.last_event_seq - before.last_event_seq)]
    stream.cancel()
    assert {e.kind for e in events} == {"probe", "correction"}
    total = sum(e.energy_pj + e.controller_energy_pj for e in events)
    assert got.energy_pj == pytest.approx(total, rel=1e-12)
    probes = sum(e.energy_pj + e.controller_energy_pj for e in events if e.kind == "probe")
    assert got.probe_energy_pj == pytest.approx(probes, rel=1e-12)


def test_set_policy_keeps_every_counter(servers):
    """SetPolicy changes the policy, not the network's counters: wake-ups, corrections,
    devices corrected, pulses and energy carry on."""
    stub = servers.stub
    _load(stub)
    before = stub.AdvanceTime(host_pb2.AdvanceTimeRequest(to_s=2 * HOUR + 1))
    after = stub.SetPolicy(host_pb2.SetPolicyRequest(policy=_policy(interval_s=2 * HOUR)))
    names = ("monitor_wakeups", "corrections", "devices_corrected", "correction_pulses",
             "failed_devices", "upkeep_energy_pj", "twin_energy_pj", "inferences")  # fmt: skip
    assert before.monitor_wakeups == 2 and before.corrections > 0
    assert [getattr(after, n) for n in names] == [getattr(before, n) for n in names]
    later = stub.AdvanceTime(host_pb2.AdvanceTimeRequest(to_s=4 * HOUR + 2))
    assert later.monitor_wakeups == 3  # the new policy woke 2 h after SetPolicy


def test_load_network_says_what_programming_cost_and_can_program_only_the_weights(servers):
    """LoadNetwork reports the devices it programmed (whole tiles by default), those holding
    weights and the programming energy (the status's `program` energy); tiles that fit the
    network program fewer devices, and program_scope "weights" only the devices holding
    weights, each to the same conductance as whole-tile programming gives it."""
    from controller.rpc.client import TwinClient

    stub = servers.stub
    chip = {"tile_rows": 64, "tile_cols": 64, "seed": 3}
    big = _load(stub, chip=chip)
    assert big.devices_programmed == len(big.tiles) * 64 * 64 * 2
    assert big.devices_in_use == 2 * big.weights_on_chip == 2 * (16 * 8 + 8 * 4)
    assert big.program_energy_pj == big.status.energy_by_kind_pj["program"]
    with TwinClient(servers.twin.address) as twin:
        whole = twin.snapshot(big.chip_id)
        fit = _load(stub, chip={"tile_rows": 16, "tile_cols": 8, "seed": 3})
        assert fit.devices_programmed == len(fit.tiles) * 16 * 8 * 2 < big.devices_programmed
        assert fit.program_energy_pj < big.program_energy_pj
        weights = _load(stub, chip=chip, controller_config_json='{"program_scope": "weights"}')
        assert weights.devices_programmed == weights.devices_in_use == big.devices_in_use
        assert weights.program_energy_pj < big.program_energy_pj
        only = twin.snapshot(weights.chip_id)
    lay = stub.GetNetwork(host_pb2.GetNetworkRequest())
    for t in whole.g_prog_us:
        used = np.zeros((64, 64), bool)
        for la in lay.layers:
            for b in la.blocks:
                if b.tile == t:
                    used[
                        b.row_offset : b.row_offset + b.rows, b.col_offset : b.col_offset + b.cols
                    ] = 1
        assert np.array_equal(only.g_prog_us[t][:, used], whole.g_prog_us[t][:, used])
        assert not only.g_prog_us[t][:, ~used].any() and not only.t_write_s[t][:, ~used].any()
    y = stub.Infer(host_pb2.InferRequest(x=tensor(np.ones((2, 16), np.float32))))
    assert np.isfinite(np.frombuffer(y.y.data, "<f4")).all()
