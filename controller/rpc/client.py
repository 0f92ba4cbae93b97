"""``TwinClient``: the CrossbarTwin gRPC service as numpy calls, interchangeable with the
in-process ``device_twin.registry.ChipRegistry``.

Same method names and arguments (chip id first), same results (``device_twin.chip.OpResult``,
without ``writes``), same errors: a refused call raises the core's ``InvalidArgument``,
``NotFound``, ``FailedPrecondition`` or ``ResourceExhausted`` with the server's message and
the fields it names (``.violations``); other failures raise ``TwinRpcError`` (a ``TwinError``
whose ``.code`` is the status name). The mapping is ``pcmtwin.status``'s.

Every call has a deadline (``timeout_s``, covering its retries). Calls failing with
UNAVAILABLE (server down, restarting or restoring) are retried with exponential backoff
and jitter, at most ``retries`` times. Each call carries a fresh ``request_id`` that its
retries reuse, so a retried call that did reach the server before the failure is answered
from the server's record instead of acting twice. ``TWIN_RETRY`` is the patience of a
long-running client (a scenario run): it rides out a twin restarting on its state directory.

A client that must never give up on a twin that is down (the chip host: a stopped twin must
not become a stopped run) uses :meth:`TwinClient.patient`: a view of the same connection whose
calls retry for as long as the twin is unreachable, each attempt bounded by
``attempt_timeout_s`` (a twin that hangs counts as unreachable too; retrying is safe, the
``request_id`` makes the twin answer a repeated request from its record), until its ``stop``
event is set: they end with ``CANCELLED``. ``reachable`` says whether
the latest attempt reached the twin; ``on_reachable(bool)`` is told when that changes.

Sessions (``session=True``): device operations (program, pulses, reads, probes, MVMs) travel
on one ``Session`` stream instead of a unary call each, which saves most of a small call's
cost. Results and errors are the same. A session serialises the client's device operations
(one at a time, in order). If the stream breaks (server killed, restarting, too many open
sessions, an operation over its deadline), the operation is sent again as a unary call with
the same ``request_id`` (so it never acts twice) and the normal retries, and the next
operation opens a new session.

MVM batches whose request or response would not fit in one message are split into several
MVMs at the same ``at_s`` (each one operation of the chip, sharing the tile's read-noise
realisation at that instant); energy and latency are summed and outputs concatenated.
"""

from __future__ import annotations

import copy
import json
import math
import random
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

import grpc
import numpy as np
from grpc_health.v1 import health_pb2, health_pb2_grpc

from controller.rpc.batching import joined, message_batches
from controller.rpc.session import Reachability, SessionBroken, SessionStream
from controller.rpc.snapshot import ChipState, chip_state_from_chunks
from device_twin.chip import OpResult
from device_twin.config import ChipConfig
from device_twin.program_verify import VerifyJob
from device_twin.registry import ChipInfo
from pcmtwin.codec import (
    DEFAULT_MAX_MESSAGE_BYTES,
    TWIN_SERVICE,
    array_to_proto,
    fill_tensor,
    numpy_to_tensor,
    pulse_kind_to_proto,
    result_from_proto,
    verify_method_to_proto,
)
from pcmtwin.credentials import make_channel
from pcmtwin.status import (
    TwinRpcError,
    error_from_rpc,
    error_from_status,
    status_code_from_value,
    violations_in,
)
from pcmtwin.v1 import twin_pb2, twin_pb2_grpc

__all__ = ["TWIN_RETRY", "ChipState", "TwinClient", "TwinRpcError"]  # TwinRpcError: pcmtwin.status

#: The patience of a long-running client: it rides out a twin that is down (killed,
#: restarting, restoring its state) for at least 75 s: an UNAVAILABLE call is retried with
#: backoff capped at 2 s (jittered to 1-2 s), up to 80 times within the call's 120 s deadline.
#: A restart of a `twin serve --state-dir` process took 2-3 s on an idle 2-core machine
#: (start-up; restoring a chip from a log of a few hundred records: 0.05 s), several times that
#: on a loaded one.
TWIN_RETRY = {"retries": 80, "backoff_s": 0.05, "backoff_max_s": 2.0, "timeout_s": 120.0}
#: Status codes of an attempt that did not reach a working twin (retried by a patient client).
_TRANSPORT = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)


class TwinClient:
    """A CrossbarTwin client (see the module docstring)."""

    def __init__(
        self,
        address: str,
        *,
        token: str | None = None,
        root_cert: bytes | str | None = None,
        server_name: str | None = None,
        timeout_s: float = 60.0,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
        retries: int | None = 5,
        backoff_s: float = 0.05,
        backoff_max_s: float = 2.0,
        session: bool = False,
        on_reachable: Callable[[bool], None] | None = None,
    ) -> None:
        self.address = address
        self.timeout_s = float(timeout_s)
        self.attempt_timeout_s: float | None = None  # per attempt; None: the call's deadline
        self.max_message_bytes = int(max_message_bytes)
        self.retries = None if retries is None else int(retries)
        self.backoff_s = float(backoff_s)
        self.backoff_max_s = float(backoff_max_s)
        self.channel = make_channel(
            address, token=token, root_cert=root_cert, max_message_bytes=max_message_bytes,
            server_name=server_name,
        )  # fmt: skip
        self._stub = twin_pb2_grpc.CrossbarTwinStub(self.channel)
        self._health = health_pb2_grpc.HealthStub(self.channel)
        self._tile_cols: dict[str, int] = {}
        self.use_session = bool(session)
        self._session: SessionStream | None = None
        self._session_lock = threading.Lock()
        self.session_fallbacks = 0  # operations that went unary after a broken session
        self.stop = threading.Event()  # set by close: retries waiting for the twin end
        self._reach = Reachability(on_reachable)  # shared with the patient view

    def patient(self, attempt_timeout_s: float = 60.0) -> TwinClient:
        """This client's connection, with calls that retry while the twin is unreachable
        (UNAVAILABLE, or no answer within ``attempt_timeout_s``) until it answers or the
        view's ``stop`` is set (see the module docstring). Closing the view closes the
        connection they share."""
        view = copy.copy(self)
        view.timeout_s, view.retries, view.attempt_timeout_s = math.inf, None, attempt_timeout_s
        view.use_session, view._session, view._session_lock = False, None, threading.Lock()
        view.stop = threading.Event()  # its own: ``close`` of the client sets only the client's
        view._tile_cols = self._tile_cols
        return view

    def bounded(self, timeout_s: float) -> TwinClient:
        """This client's connection, with every call bounded by ``timeout_s`` (its retries
        included): for a question that must not hold its caller long. Unary calls only;
        closing the view closes the connection they share."""
        view = copy.copy(self)
        view.timeout_s = float(timeout_s)
        view.use_session, view._session, view._session_lock = False, None, threading.Lock()
        return view

    @property
    def reachable(self) -> bool:
        """Whether the latest attempt of any call (or ``ping``) reached the twin."""
        return self._reach.reachable

    @property
    def unreachable_since(self) -> float | None:
        """``time.monotonic()`` of the first failed attempt of the current outage (None: none)."""
        return self._reach.since

    def _reached(self, ok: bool) -> None:
        self._reach.update(ok)

    def ping(self, timeout_s: float = 1.0) -> bool:
        """Whether the twin answers its health check with SERVING now (updates ``reachable``)."""
        request = health_pb2.HealthCheckRequest(service=TWIN_SERVICE)
        try:
            ok = self._health.Check(request, timeout=timeout_s).status == (
                health_pb2.HealthCheckResponse.SERVING
            )
        except grpc.RpcError:
            ok = False
        self._reached(ok)
        return ok

    def close_session(self) -> None:
        """End the open session, if any (the next operation opens a new one). A session holds
        one of the server's threads until it ends: close it when a burst of work is done."""
        with self._session_lock:
            if self._session is not None:
                self._session.close()
                self._session = None

    def close(self) -> None:
        self.stop.set()
        self.close_session()
        self.channel.close()

    def __enter__(self) -> TwinClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- plumbing -------------------------------------------------------------------------
    def _call(self, method: Callable[..., Any], request: Any, timeout_s: float | None = None):
        timeout_s = self.timeout_s if timeout_s is None else timeout_s
        deadline = time.monotonic() + timeout_s
        attempt = 0
        while True:
            if self.stop.is_set():
                raise TwinRpcError(
                    grpc.StatusCode.CANCELLED.name,
                    "the client was closed while the twin was unreachable",
                )
            remaining = deadline - time.monotonic()
            if remaining <= 0:  # gRPC may still complete a call sent with no time left
                raise TwinRpcError(
                    grpc.StatusCode.DEADLINE_EXCEEDED.name,
                    f"the call's deadline ({timeout_s} s, retries included) expired before it "
                    "could be sent",
                )
            per_attempt = min(remaining, self.attempt_timeout_s or math.inf)
            try:
                result = method(request, timeout=per_attempt)
            except grpc.RpcError as exc:
                code = exc.code()
                # a patient client also retries an attempt that hung (its own deadline)
                lost = code == grpc.StatusCode.UNAVAILABLE or (
                    code in _TRANSPORT and per_attempt < remaining
                )
                if lost:
                    self._reached(False)
                delay = min(self.backoff_max_s, self.backoff_s * 2 ** min(attempt, 30))
                delay *= random.uniform(0.5, 1.0)  # jitter: clients must not retry in step
                retry = (
                    lost
                    and (self.retries is None or attempt < self.retries)
                    and time.monotonic() + delay < deadline
                )
                if not retry:
                    raise error_from_rpc(exc) from None
            else:
                self._reached(True)
                return result
            self.stop.wait(delay)
            attempt += 1

    @staticmethod
    def _envelope(name: str) -> tuple[twin_pb2.SessionRequest, Any]:
        """A session request holding an empty ``name`` request, and that request: filled in
        place, a large request travels in a session without being copied into it."""
        envelope = twin_pb2.SessionRequest()
        request = getattr(envelope, name)
        request.SetInParent()
        return envelope, request

    def _op(
        self, name: str, request: Any, envelope: twin_pb2.SessionRequest | None = None
    ) -> twin_pb2.OpResult:
        """A device operation: on the session if one is in use, else (or if the session
        breaks) as its unary call, ``CrossbarTwin.<Name>``. ``envelope``: the session request
        ``request`` was built in (``_envelope``)."""
        if self.use_session:
            with self._session_lock:
                try:
                    if self._session is None:
                        self._session = SessionStream(self._stub)
                    if envelope is None:
                        envelope = twin_pb2.SessionRequest(**{name: request})
                    got = self._session.request(envelope, self.timeout_s)
                except SessionBroken:
                    self._session.close()
                    self._session = None
                    self.session_fallbacks += 1
                else:
                    if got.code == 0:
                        return got.result
                    code = status_code_from_value(got.code)
                    if code != grpc.StatusCode.UNAVAILABLE:
                        found = violations_in(got.status) if got.HasField("status") else ()
                        raise error_from_status(code, got.message, found)
                    # UNAVAILABLE inside a session: retried as a unary call below
        method = getattr(self._stub, "".join(p.title() for p in name.split("_")))
        return self._call(method, request)

    @staticmethod
    def _rid() -> str:
        return uuid.uuid4().hex

    def wait_ready(self, timeout_s: float = 30.0) -> None:
        """Wait until the server's health check reports SERVING (state restored)."""
        deadline = time.monotonic() + timeout_s
        request = health_pb2.HealthCheckRequest(service=TWIN_SERVICE)
        while True:
            try:
                status = self._health.Check(
                    request, timeout=max(0.1, min(2.0, deadline - time.monotonic()))
                )
                if status.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.RpcError as exc:
                if exc.code() not in (
                    grpc.StatusCode.UNAVAILABLE,
                    grpc.StatusCode.DEADLINE_EXCEEDED,
                ):
                    raise error_from_rpc(exc) from None
            if time.monotonic() > deadline:
                raise TwinRpcError(
                    "DEADLINE_EXCEEDED", f"{self.address} not SERVING after {timeout_s} s"
                )
            time.sleep(0.05)

    # --- chips ----------------------------------------------------------------------------
    def create_chip(self, config: ChipConfig | dict | str, chip_id: str | None = None) -> str:
        if isinstance(config, ChipConfig):
            config_json = config.model_dump_json()
        elif isinstance(config, dict):
            config_json = json.dumps(config)
        else:
            config_json = str(config)
        request = twin_pb2.CreateChipRequest(
            config_json=config_json, chip_id=chip_id or "", request_id=self._rid()
        )
        return self._call(self._stub.CreateChip, request).chip_id

    def delete_chip(self, chip_id: str) -> None:
        self._tile_cols.pop(chip_id, None)
        request = twin_pb2.DeleteChipRequest(chip_id=chip_id, request_id=self._rid())
        self._call(self._stub.DeleteChip, request)

    def list_chips(self) -> list[str]:
        return list(self._call(self._stub.ListChips, twin_pb2.ListChipsRequest()).chip_ids)

    def chip_info(self, chip_id: str) -> ChipInfo:
        m = self._call(self._stub.GetChipInfo, twin_pb2.ChipInfoRequest(chip_id=chip_id))
        config = ChipConfig.model_validate_json(m.config_json)
        self._tile_cols[chip_id] = config.tile_cols
        return ChipInfo(
            m.chip_id, config, m.now_s, tuple(int(t) for t in m.programmed_tiles),
            int(m.state_bytes), int(m.op_counter),
        )  # fmt: skip

    def energy_ledger(self, chip_id: str) -> dict[str, dict]:
        m = self._call(self._stub.GetEnergyLedger, twin_pb2.EnergyLedgerRequest(chip_id=chip_id))
        return {
            k: {"calls": e.calls, "devices": e.devices, "pulses": e.pulses,
                "energy_pj": e.energy_pj, "latency_s": e.latency_s}
            for k, e in sorted(m.by_kind.items())
        }  # fmt: skip

    def config_schema(self) -> dict:
        m = self._call(self._stub.GetConfigSchema, twin_pb2.ConfigSchemaRequest())
        return json.loads(m.json_schema)

    # --- writes ---------------------------------------------------------------------------
    def program(self, chip_id, tile, g_target_pos_us, g_target_neg_us, at_s, pair=0) -> OpResult:
        request = twin_pb2.ProgramRequest(
            chip_id=chip_id, tile=int(tile), at_s=float(at_s), request_id=self._rid(),
            g_target_pos_us=numpy_to_tensor(np.asarray(g_target_pos_us)),
            g_target_neg_us=numpy_to_tensor(np.asarray(g_target_neg_us)), pair=int(pair),
        )  # fmt: skip
        return result_from_proto(self._op("program", request))

    def program_devices(self, chip_id, tile, array, devices, g_target_us, at_s, pair=0) -> OpResult:
        request = twin_pb2.ProgramDevicesRequest(
            chip_id=chip_id, tile=int(tile), array=array_to_proto(array), at_s=float(at_s),
            devices=numpy_to_tensor(np.asarray(devices)),
            g_target_us=numpy_to_tensor(np.asarray(g_target_us)), request_id=self._rid(),
            pair=int(pair),
        )  # fmt: skip
        return result_from_proto(self._op("program_devices", request))

    def apply_pulses(self, chip_id, tile, array, devices, kind, count, at_s, pair=0) -> OpResult:
        request = twin_pb2.ApplyPulsesRequest(
            chip_id=chip_id, tile=int(tile), array=array_to_proto(array),
            devices=numpy_to_tensor(np.asarray(devices)), kind=pulse_kind_to_proto(kind),
            count=numpy_to_tensor(np.asarray(count)), at_s=float(at_s), request_id=self._rid(),
            pair=int(pair),
        )  # fmt: skip
        return result_from_proto(self._op("apply_pulses", request))

    def program_verify(
        self, chip_id, tile, arrays, devices, g_target_us, job: VerifyJob, at_s, g_read_us=None
    ) -> OpResult:
        request = twin_pb2.ProgramVerifyRequest(
            chip_id=chip_id, tile=int(tile), arrays=numpy_to_tensor(np.asarray(arrays)),
            devices=numpy_to_tensor(np.asarray(devices)),
            g_target_us=numpy_to_tensor(np.asarray(g_target_us)), at_s=float(at_s),
            method=verify_method_to_proto(job.method), tolerance_us=float(job.tolerance_us),
            max_iterations=int(job.max_iterations), max_pulses=int(job.max_pulses),
            max_pulses_per_step=int(job.max_pulses_per_step),
            max_reprograms=int(job.max_reprograms), verify_reads=int(job.verify_reads),
            rewrite_all=bool(job.rewrite_all), request_id=self._rid(),
        )  # fmt: skip
        if g_read_us is not None:
            request.g_read_us.CopyFrom(numpy_to_tensor(np.asarray(g_read_us)))
        return result_from_proto(self._op("program_verify", request))

    # --- reads ----------------------------------------------------------------------------
    def read_devices(self, chip_id, tile, array, devices, at_s, pair=0) -> OpResult:
        request = twin_pb2.ReadDevicesRequest(
            chip_id=chip_id, tile=int(tile), array=array_to_proto(array), at_s=float(at_s),
            request_id=self._rid(), pair=int(pair),
        )  # fmt: skip
        if devices is not None:
            request.devices.CopyFrom(numpy_to_tensor(np.asarray(devices)))
        return result_from_proto(self._op("read_devices", request))

    def probe(
        self, chip_id, tile, rows, array, at_s, col_start=0, col_count=None, pair=0
    ) -> OpResult:
        request = twin_pb2.ProbeRequest(
            chip_id=chip_id, tile=int(tile), rows=numpy_to_tensor(np.asarray(rows)),
            array=array_to_proto(array), at_s=float(at_s), request_id=self._rid(),
            col_start=int(col_start), pair=int(pair),
        )  # fmt: skip
        if col_count is not None:
            request.col_count = int(col_count)
        return result_from_proto(self._op("probe", request))

    def mvm(self, chip_id, tile, x, at_s, row_start=0, col_start=0, col_count=None) -> OpResult:
        x = np.asarray(x)
        batches = self.mvm_split(chip_id, x, col_start, col_count)
        results = []
        for b0, b1 in batches:
            envelope, request = self._envelope("mvm")
            request.MergeFrom(twin_pb2.MvmRequest(
                chip_id=chip_id, tile=int(tile), at_s=float(at_s), row_start=int(row_start),
                col_start=int(col_start), request_id=self._rid(),
            ))  # fmt: skip
            fill_tensor(request.x, x[b0:b1])
            if col_count is not None:
                request.col_count = int(col_count)
            results.append(result_from_proto(self._op("mvm", request, envelope)))
        return joined(results)

    def conv_mvm(
        self, chip_id, tile, x, at_s, geometry, patch_start, k, row_start=0, col_start=0,
        col_count=None, rows_per_mvm=0,
    ) -> OpResult:  # fmt: skip
        """A convolution's MVMs from its activation ``x`` (N, C, H, W), unrolled by the twin
        (``Chip.conv_mvm``). A batch whose activation or outputs would not fit in one message
        is sent as several calls of whole images at the same ``at_s`` (the unrolled rows'
        blocks then restart with each call)."""
        x = np.asarray(x)
        if col_count is None:
            col_count = self._cols(chip_id) - int(col_start)
        results = []
        for b0, b1 in self.conv_split(x, geometry, int(col_count)):
            envelope, request = self._envelope("conv_mvm")
            request.MergeFrom(twin_pb2.ConvMvmRequest(
                chip_id=chip_id, tile=int(tile), at_s=float(at_s),
                kernel=geometry.kernel, stride=geometry.stride, padding=geometry.padding,
                dilation=geometry.dilation, patch_start=int(patch_start), k=int(k),
                row_start=int(row_start), col_start=int(col_start), col_count=int(col_count),
                rows_per_mvm=int(rows_per_mvm), request_id=self._rid(),
            ))  # fmt: skip
            fill_tensor(request.x, x[b0:b1])
            results.append(result_from_proto(self._op("conv_mvm", request, envelope)))
        return joined(results)

    def conv_split(self, x: np.ndarray, geometry: Any, col_count: int) -> list[tuple[int, int]]:
        """How ``conv_mvm`` splits a batch of images: (start, stop) pairs, each of which fits
        in one request and one response message."""
        if x.ndim != 4 or x.shape[0] <= 1:
            return [(0, x.shape[0] if x.ndim >= 1 else 1)]
        ho, wo = geometry.output_size(x.shape[2], x.shape[3])
        per_out = 4 * max(ho * wo, 1) * max(col_count, 1)  # float32 outputs
        return message_batches(x, per_out, self.max_message_bytes)

    def _cols(self, chip_id: str) -> int:
        cols = self._tile_cols.get(chip_id)
        if cols is None:  # one look-up per chip: configs never change
            cols = self.chip_info(chip_id).config.tile_cols
        return cols

    def mvm_split(
        self, chip_id: str, x: np.ndarray, col_start: int = 0, col_count: int | None = None
    ) -> list[tuple[int, int]]:
        """How ``mvm`` splits the batch of ``x``: (start, stop) pairs, each of which fits in
        one request and one response message."""
        if x.ndim != 2 or x.shape[0] <= 1:
            return [(0, x.shape[0] if x.ndim >= 1 else 1)]
        if col_count is None:
            col_count = self._cols(chip_id) - int(col_start)
        return message_batches(x, 4 * max(int(col_count), 1), self.max_message_bytes)

    # --- state ----------------------------------------------------------------------------
    def snapshot(self, chip_id: str, tiles: list[int] | None = None) -> ChipState:
        """The stored (noise-free) device state of ``tiles`` (default: all programmed)."""
        request = twin_pb2.SnapshotRequest(chip_id=chip_id, tiles=tiles or [])
        chunks = self._call(
            lambda r, timeout: list(self._stub.Snapshot(r, timeout=timeout)), request
        )
        state = chip_state_from_chunks(chip_id, chunks)
        if state is None:  # no programmed tile: the chip's clock from its info
            info = self.chip_info(chip_id)
            state = ChipState(chip_id, info.now_s, info.op_counter, info.programmed_tiles,
                              {}, {}, {})  # fmt: skip
        return state
