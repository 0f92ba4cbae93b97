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

Health follows the twin: NOT_SERVING while the twin cannot be reached (at start, too), SERVING
once it answers (the chip host's watch on it, ``controller.host.twin_link``).
"""

from __future__ import annotations

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

from controller.firmware import ControllerConfig
from controller.host import catalogue, loading
from controller.host.chip_host import ChipHost
from controller.host.dashboard import Dashboard, DashboardOptions, check_dashboard_address
from controller.host.messages import (
    event_to_proto,
    layout_to_proto,
    policies_to_proto,
    quantisers_to_proto,
    schemas_to_proto,
    status_to_proto,
)
from controller.rpc.client import TWIN_RETRY, TwinClient
from controller.workloads.network import network_from_proto
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


# --- translation (the answers: controller.host.messages) ----------------------------------
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
        return catalogue.DEFAULT_QUANTISER
    if not text.startswith("{"):
        if text not in catalogue.QUANTISER_MODELS:
            known = f"{', '.join(catalogue.QUANTISER_MODELS)} or a JSON config"
            raise InvalidArgument(
                f"unknown quantiser {text!r}: expected {known}", field="quantiser"
            )
        return text
    try:
        return pydantic.TypeAdapter(QuantiserConfig).validate_json(text)
    except pydantic.ValidationError as exc:
        raise status.invalid_argument(exc, "quantiser", "quantiser") from None


def _policy(spec: host_pb2.PolicySpec) -> tuple[str, dict[str, Any]]:
    return spec.name, loading.parse_params(spec.params_json)


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
        def run(_deadline):
            codec.required(request, "network", "a NetworkDescription")
            desc = network_from_proto(request.network, field="network")
            chip = _json_model(ChipConfig, request.chip_config_json, "chip_config_json")
            ctrl = _json_model(ControllerConfig, request.controller_config_json,
                               "controller_config_json")  # fmt: skip
            pol = _policy(request.policy) if request.policy.name else None
            out = self.host.load_network(desc, _quantiser(request.quantiser), chip, pol, ctrl,
                                         make_room=request.make_room)  # fmt: skip
            return host_pb2.LoadNetworkResponse(
                chip_id=out["chip_id"], tiles=out["tiles"], weights_on_chip=out["weights_on_chip"],
                status=status_to_proto(out["status"]), devices_programmed=out["devices_programmed"],
                devices_in_use=out["devices_in_use"], program_energy_pj=out["program_energy_pj"],
            )  # fmt: skip

        return self._call(context, run)

    def UnloadNetwork(self, request, context):
        return self._call(context, lambda _d: status_to_proto(self.host.unload_network()))

    def GetNetwork(self, request, context):
        def run(_deadline):
            lay = self.host.network_layout(request.include_weights)
            need = loading.weights_bytes(lay)
            limit = self.max_message_bytes - MESSAGE_OVERHEAD_BYTES
            if need > limit:
                raise ResourceExhausted(
                    f"the weights take {need:,} bytes, over the {limit:,} bytes an answer may "
                    "carry on this server: ask without include_weights, or start the server "
                    "with a larger --max-message-bytes", field="include_weights",
                )  # fmt: skip
            return layout_to_proto(lay)

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
            gone = lambda: not context.is_active()  # noqa: E731 - the client cancelled
            return status_to_proto(self.host.advance(**kw, deadline=deadline, cancelled=gone))

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
                probe_energy_pj=out["probe_energy_pj"], probes=out["probes"],
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
        if sub.ended:
            context.abort(grpc.StatusCode.ABORTED, sub.ended)

    # --- discovery ------------------------------------------------------------------------------
    def ListPolicies(self, request, context):
        return self._call(context, lambda _d: policies_to_proto(
            catalogue.policies(), self.host.allow_user_policies))  # fmt: skip

    def ListQuantisers(self, request, context):
        return self._call(context, lambda _d: quantisers_to_proto(
            catalogue.quantisers(), catalogue.DEFAULT_QUANTISER))  # fmt: skip

    def GetConfigSchema(self, request, context):
        return self._call(context, lambda _d: schemas_to_proto(catalogue.config_schemas()))


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
        # the scenario runner's patience for its own calls (a load); a running network's
        # model waits for as long as the twin is away (ChipHost: TwinClient.patient)
        retry = {**TWIN_RETRY, "timeout_s": options.twin_timeout_s}
        self.twin = TwinClient(
            options.twin_address, token=options.twin_token,
            root_cert=str(options.twin_root_cert) if options.twin_root_cert else None,
            max_message_bytes=options.max_message_bytes, on_reachable=self._twin_reachable,
            **retry,
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

    def _twin_reachable(self, up: bool) -> None:
        """Health follows the twin: NOT_SERVING while it cannot be reached (called on the
        thread whose call noticed: quick, no lock)."""
        if not self._stopped.is_set() and getattr(self, "_opened", False):
            self.set_serving(up)

    def open(self) -> None:
        self._opened = True
        up = self.check_twin()
        self.set_serving(up)

    def check_twin(self, timeout_s: float = 3.0) -> bool:
        """Whether the twin answers within ``timeout_s``; if not, say so in the log (the host
        serves anyway, NOT_SERVING: the twin may come up later, and the host's watch on it
        turns health to SERVING when it does; meanwhile calls say the twin is unreachable)."""
        deadline = time.monotonic() + timeout_s
        while not self.twin.ping(timeout_s=max(0.1, min(1.0, deadline - time.monotonic()))):
            if time.monotonic() >= deadline:
                log.warning(
                    "the twin at %s does not answer: ChipHost serves, but loading a network "
                    "will fail until it does", self.options.twin_address,
                )  # fmt: skip
                return False
            time.sleep(0.05)
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
