# ruff: noqa: N802  (servicer methods carry the RPC names of the proto)
"""The CrossbarTwin gRPC servicer: validate messages, translate to numpy, call the registry.

Only message-level checks live here (dtype names, byte lengths against shapes, enum values,
required fields, responses that would not fit in a message); everything about devices,
tiles and time is checked by the core, whose ``TwinError`` subclasses carry the status code
(``.code``) that is sent back with their message. A refused request changes nothing.
Values are translated by ``pcmtwin.codec``, errors answered by ``pcmtwin.status`` (the same for
both services: status code, message, and the fields at fault as rich error details).
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Iterator
from typing import TypeVar

import grpc
import numpy as np
import pydantic
import xxhash
from google.protobuf.message import DecodeError

from device_twin.chip import Array
from device_twin.config import ChipConfig
from device_twin.errors import NotFound, ResourceExhausted
from device_twin.program_verify import VerifyJob
from device_twin.service.persistence import DurableRegistry
from device_twin.unroll import ConvGeometry
from pcmtwin import status
from pcmtwin.codec import (
    DEFAULT_MAX_MESSAGE_BYTES,
    FLOAT,
    INTEGER,
    MESSAGE_OVERHEAD_BYTES,
    TWIN_SERVICE,
    array_from_proto,
    numpy_to_tensor,
    pulse_kind_from_proto,
    required_tensor,
    result_to_proto,
    tensor_to_numpy,
    verify_method_from_proto,
)
from pcmtwin.v1 import twin_pb2, twin_pb2_grpc

log = logging.getLogger(__name__)
T = TypeVar("T")

SERVICE_NAME = TWIN_SERVICE
#: What a device list is, for the error when one is missing.
_DEVICES = "a 1-D integer Tensor of flat device indices"
#: Open ``Session`` streams a servicer allows at once (each holds a server thread).
DEFAULT_MAX_SESSIONS = 4
#: The hash scheme of request digests (``request_digest``).
DIGEST_SCHEME = "xxh3-128"


class CrossbarTwinServicer(twin_pb2_grpc.CrossbarTwinServicer):
    """Translates CrossbarTwin calls into ``DurableRegistry`` calls (see the module docstring)."""

    def __init__(
        self, registry: DurableRegistry, max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
        max_sessions: int = DEFAULT_MAX_SESSIONS,
    ) -> None:  # fmt: skip
        self.registry = registry
        self.max_message_bytes = int(max_message_bytes)
        # an open session holds one of the server's threads: leave some for unary calls
        self.max_sessions = int(max_sessions)
        self._sessions = threading.BoundedSemaphore(self.max_sessions)
        self.ready = threading.Event()  # set once state is restored

    # --- plumbing -----------------------------------------------------------------------
    def _call(self, context: grpc.ServicerContext, fn: Callable[[], T]) -> T:
        if not self.ready.is_set():
            context.abort(grpc.StatusCode.UNAVAILABLE, "the twin is restoring its state: retry")
        remaining = context.time_remaining()
        if remaining is not None and remaining <= 0:
            context.abort(grpc.StatusCode.DEADLINE_EXCEEDED, "deadline expired before the call ran")
        try:
            return fn()
        except Exception as exc:
            status.abort(context, exc, "a CrossbarTwin call")

    def _config(self, chip_id: str) -> ChipConfig:
        return self.registry.with_chip(chip_id, lambda c: c.config)

    def _check_response_bytes(self, n_bytes: int, what: str) -> None:
        limit = self.max_message_bytes - MESSAGE_OVERHEAD_BYTES
        if n_bytes > limit:
            raise ResourceExhausted(
                f"{what} would return {n_bytes} bytes, over this server's limit of {limit} bytes "
                "per response: ask for less per call"
            )

    # --- chips ----------------------------------------------------------------------------
    def CreateChip(self, request, context):
        def run():
            try:
                config = ChipConfig.model_validate_json(request.config_json or "{}")
            except pydantic.ValidationError as exc:
                raise status.invalid_argument(exc, "config_json", "chip config") from None
            chip_id = self.registry.create_chip(
                config, request.chip_id or None, request_id=request.request_id,
                request_digest=request_digest(request),
            )  # fmt: skip
            return twin_pb2.CreateChipResponse(chip_id=chip_id)

        return self._call(context, run)

    def DeleteChip(self, request, context):
        def run():
            self.registry.delete_chip(request.chip_id, request_id=request.request_id,
                                      request_digest=request_digest(request))  # fmt: skip
            return twin_pb2.DeleteChipResponse()

        return self._call(context, run)

    def ListChips(self, request, context):
        return self._call(
            context, lambda: twin_pb2.ListChipsResponse(chip_ids=self.registry.list_chips())
        )

    def GetChipInfo(self, request, context):
        def run():
            info = self.registry.chip_info(request.chip_id)
            return twin_pb2.ChipInfo(
                chip_id=info.chip_id, config_json=info.config.model_dump_json(),
                now_s=info.now_s, programmed_tiles=info.programmed_tiles,
                state_bytes=info.state_bytes, op_counter=info.op_counter,
            )  # fmt: skip

        return self._call(context, run)

    def GetEnergyLedger(self, request, context):
        def run():
            ledger = self.registry.energy_ledger(request.chip_id)
            return twin_pb2.EnergyLedger(
                by_kind={k: twin_pb2.LedgerEntry(**v) for k, v in ledger.items()}
            )

        return self._call(context, run)

    def GetConfigSchema(self, request, context):
        return self._call(
            context,
            lambda: twin_pb2.ConfigSchema(json_schema=json.dumps(ChipConfig.model_json_schema())),
        )

    # --- writes ---------------------------------------------------------------------------
    def Program(self, request, context):
        return self._call(context, lambda: self._op_program(request))

    def _op_program(self, request) -> twin_pb2.OpResult:
        what = "a float Tensor of target conductances (rows, cols) in uS"
        gp = required_tensor(request, "g_target_pos_us", FLOAT, what)
        gn = required_tensor(request, "g_target_neg_us", FLOAT, what)
        r = self.registry.program(
            request.chip_id, int(request.tile), gp, gn, request.at_s,
            request_id=request.request_id, pair=int(request.pair),
            request_digest=request_digest(request),
        )  # fmt: skip
        return result_to_proto(r)

    def ProgramDevices(self, request, context):
        return self._call(context, lambda: self._op_program_devices(request))

    def _op_program_devices(self, request) -> twin_pb2.OpResult:
        arr = array_from_proto(request.array)
        dev = required_tensor(request, "devices", INTEGER, _DEVICES)
        g = required_tensor(
            request, "g_target_us", FLOAT, "a 1-D float Tensor, one target per device"
        )
        r = self.registry.program_devices(
            request.chip_id, int(request.tile), arr, dev, g, request.at_s,
            request_id=request.request_id, pair=int(request.pair),
            request_digest=request_digest(request),
        )  # fmt: skip
        return result_to_proto(r)

    def ApplyPulses(self, request, context):
        return self._call(context, lambda: self._op_apply_pulses(request))

    def _op_apply_pulses(self, request) -> twin_pb2.OpResult:
        arr = array_from_proto(request.array)
        kind = pulse_kind_from_proto(request.kind)
        dev = required_tensor(request, "devices", INTEGER, _DEVICES)
        count = required_tensor(
            request, "count", INTEGER, "an integer Tensor: a scalar or one per device"
        )
        r = self.registry.apply_pulses(
            request.chip_id, int(request.tile), arr, dev, kind, count, request.at_s,
            request_id=request.request_id, pair=int(request.pair),
            request_digest=request_digest(request),
        )  # fmt: skip
        return result_to_proto(r)

    def ProgramVerify(self, request, context):
        return self._call(context, lambda: self._op_program_verify(request))

    def _op_program_verify(self, request) -> twin_pb2.OpResult:
        method = verify_method_from_proto(request.method)
        arrays = required_tensor(
            request, "arrays", INTEGER, "a 1-D integer Tensor, each device's array index"
        )
        dev = required_tensor(request, "devices", INTEGER, _DEVICES)
        g = required_tensor(
            request, "g_target_us", FLOAT, "a 1-D float Tensor, one target per device"
        )
        first = None
        if request.HasField("g_read_us"):
            first = tensor_to_numpy(request.g_read_us, "g_read_us", FLOAT)
        # per device back: a float32 deviation and a float64 write instant
        self._check_response_bytes(12 * dev.size, f"a ProgramVerify of {dev.size} devices")
        job = VerifyJob(
            method=method, tolerance_us=request.tolerance_us,
            max_iterations=request.max_iterations, max_pulses=request.max_pulses,
            max_pulses_per_step=request.max_pulses_per_step,
            max_reprograms=request.max_reprograms, verify_reads=request.verify_reads,
            rewrite_all=request.rewrite_all,
        )  # fmt: skip
        r = self.registry.program_verify(
            request.chip_id, int(request.tile), arrays, dev, g, job, request.at_s,
            g_read_us=first, request_id=request.request_id,
            request_digest=request_digest(request),
        )  # fmt: skip
        return result_to_proto(r)

    # --- reads ----------------------------------------------------------------------------
    def ReadDevices(self, request, context):
        return self._call(context, lambda: self._op_read_devices(request))

    def _op_read_devices(self, request) -> twin_pb2.OpResult:
        arr = array_from_proto(request.array)
        dev = None
        if request.HasField("devices"):
            dev = tensor_to_numpy(request.devices, "devices", INTEGER)
        cfg = self._config(request.chip_id)
        per_array = cfg.tile_rows * cfg.tile_cols * (2 if arr is Array.BOTH else 1)
        n = per_array if dev is None else dev.size
        self._check_response_bytes(4 * n, f"reading {n} devices")
        r = self.registry.read_devices(
            request.chip_id, int(request.tile), arr, dev, request.at_s,
            request_id=request.request_id, pair=int(request.pair),
            request_digest=request_digest(request),
        )  # fmt: skip
        return result_to_proto(r)

    def Probe(self, request, context):
        return self._call(context, lambda: self._op_probe(request))

    def _op_probe(self, request) -> twin_pb2.OpResult:
        arr = array_from_proto(request.array, allow_diff=True)
        rows = required_tensor(request, "rows", INTEGER, "a 1-D integer Tensor of row indices")
        cfg = self._config(request.chip_id)
        n_arrays = 2 if arr is Array.BOTH else 1
        col_count = request.col_count if request.HasField("col_count") else None
        n_cols = cfg.tile_cols if col_count is None else max(int(col_count), 0)
        self._check_response_bytes(2 * n_arrays * rows.size * n_cols, f"probing {rows.size} rows")
        r = self.registry.probe(
            request.chip_id, int(request.tile), rows, arr, request.at_s,
            int(request.col_start), col_count, request_id=request.request_id,
            pair=int(request.pair), request_digest=request_digest(request),
        )  # fmt: skip
        return result_to_proto(r)

    def Mvm(self, request, context):
        return self._call(context, lambda: self._op_mvm(request))

    def _op_mvm(self, request) -> twin_pb2.OpResult:
        x = required_tensor(request, "x", FLOAT, "a float Tensor of inputs (batch, k)")
        cfg = self._config(request.chip_id)
        col_count = int(request.col_count) if request.HasField("col_count") else None
        n_out = col_count if col_count is not None else cfg.tile_cols - request.col_start
        batch = x.shape[0] if x.ndim >= 1 else 1
        self._check_response_bytes(
            4 * batch * max(n_out, 0), f"an MVM of batch {batch} on {n_out} columns"
        )
        r = self.registry.mvm(
            request.chip_id, int(request.tile), x, request.at_s, int(request.row_start),
            int(request.col_start), col_count, request_id=request.request_id,
            request_digest=request_digest(request),
        )  # fmt: skip
        return result_to_proto(r)

    def ConvMvm(self, request, context):
        return self._call(context, lambda: self._op_conv_mvm(request))

    def _op_conv_mvm(self, request) -> twin_pb2.OpResult:
        x = required_tensor(request, "x", FLOAT, "a float Tensor, the activation (N, C, H, W)")
        geometry = ConvGeometry.checked(
            list(request.kernel), list(request.stride) or [1, 1],
            list(request.padding) or [0, 0], list(request.dilation) or [1, 1],
        )  # fmt: skip
        cfg = self._config(request.chip_id)
        col_count = int(request.col_count) if request.HasField("col_count") else None
        n_out = col_count if col_count is not None else cfg.tile_cols - request.col_start
        if x.ndim == 4:
            ho, wo = geometry.output_size(x.shape[2], x.shape[3])
            rows = x.shape[0] * max(ho, 0) * max(wo, 0)
            self._check_response_bytes(
                4 * rows * max(n_out, 0), f"a convolution of {rows} positions on {n_out} columns"
            )
        r = self.registry.conv_mvm(
            request.chip_id, int(request.tile), x, request.at_s, geometry,
            int(request.patch_start), int(request.k), int(request.row_start),
            int(request.col_start), col_count, int(request.rows_per_mvm),
            request_id=request.request_id, request_digest=request_digest(request),
        )  # fmt: skip
        return result_to_proto(r)

    # --- sessions -------------------------------------------------------------------------
    _SESSION_OPS = {
        "program": "_op_program", "program_devices": "_op_program_devices",
        "apply_pulses": "_op_apply_pulses", "read_devices": "_op_read_devices",
        "probe": "_op_probe", "mvm": "_op_mvm", "program_verify": "_op_program_verify",
        "conv_mvm": "_op_conv_mvm",
    }  # fmt: skip

    def Session(self, request_iterator, context) -> Iterator[twin_pb2.SessionResponse]:
        """Each operation of the stream is run as its unary call would be, in order; a refusal
        is answered in the stream and the session goes on."""
        if not self.ready.is_set():
            context.abort(grpc.StatusCode.UNAVAILABLE, "the twin is restoring its state: retry")
        if not self._sessions.acquire(blocking=False):
            context.abort(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"this twin serves at most {self.max_sessions} open sessions: "
                "use unary calls, or close a session",
            )
        try:
            yield from self._session(request_iterator)
        finally:
            self._sessions.release()

    def _session(self, request_iterator) -> Iterator[twin_pb2.SessionResponse]:
        for raw in request_iterator:
            req = raw
            if isinstance(raw, bytes):  # the server hands the stream's messages undecoded
                try:
                    req = twin_pb2.SessionRequest.FromString(raw)
                except DecodeError:
                    yield _session_error(
                        grpc.StatusCode.INVALID_ARGUMENT,
                        f"a message of {len(raw)} bytes is not a pcmtwin.v1.SessionRequest",
                    )
                    continue
            which = req.WhichOneof("op")
            if which is None:
                yield _session_error(
                    grpc.StatusCode.INVALID_ARGUMENT,
                    "session request holds no operation: set one of "
                    + ", ".join(self._SESSION_OPS),
                    field="op",
                )
                continue
            op = getattr(self, self._SESSION_OPS[which])
            try:
                result = op(getattr(req, which))
            except Exception as exc:
                r = status.refusal(exc, "a CrossbarTwin session")
                yield twin_pb2.SessionResponse(
                    code=r.code.value[0], message=r.message, status=status.to_status_proto(r)
                )
            else:
                yield twin_pb2.SessionResponse(result=result)

    # --- state ----------------------------------------------------------------------------
    def Snapshot(self, request, context) -> Iterator[twin_pb2.SnapshotChunk]:
        def copy():
            def take(chip):
                n_tiles = chip.config.n_tiles
                tiles = list(request.tiles) or [int(t) for t in np.flatnonzero(chip.programmed)]
                for t in tiles:
                    if not 0 <= t < n_tiles:
                        raise NotFound(
                            f"tile {t} does not exist: this chip has tiles 0..{n_tiles - 1}"
                        )
                head = dict(
                    chip_id=request.chip_id, now_s=chip.now_s, op_counter=chip.op_counter,
                    programmed_tiles=[int(t) for t in np.flatnonzero(chip.programmed)],
                )  # fmt: skip
                data = [
                    (t, chip.g_prog_us[t].copy(), chip.nu[t].copy(), chip.t_write_s[t].copy())
                    for t in tiles
                ]
                return head, data, chip.config.n_arrays * chip.config.tile_cols

            return self.registry.with_chip(request.chip_id, take)

        head, data, devices_per_row = self._call(context, copy)
        row_bytes = devices_per_row * (4 + 4 + 8)
        block = max(1, (self.max_message_bytes - MESSAGE_OVERHEAD_BYTES) // row_bytes)
        for t, g, nu, tw in data:
            for r0 in range(0, g.shape[1], block):
                sl = slice(r0, r0 + block)
                yield twin_pb2.SnapshotChunk(
                    **head, tile=t, row_start=r0, g_prog_us=numpy_to_tensor(g[:, sl]),
                    nu=numpy_to_tensor(nu[:, sl]), t_write_s=numpy_to_tensor(tw[:, sl]),
                )  # fmt: skip


def request_digest(request) -> str:
    """What identifies a request besides its id: its type and every field, as a hash (a
    request id reused for another request is refused, see ``persistence``).

    XXH3-128 (``xxhash``): the digest tells a client's requests apart, it is no defence
    against an attacker (who could simply send another request id), and every MVM and
    ConvMvm carries its activation through it: blake2b took 8 % of a ResNet-32 evaluation's
    CPU time, XXH3 well under 1 %. The scheme prefixes the digest (``persistence``: digests
    of different schemes, e.g. an older log's blake2b ones, are not compared). A request
    without an id cannot be retried or reused: its digest is "" (not known), nothing hashed."""
    if not request.request_id:
        return ""
    h = xxhash.xxh3_128(request.DESCRIPTOR.full_name.encode() + b"\0")
    h.update(request.SerializeToString(deterministic=True))
    return f"{DIGEST_SCHEME}:{h.hexdigest()}"


def _session_error(
    code: grpc.StatusCode, message: str, field: str = ""
) -> twin_pb2.SessionResponse:
    refused = status.Refusal(code, message, ((field, message),) if field else ())
    return twin_pb2.SessionResponse(
        code=code.value[0], message=message, status=status.to_status_proto(refused)
    )
