"""A CrossbarTwin server under attack, and what every fuzz case checks afterwards.

``TwinHarness`` runs an in-process ``TwinServer`` on 127.0.0.1 (small limits so that "too
large" is cheap to reach), keeps two well-known chips (``fz-a``, ``fz-b``: tile 0 programmed,
tile 1 not) and sends requests with the generated stubs, so that messages the client would
refuse reach the server. After every case it checks that

- the answer is one of the status codes allowed for that RPC;
- the server is alive: the health check says SERVING and ``ListChips`` answers;
- a refused request (and every query) changed nothing: every chip's clock, random state,
  ledger and device arrays are bit for bit what they were;
- an accepted device operation changed only its chip, advanced its clock to ``at_s`` and its
  operation counter by one, and wrote only the devices it addressed (reads wrote none);
  its data (reads, probes, MVMs) is finite;
- every chip's state is physical: finite, ``g_prog`` in [0, the devices' saturation bound],
  ``nu`` in [0, 0.5], ``t_write`` in [0, the chip's now], unprogrammed tiles untouched
  (a ProgramVerify job stamps its writes at its steps' instants, from ``at_s`` to
  ``at_s + latency``, while the chip's clock stays at ``at_s``: up to that end, then);
- a refusal reads well and carries its rich status, inside a Session too
  (``tests.reliability.refusals``).
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass

import grpc
import numpy as np
from grpc_health.v1 import health_pb2, health_pb2_grpc

from controller.rpc.client import TwinClient
from device_twin.chip import Chip
from device_twin.config import ChipConfig
from device_twin.service.server import ServerOptions, TwinServer
from device_twin.unroll import ConvGeometry
from pcmtwin.credentials import make_channel
from pcmtwin.v1 import twin_pb2, twin_pb2_grpc
from tests.reliability.fuzzing import tally
from tests.reliability.refusals import check_refusal, rich_status

LIMIT = 1024**2
MAX_CHIPS = 6
BUDGET = 1024**2  # small: every case copies all device state twice
CFG = ChipConfig(n_tiles=2, tile_rows=24, tile_cols=16, seed=5)
N_DEV = CFG.tile_rows * CFG.tile_cols
FIXTURES = ("fz-a", "fz-b")
NU_MAX = 0.5
#: Chips whose clock ran this far are replaced, so that later cases can act on them again.
RESET_AFTER_S = 1e6

C = grpc.StatusCode
_CODES = {c.value[0]: c for c in grpc.StatusCode}
DEVICE_OPS = ("Program", "ProgramDevices", "ApplyPulses", "ReadDevices", "Probe", "Mvm",
              "ProgramVerify", "ConvMvm")  # fmt: skip
WRITES = ("Program", "ProgramDevices", "ApplyPulses", "ProgramVerify")
QUERIES = ("ListChips", "GetChipInfo", "GetEnergyLedger", "GetConfigSchema", "Snapshot")
_OPS = {C.OK, C.INVALID_ARGUMENT, C.NOT_FOUND, C.FAILED_PRECONDITION, C.RESOURCE_EXHAUSTED}
ALLOWED: dict[str, set[grpc.StatusCode]] = {
    "CreateChip": {C.OK, C.INVALID_ARGUMENT, C.RESOURCE_EXHAUSTED, C.ALREADY_EXISTS},
    "DeleteChip": {C.OK, C.NOT_FOUND},
    "ListChips": {C.OK},
    "GetChipInfo": {C.OK, C.NOT_FOUND},
    "GetEnergyLedger": {C.OK, C.NOT_FOUND},
    "GetConfigSchema": {C.OK},
    "Snapshot": {C.OK, C.NOT_FOUND},
    **{rpc: _OPS for rpc in DEVICE_OPS},
    # refusals of a session's operations travel inside the stream, which itself ends OK
    "Session": {C.OK},
}


@dataclass
class ChipCopy:
    """Everything a request could change on one chip."""

    now_s: float
    op_counter: int
    programmed: np.ndarray
    tile_version: np.ndarray
    ledger: dict
    config_json: str
    g: np.ndarray
    nu: np.ndarray
    tw: np.ndarray

    def same(self, other: ChipCopy) -> bool:
        return (self.now_s, self.op_counter, self.ledger, self.config_json) == (
            other.now_s,
            other.op_counter,
            other.ledger,
            other.config_json,
        ) and all(
            a.tobytes() == b.tobytes() for a, b in zip(self.arrays(), other.arrays(), strict=True)
        )

    def arrays(self) -> tuple[np.ndarray, ...]:
        return (self.programmed, self.tile_version, self.g, self.nu, self.tw)


def chip_copy(c) -> ChipCopy:
    """A copy of everything a request could change on a ``Chip`` (call under its lock)."""
    return ChipCopy(
        c.now_s, c.op_counter, c.programmed.copy(), c.tile_version.copy(), c.ledger.to_dict(),
        c.config.model_dump_json(), c.g_prog_us.copy(), c.nu.copy(), c.t_write_s.copy(),
    )  # fmt: skip


def g_bound_us(config: ChipConfig) -> float:
    """The largest conductance a device of this chip can hold: its own saturation bound (no
    write puts a device above it)."""
    chip = Chip(config)
    n = config.tile_rows * config.tile_cols
    arrays = np.repeat(np.arange(2, dtype=np.int8), n)
    index = np.tile(np.arange(n, dtype=np.int64), 2)
    return max(float(chip.pulse_model.bound_us(t, arrays, index).max())
               for t in range(config.n_tiles))  # fmt: skip


class Outcome:
    def __init__(self, code: grpc.StatusCode, details: str, response=None) -> None:
        self.code, self.details, self.response = code, details, response


class TwinHarness:
    """See the module docstring."""

    def __init__(self) -> None:
        self.server = TwinServer(ServerOptions(
            address="127.0.0.1:0", max_message_bytes=LIMIT, max_chips=MAX_CHIPS,
            state_budget_bytes=BUDGET,
        ))  # fmt: skip
        self.server.start()
        self.registry = self.server.registry
        # the client side allows more than the server, so that the server is the one refusing
        self.channel = make_channel(self.server.address, max_message_bytes=8 * LIMIT)
        self.stub = twin_pb2_grpc.CrossbarTwinStub(self.channel)
        self.health = health_pb2_grpc.HealthStub(self.channel)
        self.client = TwinClient(self.server.address, max_message_bytes=8 * LIMIT, timeout_s=300)
        self.rng = np.random.default_rng(0)
        self.g_max_bound = g_bound_us(CFG)
        self.cases = 0
        #: (chip, tile) -> end of its last ProgramVerify job: its devices carry the write
        #: instants of the job's steps, up to that end, while the chip's clock stays at at_s
        self.busy_until_s: dict[tuple[str, int], float] = {}

    def close(self) -> None:
        self.client.close()
        self.channel.close()
        self.server.stop(grace_s=0)

    # --- the well-known chips ---------------------------------------------------------------
    def ensure_fixtures(self, keep_scratch: bool = False) -> None:
        """Recreate a well-known chip that a case deleted, re-programmed or aged too far;
        delete the chips cases created, unless ``keep_scratch``."""
        chips = set(self.registry.list_chips())
        if not keep_scratch:
            for cid in chips - set(FIXTURES):
                self.client.delete_chip(cid)
        for cid in FIXTURES:
            if cid in chips:
                c = self.copy(cid)
                if c.now_s <= RESET_AFTER_S and c.programmed.tolist() == [True, False]:
                    continue
                self.client.delete_chip(cid)
            self.forget(cid)
            self.client.create_chip(CFG, cid)
            g = self.rng.uniform(0, CFG.g_max_us, (2, CFG.tile_rows, CFG.tile_cols))
            self.client.program(cid, 0, g[0].astype(np.float32), g[1].astype(np.float32), 0.0)

    def forget(self, chip_id: str) -> None:
        for key in [k for k in self.busy_until_s if k[0] == chip_id]:
            del self.busy_until_s[key]

    def scratch_chips(self) -> list[str]:
        return [c for c in self.registry.list_chips() if c not in FIXTURES]

    def now_s(self, chip_id: str) -> float:
        try:
            return self.registry.with_chip(chip_id, lambda c: c.now_s)
        except Exception:
            return 0.0

    # --- state ----------------------------------------------------------------------------
    def copy(self, chip_id: str) -> ChipCopy:
        return self.registry.with_chip(chip_id, chip_copy)

    def state(self) -> dict[str, ChipCopy]:
        return {cid: self.copy(cid) for cid in self.registry.list_chips()}

    # --- one case ---------------------------------------------------------------------------
    def call_in_session(self, rpc: str, request) -> Outcome:
        """``request`` as the one operation of a Session stream; its answer as an Outcome."""
        field = re.sub(r"(?<!^)([A-Z])", r"_\1", rpc).lower()
        op = twin_pb2.SessionRequest(**{field: request})
        try:
            answers = list(self.stub.Session(iter([op]), timeout=300))
        except grpc.RpcError as exc:
            # only a message over the size limit is refused by gRPC itself, for the stream
            assert exc.code() == C.RESOURCE_EXHAUSTED, f"session ended {exc.code().name}"
            return Outcome(exc.code(), exc.details() or "")
        assert len(answers) == 1, f"{len(answers)} answers to one session operation"
        a = answers[0]
        if a.code == 0:
            assert a.HasField("result")
            return Outcome(C.OK, "", a.result)
        assert not a.HasField("result") and a.message
        # the refusal in gRPC's rich error model too, with the same code and message
        assert a.HasField("status")
        check_refusal(request, _CODES[a.code], a.message, a.status)
        return Outcome(_CODES[a.code], a.message)

    def call(self, rpc: str, request) -> Outcome:
        method = getattr(self.stub, rpc)
        try:
            if rpc == "Snapshot":
                response = list(method(request, timeout=300))
            else:
                response = method(request, timeout=300)
        except grpc.RpcError as exc:
            check_refusal(request, exc.code(), exc.details() or "", rich_status(exc))
            return Outcome(exc.code(), exc.details() or "")
        return Outcome(C.OK, "", response)

    def run(self, rpc: str, request, session: bool = False) -> Outcome:
        """Send one request (as its unary call, or inside a Session stream) and check
        everything the module docstring lists."""
        if getattr(request, "request_id", ""):
            # unique per call: hypothesis replays examples, and a reused id is a retry that
            # gets the recorded answer of the first call (tested in test_persistence.py)
            request.request_id += f"-{uuid.uuid4().hex}"
        before = self.state()
        out = self.call_in_session(rpc, request) if session else self.call(rpc, request)
        self.after_case(rpc, out, before, request, tally_as=f"Session/{rpc}" if session else rpc)
        return out

    def after_case(
        self, rpc: str, out: Outcome, before: dict[str, ChipCopy], request,
        tally_as: str | None = None,
    ) -> None:  # fmt: skip
        self.cases += 1
        tally(f"CrossbarTwin.{tally_as or rpc}", out.code.name)
        assert out.code in ALLOWED[rpc], f"{rpc} answered {out.code.name}: {out.details}"
        assert out.code != C.UNKNOWN and "Traceback" not in out.details
        self.check_alive()
        after = self.state()
        if out.code != C.OK or rpc in QUERIES:
            assert set(after) == set(before), f"{rpc} ({out.code.name}) added or removed chips"
            for cid in before:
                assert after[cid].same(before[cid]), f"{rpc} ({out.code.name}) changed {cid}"
        elif request is not None:
            self.check_effect(rpc, request, out.response, before, after)
        for cid, c in after.items():
            self.check_physical(cid, c)

    def check_alive(self) -> None:
        reply = self.health.Check(health_pb2.HealthCheckRequest(service=""), timeout=120)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
        self.stub.ListChips(twin_pb2.ListChipsRequest(), timeout=120)

    def check_effect(self, rpc, request, response, before, after) -> None:
        if rpc in ("CreateChip", "DeleteChip"):
            self.forget(response.chip_id if rpc == "CreateChip" else request.chip_id)
        if rpc == "CreateChip":
            new = set(after) - set(before)
            assert set(before) <= set(after) and new == {response.chip_id}
            assert int(after[response.chip_id].op_counter) == 0
            return
        if rpc == "DeleteChip":
            assert set(after) == set(before) - {request.chip_id}
            return
        cid = request.chip_id
        assert set(after) == set(before)
        for other in before:
            if other != cid:
                assert after[other].same(before[other]), f"{rpc} on {cid} changed {other}"
        b, a = before[cid], after[cid]
        assert a.op_counter == b.op_counter + 1, "one accepted call is one operation"
        assert a.now_s == request.at_s
        changed = (a.g != b.g) | (a.nu != b.nu) | (a.tw != b.tw)
        if rpc not in WRITES:
            assert not changed.any(), f"{rpc} wrote devices"
            self.check_values(rpc, request, response)
            return
        addressed = np.zeros_like(changed)
        tile = int(request.tile)
        if rpc == "Program":
            addressed[tile] = True
        else:
            idx = _ints(request.devices)
            if rpc == "ProgramVerify":  # an array index per device
                arr = _ints(request.arrays)
            elif request.array == twin_pb2.ARRAY_BOTH:  # array * rows * cols + row * cols + col
                arr, idx = np.divmod(idx, N_DEV)
            else:
                arr = np.full(idx.size, request.array - 1)
            r, col = np.divmod(idx, CFG.tile_cols)
            addressed[tile, arr, r, col] = True
        assert not (changed & ~addressed).any(), f"{rpc} wrote devices it did not address"
        if rpc == "ProgramVerify":  # its steps write from at_s to at_s + latency
            t_end = self.note_busy(rpc, request, response)
            assert (a.tw[changed] >= request.at_s).all() and (a.tw[changed] <= t_end).all()
            n = _ints(request.devices).size
            dev = _values(response.values)
            assert response.values.dtype == "float32" and dev.shape == (n,)
            assert np.isfinite(dev).all() and response.verify.t_write_s.shape == [n]
        else:
            assert (a.tw[addressed] == request.at_s).all(), "a written device has t_write = at_s"

    def note_busy(self, rpc: str, request, response) -> float:
        """Remember how far an accepted ProgramVerify wrote its tile (its steps write from
        at_s to at_s + latency); the latest write instant of the call."""
        if rpc != "ProgramVerify":
            return request.at_s
        t_end = request.at_s + response.latency_s
        key = (request.chip_id, int(request.tile))
        self.busy_until_s[key] = max(self.busy_until_s.get(key, 0.0), t_end)
        return t_end

    @staticmethod
    def check_values(rpc: str, request, response) -> None:
        t = response.values
        values = np.frombuffer(t.data, np.dtype(t.dtype).newbyteorder("<")).reshape(tuple(t.shape))
        if rpc == "ReadDevices":
            assert t.dtype == "float32" and np.isfinite(values).all() and (values >= 0).all()
        elif rpc == "Probe":
            assert t.dtype == "int16" and np.isfinite(response.scale_us) and response.scale_us > 0
        elif rpc == "Mvm":
            assert t.dtype == "float32" and np.isfinite(values).all(), "MVM output not finite"
            batch = request.x.shape[0]
            n_out = request.col_count if request.HasField("col_count") else (
                CFG.tile_cols - request.col_start
            )  # fmt: skip
            assert values.shape == (batch, n_out)
        elif rpc == "ConvMvm":
            assert t.dtype == "float32" and np.isfinite(values).all(), "conv output not finite"
            g = ConvGeometry(
                tuple(request.kernel),
                tuple(request.stride) or (1, 1),
                tuple(request.padding) or (0, 0),
                tuple(request.dilation) or (1, 1),
            )
            ho, wo = g.output_size(request.x.shape[2], request.x.shape[3])
            n_out = (
                request.col_count
                if request.HasField("col_count")
                else (CFG.tile_cols - request.col_start)
            )
            assert values.shape == (request.x.shape[0] * ho * wo, n_out)  # fmt: skip

    def check_physical(self, chip_id: str, c: ChipCopy) -> None:
        """Finite, physical device state; untouched zeros on unprogrammed tiles."""
        assert np.isfinite(c.now_s) and c.now_s >= 0, (chip_id, c.now_s)
        for arr in (c.g, c.nu, c.tw):
            assert np.isfinite(arr).all(), f"{chip_id}: state not finite"
        bound = self.g_max_bound if chip_id in FIXTURES else None
        for tile, programmed in enumerate(c.programmed):
            g, nu, tw = c.g[tile], c.nu[tile], c.tw[tile]
            if not programmed:
                assert not (g.any() or nu.any() or tw.any()), f"{chip_id}: tile {tile} written"
                continue
            assert g.min() >= 0 and (bound is None or g.max() <= bound), (chip_id, g.max())
            assert nu.min() >= 0 and nu.max() <= NU_MAX, (chip_id, nu.max())
            latest = max(c.now_s, self.busy_until_s.get((chip_id, tile), 0.0))
            assert tw.min() >= 0 and tw.max() <= latest, (chip_id, tw.max(), c.now_s)


def _ints(t) -> np.ndarray:
    """A Tensor of integers as int64."""
    return np.frombuffer(t.data, np.dtype(t.dtype).newbyteorder("<")).astype(np.int64)


def _values(t) -> np.ndarray:
    return np.frombuffer(t.data, np.dtype(t.dtype).newbyteorder("<")).reshape(tuple(t.shape))
