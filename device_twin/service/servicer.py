# ruff: noqa: N802  (servicer methods carry the RPC names of the proto)
"""The CrossbarTwin gRPC servicer: validate messages, translate to numpy, call the registry.

Only message-level checks live here (dtype names, byte lengths against shapes, enum values,
required fields, responses that would not fit in a message); everything about devices,
tiles and time is checked by the core, whose ``TwinError`` subclasses carry the status code
(``.code``) that is sent back with their message. A refused request changes nothing.
"""

from __future__ import annotations

import json
import logging
import math
import threading
from collections.abc import Callable, Iterator
from typing import TypeVar

import grpc
import numpy as np
import pydantic
from google.protobuf.message import DecodeError

from device_twin.chip import Array, OpResult, PulseKind
from device_twin.config import ChipConfig
from device_twin.errors import InvalidArgument, NotFound, ResourceExhausted, TwinError
from device_twin.service.persistence import DurableRegistry
from pcmtwin.v1 import tensor_pb2, twin_pb2, twin_pb2_grpc

log = logging.getLogger(__name__)
T = TypeVar("T")

SERVICE_NAME = twin_pb2.DESCRIPTOR.services_by_name["CrossbarTwin"].full_name
DEFAULT_MAX_MESSAGE_BYTES = 64 * 1024**2
#: Room left in a message for everything but the tensor payload.
MESSAGE_OVERHEAD_BYTES = 64 * 1024
#: Open ``Session`` streams a servicer allows at once (each holds a server thread).
DEFAULT_MAX_SESSIONS = 4
MAX_TENSOR_NDIM = 8

_DTYPES = {
    name: np.dtype(name).newbyteorder("<")
    for name in ("float32", "float64", "int8", "int16", "int32", "int64",
                 "uint8", "uint16", "uint32", "uint64")
}  # fmt: skip
FLOAT = ("float32", "float64")
INTEGER = ("int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64")


# --- tensors -------------------------------------------------------------------------------
def numpy_to_tensor(a: np.ndarray) -> tensor_pb2.Tensor:
    """A numpy array as a Tensor message (raw little-endian bytes, C order)."""
    a = np.asarray(a)
    if a.dtype.name not in _DTYPES:
        raise InvalidArgument(
            f"dtype {a.dtype} cannot travel: expected one of {', '.join(_DTYPES)}"
        )
    le = np.ascontiguousarray(a).astype(_DTYPES[a.dtype.name], copy=False)
    return tensor_pb2.Tensor(data=le.tobytes(), dtype=a.dtype.name, shape=a.shape)


def tensor_to_numpy(t: tensor_pb2.Tensor, name: str, dtypes: tuple[str, ...]) -> np.ndarray:
    """A Tensor message as a (writable, native) numpy array; ``InvalidArgument`` if malformed."""
    if t.dtype not in dtypes:
        raise InvalidArgument(
            f"{name}.dtype {t.dtype!r} is not accepted here: expected one of {', '.join(dtypes)}"
        )
    shape = tuple(t.shape)
    if len(shape) > MAX_TENSOR_NDIM or any(d < 0 for d in shape):
        raise InvalidArgument(
            f"{name}.shape {list(shape)} is not valid: expected at most {MAX_TENSOR_NDIM} "
            "dimensions, each >= 0"
        )
    dt = _DTYPES[t.dtype]
    n_bytes = math.prod(shape) * dt.itemsize  # Python ints: no overflow for huge shapes
    if len(t.data) != n_bytes:
        raise InvalidArgument(
            f"{name} has {len(t.data)} bytes of data, but dtype {t.dtype} and shape "
            f"{list(shape)} need {n_bytes}"
        )
    return np.frombuffer(t.data, dt).reshape(shape).astype(dt.newbyteorder("="))


def result_to_proto(r: OpResult) -> twin_pb2.OpResult:
    msg = twin_pb2.OpResult(
        kind=r.kind, tile=int(r.tile), at_s=float(r.at_s), devices=int(r.devices),
        pulses=int(r.pulses), iterations=int(r.iterations), energy_pj=float(r.energy_pj),
        latency_s=float(r.latency_s),
    )  # fmt: skip
    if r.values is not None:
        msg.values.CopyFrom(numpy_to_tensor(r.values))
    if r.scale_us is not None:
        msg.scale_us = float(r.scale_us)
    return msg


def result_from_proto(m: twin_pb2.OpResult) -> OpResult:
    values = None
    if m.HasField("values"):
        values = tensor_to_numpy(m.values, "values", tuple(_DTYPES))
    return OpResult(
        m.kind, int(m.tile), m.at_s, devices=m.devices, pulses=m.pulses,
        iterations=m.iterations, energy_pj=m.energy_pj, latency_s=m.latency_s, values=values,
        scale_us=m.scale_us if m.HasField("scale_us") else None,
    )  # fmt: skip


# --- enums ---------------------------------------------------------------------------------
def array_from_proto(value: int, allow_diff: bool = False) -> Array:
    expected = "ARRAY_POS (1), ARRAY_NEG (2), ARRAY_BOTH (4)" + (
        " or ARRAY_DIFF (3)" if allow_diff else ""
    )
    if value == twin_pb2.ARRAY_UNSPECIFIED:
        raise InvalidArgument(f"array is not set (ARRAY_UNSPECIFIED): expected {expected}")
    if value not in (
        twin_pb2.ARRAY_POS,
        twin_pb2.ARRAY_NEG,
        twin_pb2.ARRAY_DIFF,
        twin_pb2.ARRAY_BOTH,
    ):
        raise InvalidArgument(f"unknown array value {value}: expected {expected}")
    a = Array(value - 1)
    if a is Array.DIFF and not allow_diff:
        raise InvalidArgument(f"ARRAY_DIFF is only valid for Probe: expected {expected}")
    return a


def array_to_proto(a: int) -> int:
    return int(a) + 1


def pulse_kind_from_proto(value: int) -> PulseKind:
    expected = "PULSE_KIND_SET (1) or PULSE_KIND_RESET (2)"
    if value == twin_pb2.PULSE_KIND_UNSPECIFIED:
        raise InvalidArgument(f"kind is not set (PULSE_KIND_UNSPECIFIED): expected {expected}")
    if value not in (twin_pb2.PULSE_KIND_SET, twin_pb2.PULSE_KIND_RESET):
        raise InvalidArgument(f"unknown pulse kind value {value}: expected {expected}")
    return PulseKind(value - 1)


def pulse_kind_to_proto(k: int) -> int:
    return int(k) + 1


def _required(msg, field: str, what: str) -> tensor_pb2.Tensor:
    if not msg.HasField(field):
        raise InvalidArgument(f"{field} is required: {what}")
    return getattr(msg, field)


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
            context.abort(*_refusal(exc))
        raise AssertionError("unreachable")  # context.abort raises

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
            config = ChipConfig.model_validate_json(request.config_json or "{}")
            chip_id = self.registry.create_chip(
                config, request.chip_id or None, request_id=request.request_id
            )
            return twin_pb2.CreateChipResponse(chip_id=chip_id)

        return self._call(context, run)

    def DeleteChip(self, request, context):
        def run():
            self.registry.delete_chip(request.chip_id, request_id=request.request_id)
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
        gp = tensor_to_numpy(_required(request, "g_target_pos_us", what), "g_target_pos_us", FLOAT)
        gn = tensor_to_numpy(_required(request, "g_target_neg_us", what), "g_target_neg_us", FLOAT)
        r = self.registry.program(
            request.chip_id, int(request.tile), gp, gn, request.at_s,
            request_id=request.request_id,
        )  # fmt: skip
        return result_to_proto(r)

    def ProgramDevices(self, request, context):
        return self._call(context, lambda: self._op_program_devices(request))

    def _op_program_devices(self, request) -> twin_pb2.OpResult:
        arr = array_from_proto(request.array)
        dev = tensor_to_numpy(
            _required(request, "devices", "a 1-D integer Tensor of flat device indices"),
            "devices", INTEGER,
        )  # fmt: skip
        g = tensor_to_numpy(
            _required(request, "g_target_us", "a 1-D float Tensor, one target per device"),
            "g_target_us", FLOAT,
        )  # fmt: skip
        r = self.registry.program_devices(
            request.chip_id, int(request.tile), arr, dev, g, request.at_s,
            request_id=request.request_id,
        )  # fmt: skip
        return result_to_proto(r)

    def ApplyPulses(self, request, context):
        return self._call(context, lambda: self._op_apply_pulses(request))

    def _op_apply_pulses(self, request) -> twin_pb2.OpResult:
        arr = array_from_proto(request.array)
        kind = pulse_kind_from_proto(request.kind)
        dev = tensor_to_numpy(
            _required(request, "devices", "a 1-D integer Tensor of flat device indices"),
            "devices", INTEGER,
        )  # fmt: skip
        count = tensor_to_numpy(
            _required(request, "count", "an integer Tensor: a scalar or one per device"),
            "count", INTEGER,
        )  # fmt: skip
        r = self.registry.apply_pulses(
            request.chip_id, int(request.tile), arr, dev, kind, count, request.at_s,
            request_id=request.request_id,
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
            request_id=request.request_id,
        )  # fmt: skip
        return result_to_proto(r)

    def Probe(self, request, context):
        return self._call(context, lambda: self._op_probe(request))

    def _op_probe(self, request) -> twin_pb2.OpResult:
        arr = array_from_proto(request.array, allow_diff=True)
        rows = tensor_to_numpy(
            _required(request, "rows", "a 1-D integer Tensor of row indices"), "rows", INTEGER
        )
        cfg = self._config(request.chip_id)
        n_arrays = 2 if arr is Array.BOTH else 1
        col_count = request.col_count if request.HasField("col_count") else None
        n_cols = cfg.tile_cols if col_count is None else max(int(col_count), 0)
        self._check_response_bytes(2 * n_arrays * rows.size * n_cols, f"probing {rows.size} rows")
        r = self.registry.probe(
            request.chip_id, int(request.tile), rows, arr, request.at_s,
            int(request.col_start), col_count, request_id=request.request_id,
        )  # fmt: skip
        return result_to_proto(r)

    def Mvm(self, request, context):
        return self._call(context, lambda: self._op_mvm(request))

    def _op_mvm(self, request) -> twin_pb2.OpResult:
        x = tensor_to_numpy(
            _required(request, "x", "a float Tensor of inputs (batch, k)"), "x", FLOAT
        )
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
        )  # fmt: skip
        return result_to_proto(r)

    # --- sessions -------------------------------------------------------------------------
    _SESSION_OPS = {
        "program": "_op_program", "program_devices": "_op_program_devices",
        "apply_pulses": "_op_apply_pulses", "read_devices": "_op_read_devices",
        "probe": "_op_probe", "mvm": "_op_mvm",
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
                )
                continue
            op = getattr(self, self._SESSION_OPS[which])
            try:
                result = op(getattr(req, which))
            except Exception as exc:
                yield _session_error(*_refusal(exc))
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
                return head, data, chip.config.tile_cols

            return self.registry.with_chip(request.chip_id, take)

        head, data, cols = self._call(context, copy)
        row_bytes = 2 * cols * (4 + 4 + 8)
        block = max(1, (self.max_message_bytes - MESSAGE_OVERHEAD_BYTES) // row_bytes)
        for t, g, nu, tw in data:
            for r0 in range(0, g.shape[1], block):
                sl = slice(r0, r0 + block)
                yield twin_pb2.SnapshotChunk(
                    **head, tile=t, row_start=r0, g_prog_us=numpy_to_tensor(g[:, sl]),
                    nu=numpy_to_tensor(nu[:, sl]), t_write_s=numpy_to_tensor(tw[:, sl]),
                )  # fmt: skip


def _refusal(exc: Exception) -> tuple[grpc.StatusCode, str]:
    """The status and message a failed operation is answered with (unary or in a session)."""
    if isinstance(exc, TwinError):
        return _status(exc.code), str(exc)
    if isinstance(exc, pydantic.ValidationError):
        return grpc.StatusCode.INVALID_ARGUMENT, _pydantic_message(exc)
    # a bug must not kill the server or leak a traceback
    log.error("internal error in a CrossbarTwin call", exc_info=exc)
    return grpc.StatusCode.INTERNAL, f"internal error: {type(exc).__name__}"


def _session_error(code: grpc.StatusCode, message: str) -> twin_pb2.SessionResponse:
    return twin_pb2.SessionResponse(code=code.value[0], message=message)


def _status(code: str) -> grpc.StatusCode:
    return getattr(grpc.StatusCode, code, grpc.StatusCode.UNKNOWN)


def _pydantic_message(exc: pydantic.ValidationError) -> str:
    parts = []
    for e in exc.errors()[:5]:
        loc = ".".join(str(p) for p in e["loc"]) or "config"
        parts.append(f"{loc}: {e['msg']}")
    more = f" (and {exc.error_count() - 5} more)" if exc.error_count() > 5 else ""
    return "chip config is not valid: " + "; ".join(parts) + more
