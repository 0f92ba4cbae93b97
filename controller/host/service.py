# ruff: noqa: N802  (servicer methods carry the RPC names of the proto)
"""The ChipHost gRPC service: the servicer (messages <->
:class:`~controller.host.chip_host.ChipHost`) and its server, on ``pcmtwin.serving`` (health,
reflection, bearer token, TLS, limits) like the twin's.

``ChipHostServer(HostServerOptions(twin_address=...)).start()`` binds (``127.0.0.1:0`` picks a
free port, ``.port``), connects to the CrossbarTwin at ``twin_address`` and serves;
``serve(options)`` blocks until SIGTERM or SIGINT. ``pcm-twin chip serve`` wraps it.

Security posture: the twin service's (``pcmtwin.serving``): loopback by default, a public
bind needs a token or TLS (or ``insecure``), every call but the health check needs the bearer
token when one is set (the same ``$PCM_TWIN_TOKEN`` by default), message sizes are limited.
Errors are answered by ``pcmtwin.status``, as the twin's are.
Policies given by dotted path are imported code: refused (PERMISSION_DENIED) unless the server
runs with ``allow_user_policies``.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import grpc
import numpy as np
import pydantic

from controller.firmware import ControllerConfig, Event
from controller.host.chip_host import ChipHost
from controller.host.dashboard import Dashboard, DashboardOptions, check_dashboard_address
from controller.rpc.client import TwinClient
from device_twin.config import ChipConfig
from device_twin.errors import InvalidArgument, ResourceExhausted
from pcmtwin import codec, serving, status
from pcmtwin.codec import DEFAULT_MAX_MESSAGE_BYTES, MESSAGE_OVERHEAD_BYTES
from pcmtwin.v1 import host_pb2, host_pb2_grpc

log = logging.getLogger(__name__)
T = TypeVar("T")

SERVICE_NAME = codec.HOST_SERVICE
DEFAULT_HOST_ADDRESS = "127.0.0.1:50052"

_MODES = {
    host_pb2.CORRECTION_MODE_UNSPECIFIED: "policy",
    host_pb2.CORRECTION_MODE_POLICY: "policy",
    host_pb2.CORRECTION_MODE_ALL: "all",
}


# --- translation ---------------------------------------------------------------------------
def status_to_proto(s: dict[str, Any]) -> host_pb2.ChipStatus:
    msg = host_pb2.ChipStatus(
        sim_time_s=float(s.get("sim_time_s", 0.0)),
        loaded=bool(s.get("loaded", False)),
        network=s.get("network", ""),
        chip_id=s.get("chip_id", ""),
        policy=str(s.get("policy", "")),
        policy_json=s.get("policy_json", ""),
        corrections=int(s.get("corrections", 0)),
        devices_corrected=int(s.get("devices_corrected", 0)),
        failed_devices=int(s.get("failed_devices", 0)),
        correction_pulses=int(s.get("correction_pulses", 0)),
        energy_by_kind_pj={k: float(v) for k, v in s.get("energy_by_kind_pj", {}).items()},
        twin_energy_pj=float(s.get("twin_energy_pj", 0.0)),
        controller_energy_pj=float(s.get("controller_energy_pj", 0.0)),
        availability=float(s.get("availability", 1.0)),
        monitor_wakeups=int(s.get("monitor_wakeups", 0)),
        inferences=int(s.get("inferences", 0)),
        inference_latency_s_mean=float(s.get("inference_latency_s_mean", 0.0)),
        inference_latency_s_max=float(s.get("inference_latency_s_max", 0.0)),
        error=s.get("error") or "",
        realtime_factor=float(s.get("realtime_factor", 0.0)),
        last_event_seq=int(s.get("last_event_seq", 0)),
        upkeep_energy_pj=float(s.get("upkeep_energy_pj", 0.0)),
    )
    for tile, d in sorted(s.get("drift", {}).items()):
        msg.drift.add(tile=int(tile), at_s=float(d["at_s"]), drift_metric=float(d["drift_metric"]),
                      max_distance=float(d["max_distance"]), rows=int(d["rows"]))  # fmt: skip
    return msg


def event_to_proto(ev: Event) -> host_pb2.LedgerEvent:
    return host_pb2.LedgerEvent(
        seq=ev.seq, end_s=ev.end_s, start_s=ev.start_s, kind=ev.kind, tile=ev.tile,
        devices=ev.devices, pulses=ev.pulses, energy_pj=ev.energy_pj,
        controller_energy_pj=ev.controller_energy_pj, policy=ev.policy,
        detail_json=json.dumps(ev.detail, default=str),
    )  # fmt: skip


def _json_model(cls: type[pydantic.BaseModel], text: str, what: str) -> Any:
    if not text:
        return None
    try:
        return cls.model_validate_json(text)
    except pydantic.ValidationError as exc:
        raise status.invalid_argument(exc, what, what) from None


def _quantiser(text: str) -> Any:
    from controller.workloads.quantisers import QuantiserConfig

    text = text.strip()
    if not text:
        return "multiplicative"
    if not text.startswith("{"):
        if text not in ("multiplicative", "uniform", "none"):
            known = "multiplicative, uniform, none or a JSON config"
            raise InvalidArgument(
                f"unknown quantiser {text!r}: expected {known}", field="quantiser"
            )
        return text
    try:
        return pydantic.TypeAdapter(QuantiserConfig).validate_json(text)
    except pydantic.ValidationError as exc:
        raise status.invalid_argument(exc, "quantiser", "quantiser") from None


def _policy(spec: host_pb2.PolicySpec) -> tuple[str, dict[str, Any]]:
    from controller.host.chip_host import _parse_params

    return spec.name, _parse_params(spec.params_json)


# --- the servicer ---------------------------------------------------------------------------
class ChipHostServicer(host_pb2_grpc.ChipHostServicer):
    """Translates ChipHost calls into :class:`ChipHost` calls (see the module docstring)."""

    def __init__(self, host: ChipHost, max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES) -> None:
        self.host = host
        self.max_message_bytes = int(max_message_bytes)

    def _call(self, context: grpc.ServicerContext, fn: Callable[[float | None], T]) -> T:
        remaining = context.time_remaining()
        if remaining is not None and remaining <= 0:
            context.abort(grpc.StatusCode.DEADLINE_EXCEEDED, "deadline expired before the call ran")
        # leave a little of the deadline to send the answer
        deadline = None if remaining is None else time.monotonic() + 0.9 * remaining
        try:
            return fn(deadline)
        except Exception as exc:
            status.abort(context, exc, "a ChipHost call")

    def _check_answer_fits(self, shape: tuple[int, ...]) -> None:
        """Refuse, before it runs, an Infer whose answer (float32, ``shape``) would be over
        the message limit."""
        limit = self.max_message_bytes - MESSAGE_OVERHEAD_BYTES
        per_sample = 4 * math.prod(shape[1:])
        need = shape[0] * per_sample
        if need <= limit:
            return
        most = max(limit, 0) // per_sample
        advice = "start the server with a larger --max-message-bytes"
        if most:
            advice = f"send at most {most:,} samples per Infer, or {advice}"
        raise ResourceExhausted(
            f"the answer to {shape[0]:,} samples would take {need:,} bytes ({per_sample:,} "
            f"bytes of output each), over the {max(limit, 0):,} bytes an answer may carry on "
            f"this server (--max-message-bytes {self.max_message_bytes:,} less "
            f"{MESSAGE_OVERHEAD_BYTES:,} for the rest of the message): {advice}"
        )

    def LoadNetwork(self, request, context):
        from controller.workloads.network import NetworkDescription

        def run(_deadline):
            codec.required(request, "network", "a NetworkDescription")
            try:
                desc = NetworkDescription.from_proto(request.network)
            except pydantic.ValidationError as exc:
                raise status.invalid_argument(exc, "network", "network") from None
            except ValueError as exc:
                raise InvalidArgument(f"network is not valid: {exc}", field="network") from None
            chip = _json_model(ChipConfig, request.chip_config_json, "chip_config_json")
            ctrl = _json_model(ControllerConfig, request.controller_config_json,
                               "controller_config_json")  # fmt: skip
            pol = _policy(request.policy) if request.policy.name else None
            out = self.host.load_network(desc, _quantiser(request.quantiser), chip, pol, ctrl,
                                         make_room=request.make_room)  # fmt: skip
            return host_pb2.LoadNetworkResponse(
                chip_id=out["chip_id"], tiles=out["tiles"], weights_on_chip=out["weights_on_chip"],
                status=status_to_proto(out["status"]),
            )  # fmt: skip

        return self._call(context, run)

    def Infer(self, request, context):
        def run(deadline):
            raw = codec.required_tensor(
                request, "x", codec.FLOAT, "a float Tensor (batch, *input_shape)"
            )
            with np.errstate(over="ignore"):
                x = raw.astype(np.float32)
            if not np.all(np.isfinite(x)) and np.all(np.isfinite(raw)):
                raise InvalidArgument(
                    "x has values beyond the float32 range (3.4e38)", field="x.data"
                )
            res = self.host.infer(x, request.label, deadline, self._check_answer_fits)
            y = np.asarray(res.y, np.float32)
            if y.nbytes > self.max_message_bytes - MESSAGE_OVERHEAD_BYTES:  # safety net
                raise ResourceExhausted(f"the output would take {y.nbytes:,} bytes, over this "
                                        "server's limit: send smaller batches")  # fmt: skip
            return host_pb2.InferResponse(
                y=codec.numpy_to_tensor(y), submitted_s=res.submitted_s, start_s=res.start_s,
                end_s=res.end_s, energy_pj=res.energy_pj,
            )  # fmt: skip

        return self._call(context, run)

    def GetStatus(self, request, context):
        return self._call(context, lambda _d: status_to_proto(self.host.status()))

    def AdvanceTime(self, request, context):
        def run(deadline):
            which = request.WhichOneof("target")
            if which is None:
                raise InvalidArgument(
                    "give a target: to_s (absolute) or by_s (from now)", field="target"
                )
            kw = {which: getattr(request, which)}
            return status_to_proto(self.host.advance(**kw, deadline=deadline))

        return self._call(context, run)

    def SetPolicy(self, request, context):
        def run(_deadline):
            if not request.policy.name:
                raise InvalidArgument(
                    "policy.name is required: a built-in name or a dotted path",
                    field="policy.name",
                )
            name, params = _policy(request.policy)
            return status_to_proto(self.host.set_policy(name, params))

        return self._call(context, run)

    def TriggerCorrection(self, request, context):
        def run(deadline):
            mode = _MODES.get(request.mode)
            if mode is None:
                raise InvalidArgument(f"unknown correction mode {request.mode}", field="mode")
            out = self.host.trigger_correction(list(request.tiles), mode, deadline)
            return host_pb2.TriggerCorrectionResponse(
                jobs=out["jobs"], devices=out["devices"], failed_devices=out["failed_devices"],
                pulses=out["pulses"], energy_pj=out["energy_pj"], start_s=out["start_s"],
                end_s=out["end_s"], status=status_to_proto(out["status"]),
            )  # fmt: skip

        return self._call(context, run)

    def StreamEvents(self, request, context) -> Iterator[host_pb2.LedgerEvent]:
        if request.after_seq < 0:
            status.abort(context, InvalidArgument("after_seq must be >= 0", field="after_seq"))
        sub = self._call(context, lambda _d: self.host.subscribe(request.after_seq))
        for ev in sub.events(alive=context.is_active):
            yield event_to_proto(ev)
        if sub.overflow:
            context.abort(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                "the stream fell too far behind the chip: resume with after_seq",
            )
        if sub.replaced:
            context.abort(
                grpc.StatusCode.ABORTED,
                "the network was replaced by LoadNetwork: its events ended here; call "
                "StreamEvents again (after_seq=0) for the new network's",
            )


# --- the server ------------------------------------------------------------------------------
@dataclass(kw_only=True)
class HostServerOptions(serving.ServingOptions):
    """A ChipHost server's options: the common ones, and the twin it drives and how."""

    twin_address: str
    address: str = DEFAULT_HOST_ADDRESS
    realtime: float | None = None  # simulated seconds per wall second; None: as fast as possible
    twin_token: str | None = None
    twin_root_cert: Path | None = None
    allow_user_policies: bool = False
    twin_timeout_s: float = 120.0
    #: host:port of the live view (controller.host.dashboard); None: no dashboard. It keeps
    #: this server's token, TLS and bind rules.
    dashboard: str | None = None


class ChipHostServer(serving.GrpcServer):
    """One ChipHost server over one twin (see the module docstring)."""

    service_name = SERVICE_NAME
    banner = "ChipHost"

    def __init__(self, options: HostServerOptions) -> None:
        super().__init__(options, thread_name_prefix="host-rpc")
        self.options: HostServerOptions = options
        live = None
        if options.dashboard:  # refused (ConfigError) before anything is opened
            check_dashboard_address(options.dashboard)
            live = DashboardOptions(address=options.dashboard, token=options.token,
                                    tls_cert=options.tls_cert, tls_key=options.tls_key,
                                    insecure=options.insecure)  # fmt: skip
            serving.check_bind_policy(live)
        self.twin = TwinClient(
            options.twin_address, token=options.twin_token,
            root_cert=str(options.twin_root_cert) if options.twin_root_cert else None,
            timeout_s=options.twin_timeout_s, max_message_bytes=options.max_message_bytes,
        )  # fmt: skip
        self.host = ChipHost(self.twin, realtime=options.realtime,
                             allow_user_policies=options.allow_user_policies)  # fmt: skip
        self.servicer = ChipHostServicer(self.host, options.max_message_bytes)
        host_pb2_grpc.add_ChipHostServicer_to_server(self.servicer, self.server)
        self.dashboard = Dashboard(self.host, live) if live is not None else None

    def bind(self) -> int:
        port = super().bind()
        if self.dashboard is not None:
            try:
                self.dashboard.start()
            except BaseException:
                self.stop(grace_s=0)
                raise
        return port

    def describe(self) -> str:
        o = self.options
        pace = f"realtime x{o.realtime}" if o.realtime else "as fast as possible"
        live = f"; live view at {self.dashboard.url}" if self.dashboard is not None else ""
        return f"{super().describe()}, twin at {o.twin_address}, {pace}{live}"

    def open(self) -> None:
        super().open()
        self.check_twin()

    def check_twin(self, timeout_s: float = 3.0) -> bool:
        """Whether the twin answers now; if not, say so in the log (the host serves anyway:
        the twin may come up later, and every call that needs it says what went wrong)."""
        try:
            self.twin.wait_ready(timeout_s)
        except Exception as exc:  # noqa: BLE001 - reported, not fatal
            log.warning(
                "the twin at %s does not answer (%s): ChipHost serves, but loading a network "
                "will fail until it does", self.options.twin_address, exc,
            )  # fmt: skip
            return False
        return True

    def before_stop(self) -> None:
        if self.dashboard is not None:
            self.dashboard.stop()
        self.host.close()

    def after_stop(self) -> None:
        self.twin.close()


def serve(options: HostServerOptions, port_file: Path | None = None) -> None:
    """Run a ChipHost server until SIGTERM or SIGINT, then shut it down gracefully."""
    serving.serve(ChipHostServer(options), port_file)
