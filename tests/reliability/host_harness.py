"""A ChipHost server (over its CrossbarTwin) under attack, and what every fuzz case checks.

``HostHarness`` runs an in-process twin and an in-process ChipHost server on 127.0.0.1
(message limit 1 MiB, user policies not allowed) and sends requests with the generated stubs.
Between cases it keeps a small network loaded (``baseline``). After every case it checks that

- the answer is one of the status codes allowed for that RPC;
- the host is alive: health says SERVING and ``GetStatus`` answers; its numbers are finite
  (time, energies, availability in [0, 1]); and it still does its job: a well-formed Infer on
  the loaded network succeeds (unless a policy error stopped the run, as documented);
- the twin holds exactly the host's chip (a refused or replaced network leaves nothing behind)
  and that chip's device state is physical (``TwinHarness.check_physical``);
- a refused request changed nothing: the host's status (time, events, policy, network, error)
  and the chip's device state are what they were;
- a refusal reads well and carries its rich status (``tests.reliability.refusals``).

AdvanceTime is sent with a short deadline (``ADVANCE_DEADLINE_S``): an advance over years of
hourly wake-ups then stops at it with DEADLINE_EXCEEDED, time advanced as far as it got.
"""

from __future__ import annotations

import json
import math

import grpc
import numpy as np
from grpc_health.v1 import health_pb2, health_pb2_grpc

from controller.host.service import ChipHostServer, HostServerOptions
from controller.workloads.network import NetworkDescription
from controller.workloads.tensor import Tensor
from device_twin.config import ChipConfig
from device_twin.service.server import ServerOptions, TwinServer
from pcmtwin.credentials import make_channel
from pcmtwin.v1 import host_pb2, host_pb2_grpc
from tests.reliability.fuzzing import np_tensor, tally
from tests.reliability.refusals import check_refusal, rich_status
from tests.reliability.twin_harness import ChipCopy, chip_copy, g_bound_us

LIMIT = 1024**2
TWIN_BUDGET = 64 * 1024**2
ADVANCE_DEADLINE_S = 1.5
RESET_AFTER_S = 1e7
SERVICE = "pcmtwin.v1.ChipHost"

C = grpc.StatusCode
ALLOWED: dict[str, set[grpc.StatusCode]] = {
    "LoadNetwork": {C.OK, C.INVALID_ARGUMENT, C.RESOURCE_EXHAUSTED, C.PERMISSION_DENIED},
    "Infer": {C.OK, C.INVALID_ARGUMENT, C.FAILED_PRECONDITION, C.RESOURCE_EXHAUSTED},
    "GetStatus": {C.OK},
    "AdvanceTime": {C.OK, C.INVALID_ARGUMENT, C.FAILED_PRECONDITION, C.DEADLINE_EXCEEDED},
    "SetPolicy": {C.OK, C.INVALID_ARGUMENT, C.PERMISSION_DENIED, C.FAILED_PRECONDITION},
    "TriggerCorrection": {C.OK, C.INVALID_ARGUMENT, C.NOT_FOUND, C.FAILED_PRECONDITION},
    # OK: we read what was there and cancelled; DEADLINE_EXCEEDED: open, nothing new to send
    "StreamEvents": {C.OK, C.INVALID_ARGUMENT, C.FAILED_PRECONDITION, C.DEADLINE_EXCEEDED},
    "UnloadNetwork": {C.OK},
    "GetNetwork": {C.OK, C.FAILED_PRECONDITION, C.RESOURCE_EXHAUSTED},
    "ListPolicies": {C.OK},
    "ListQuantisers": {C.OK},
    "GetConfigSchema": {C.OK},
}
READ_ONLY = ("GetStatus", "StreamEvents", "GetNetwork", "ListPolicies", "ListQuantisers",
             "GetConfigSchema")  # fmt: skip
STATUS_FIELDS = ("loaded", "chip_id", "network", "sim_time_s", "last_event_seq", "policy",
                 "policy_json", "error", "inferences", "corrections")  # fmt: skip


def mlp(rng: np.random.Generator, sizes: list[int], name: str = "mlp") -> NetworkDescription:
    """Linear layers (with ReLU between) of the given sizes, random weights in [-1, 1]."""
    layers: list[dict] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        if i:
            layers.append({"kind": "ReLU", "name": f"relu{i}"})
        w = rng.uniform(-1, 1, (b, a)).astype(np.float32)
        bias = Tensor.from_array(rng.uniform(-0.1, 0.1, b).astype(np.float32)) if i else None
        layers.append({"kind": "Linear", "name": f"fc{i}", "in_features": a, "out_features": b,
                       "weight": Tensor.from_array(w), "bias": bias})  # fmt: skip
    return NetworkDescription(name=name, input_shape=(sizes[0],), layers=layers)


def cnn(rng: np.random.Generator, h: int, w: int, channels: int) -> NetworkDescription:
    """Conv 3x3 -> ReLU -> MaxPool 2 -> Flatten -> Linear(-> 4)."""
    conv = rng.uniform(-1, 1, (channels, 1, 3, 3)).astype(np.float32)
    ph, pw = (h - 2) // 2, (w - 2) // 2
    fc = rng.uniform(-1, 1, (4, channels * ph * pw)).astype(np.float32)
    return NetworkDescription(name="cnn", input_shape=(1, h, w), layers=[
        {"kind": "Conv2d", "name": "conv", "in_channels": 1, "out_channels": channels,
         "kernel_size": 3, "weight": Tensor.from_array(conv)},
        {"kind": "ReLU", "name": "relu"},
        {"kind": "MaxPool2d", "name": "pool", "kernel_size": 2},
        {"kind": "Flatten", "name": "flat"},
        {"kind": "Linear", "name": "fc", "in_features": channels * ph * pw, "out_features": 4,
         "weight": Tensor.from_array(fc)},
    ])  # fmt: skip


BASELINE = mlp(np.random.default_rng(7), [16, 8, 4], "baseline")
BASELINE_CHIP = json.dumps({"tile_rows": 16, "tile_cols": 16, "seed": 3})
BASELINE_POLICY = host_pb2.PolicySpec(name="threshold", params_json='{"interval_s": 3600}')


class HostHarness:
    """See the module docstring."""

    def __init__(self) -> None:
        self.twin = TwinServer(ServerOptions(address="127.0.0.1:0", state_budget_bytes=TWIN_BUDGET))
        self.twin.start()
        self.host = ChipHostServer(HostServerOptions(
            twin_address=self.twin.address, address="127.0.0.1:0", max_message_bytes=LIMIT,
        ))  # fmt: skip
        self.host.start()
        self.channel = make_channel(self.host.address, max_message_bytes=8 * LIMIT)
        self.stub = host_pb2_grpc.ChipHostStub(self.channel)
        self.health = health_pb2_grpc.HealthStub(self.channel)
        self.input_shape: tuple[int, ...] = BASELINE.input_shape
        self.bounds: dict[str, float] = {}
        self.cases = 0

    def close(self) -> None:
        self.channel.close()
        self.host.stop(grace_s=0)
        self.twin.stop(grace_s=0)

    # --- state ----------------------------------------------------------------------------
    def status(self) -> host_pb2.ChipStatus:
        return self.stub.GetStatus(host_pb2.GetStatusRequest(), timeout=300)

    def baseline(self, force: bool = False) -> None:
        """Load the small network again unless one is loaded, running and not aged out."""
        s = self.status()
        if not force and s.loaded and not s.error and s.sim_time_s <= RESET_AFTER_S:
            return
        self.stub.LoadNetwork(host_pb2.LoadNetworkRequest(
            network=BASELINE.to_proto(), chip_config_json=BASELINE_CHIP, policy=BASELINE_POLICY,
        ), timeout=300)  # fmt: skip
        self.input_shape = BASELINE.input_shape

    def observe(self) -> tuple[dict, dict[str, ChipCopy]]:
        s = self.status()
        fields = {f: getattr(s, f) for f in STATUS_FIELDS}
        reg = self.twin.registry
        return fields, {cid: reg.with_chip(cid, chip_copy) for cid in reg.list_chips()}

    # --- one case ---------------------------------------------------------------------------
    def call(self, rpc: str, request, timeout_s: float = 300.0):
        try:
            if rpc == "StreamEvents":
                return C.OK, "", self._stream(request)
            return C.OK, "", getattr(self.stub, rpc)(request, timeout=timeout_s)
        except grpc.RpcError as exc:
            check_refusal(request, exc.code(), exc.details() or "", rich_status(exc))
            return exc.code(), exc.details() or "", None

    def _stream(self, request) -> list:
        """Events up to the last one now in the ledger, then cancel; a short deadline when
        nothing is due (the stream would stay open, waiting for new events)."""
        last = self.status().last_event_seq
        waiting = request.after_seq >= last
        stream = self.stub.StreamEvents(request, timeout=0.3 if waiting else 300)
        events = []
        for ev in stream:
            events.append(ev)
            if ev.seq >= last:
                stream.cancel()
                break
        seqs = [e.seq for e in events]
        assert seqs == sorted(seqs) and all(q > request.after_seq for q in seqs), seqs
        return events

    def run(self, rpc: str, request, timeout_s: float = 300.0):
        """Send one request and check everything the module docstring lists."""
        before = self.observe()
        code, details, response = self.call(rpc, request, timeout_s)
        if code == C.OK and rpc == "LoadNetwork":
            self.input_shape = tuple(request.network.input_shape)
        self.after_case(rpc, code, details, before)
        return code, details, response

    def after_case(self, rpc: str, code, details: str, before) -> None:
        self.cases += 1
        tally(f"ChipHost.{rpc}", code.name)
        assert code in ALLOWED[rpc], f"{rpc} answered {code.name}: {details}"
        assert "Traceback" not in details
        self.check_alive()
        fields, chips = self.observe()
        self.check_status(fields)
        expected = [fields["chip_id"]] if fields["loaded"] else []
        assert sorted(chips) == expected, f"twin holds {sorted(chips)}, host has {expected}"
        refused = code != C.OK and (code != C.DEADLINE_EXCEEDED or rpc == "StreamEvents")
        if refused or rpc in READ_ONLY:
            assert fields == before[0], f"{rpc} ({code.name}) changed the host's status"
            for cid, c in before[1].items():
                assert chips[cid].same(c), f"{rpc} ({code.name}) changed the chip"
        for cid, c in chips.items():
            self.check_physical(cid, c)
        self.check_infer()

    def check_infer(self) -> None:
        """The known-good call: a small well-formed batch on the loaded network."""
        s = self.status()
        if not s.loaded or s.error:
            return
        x = np.random.default_rng(self.cases).uniform(-1, 1, (2, *self.input_shape))
        y = self.stub.Infer(host_pb2.InferRequest(x=np_tensor(x.astype(np.float32))), timeout=300)
        assert np.isfinite(np.frombuffer(y.y.data, "<f4")).all()

    def check_alive(self) -> None:
        reply = self.health.Check(health_pb2.HealthCheckRequest(service=SERVICE), timeout=300)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
        self.status()

    def check_status(self, f: dict) -> None:
        s = self.status()
        numbers = [s.sim_time_s, s.twin_energy_pj, s.controller_energy_pj, s.availability,
                   s.inference_latency_s_mean, s.inference_latency_s_max,
                   *s.energy_by_kind_pj.values()]  # fmt: skip
        assert all(math.isfinite(v) for v in numbers), numbers
        assert s.sim_time_s >= 0 and 0 <= s.availability <= 1
        assert s.twin_energy_pj >= 0 and s.controller_energy_pj >= 0

    def check_physical(self, chip_id: str, c: ChipCopy) -> None:
        if c.config_json not in self.bounds:
            self.bounds[c.config_json] = g_bound_us(ChipConfig.model_validate_json(c.config_json))
        bound = self.bounds[c.config_json]
        assert np.isfinite(c.now_s) and c.now_s >= 0
        for arr in (c.g, c.nu, c.tw):
            assert np.isfinite(arr).all(), f"{chip_id}: state not finite"
        on = c.programmed
        assert c.g[on].min(initial=0) >= 0 and c.g[on].max(initial=0) <= bound, (chip_id, bound)
        assert c.nu[on].min(initial=0) >= 0 and c.nu[on].max(initial=0) <= 0.5
        # A ProgramVerify job writes its devices at instants inside the job (at_s up to
        # at_s + latency) while the chip's clock stays at at_s, and a host run can stop inside
        # a job: the latest write lies within the program-verify time the chip has recorded.
        pv_s = c.ledger.get("program_verify", {}).get("latency_s", 0.0)
        assert c.tw[on].min(initial=0) >= 0, chip_id
        assert c.tw[on].max(initial=0) <= c.now_s + pv_s, (chip_id, c.tw[on].max(), c.now_s, pv_s)
        assert not (c.g[~on].any() or c.nu[~on].any() or c.tw[~on].any())
