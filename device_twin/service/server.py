"""Build and run the CrossbarTwin gRPC server: health, reflection, auth, TLS, limits, state.

``TwinServer(ServerOptions(...)).start()`` binds (``127.0.0.1:0`` picks a free port, reported
by ``.port``), reports NOT_SERVING on ``grpc.health.v1`` while it restores its state
directory, then SERVING. ``serve(options)`` does the same and blocks until SIGTERM or
SIGINT, then shuts down gracefully: in-flight calls get ``grace_s`` to finish and a final
snapshot is written. ``pcm-twin twin serve`` (controller/cli.py) is a thin wrapper.

Security posture (see SECURITY.md):

- binds 127.0.0.1 by default; any other address needs a bearer token or TLS, or an explicit
  ``insecure=True``;
- with a token, every call but the health check must carry ``authorization: Bearer
  <token>`` (``UNAUTHENTICATED`` otherwise, compared in constant time; the token is never
  logged). Health stays open so that orchestrators can probe liveness without a secret; it
  reveals nothing but SERVING / NOT_SERVING. Reflection needs the token like everything else;
- incoming and outgoing messages are limited to ``max_message_bytes`` (RESOURCE_EXHAUSTED);
- chips per server and the device-state memory budget are limited (RESOURCE_EXHAUSTED).
"""

from __future__ import annotations

import hmac
import ipaddress
import logging
import os
import signal
import threading
from collections.abc import Callable
from concurrent import futures
from dataclasses import dataclass
from pathlib import Path

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from device_twin.registry import DEFAULT_MAX_CHIPS, DEFAULT_STATE_BUDGET_BYTES
from device_twin.service.persistence import (
    DEFAULT_SNAPSHOT_INTERVAL_S,
    DEFAULT_SNAPSHOT_WAL_BYTES,
    DurableRegistry,
    RestoreReport,
    StateStore,
)
from device_twin.service.servicer import (
    DEFAULT_MAX_MESSAGE_BYTES,
    SERVICE_NAME,
    CrossbarTwinServicer,
)
from pcmtwin.v1 import twin_pb2, twin_pb2_grpc

log = logging.getLogger(__name__)

TOKEN_ENV = "PCM_TWIN_TOKEN"
DEFAULT_ADDRESS = "127.0.0.1:50051"
HEALTH_SERVICE = health_pb2.DESCRIPTOR.services_by_name["Health"].full_name
_OPEN_METHODS_PREFIX = f"/{HEALTH_SERVICE}/"


class ServerConfigError(ValueError):
    """The server options are refused (e.g. a public bind without token or TLS)."""


@dataclass
class ServerOptions:
    address: str = DEFAULT_ADDRESS
    state_dir: Path | None = None
    token: str | None = None
    tls_cert: Path | None = None
    tls_key: Path | None = None
    insecure: bool = False
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES
    max_chips: int = DEFAULT_MAX_CHIPS
    state_budget_bytes: int = DEFAULT_STATE_BUDGET_BYTES
    max_workers: int = 8
    max_concurrent_rpcs: int = 256
    snapshot_wal_bytes: int = DEFAULT_SNAPSHOT_WAL_BYTES
    snapshot_interval_s: float = DEFAULT_SNAPSHOT_INTERVAL_S
    grace_s: float = 5.0


def load_token(token_file: Path | None, env: dict[str, str] | None = None) -> str | None:
    """The bearer token: from ``token_file`` if given, else ``$PCM_TWIN_TOKEN``, else None."""
    env = os.environ if env is None else env
    if token_file is not None:
        token = Path(token_file).read_text().strip()
        if not token:
            raise ServerConfigError(f"token file {token_file} is empty")
        return token
    return env.get(TOKEN_ENV) or None


def split_host(address: str) -> str:
    """The host part of ``host:port``, ``[v6]:port`` or ``unix:path`` (returned whole)."""
    if address.startswith(("unix:", "unix-abstract:")):
        return address
    host, sep, _port = address.rpartition(":")
    if not sep:
        raise ServerConfigError(f"address {address!r} is not host:port")
    return host[1:-1] if host.startswith("[") and host.endswith("]") else host


def is_loopback(address: str) -> bool:
    """True for addresses only this machine can reach (loopback IPs, localhost, unix sockets)."""
    host = split_host(address)
    if host.startswith(("unix:", "unix-abstract:")) or host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a name: it may resolve to anything


def check_bind_policy(options: ServerOptions) -> None:
    if (options.tls_cert is None) != (options.tls_key is None):
        raise ServerConfigError("TLS needs both --tls-cert and --tls-key")
    if is_loopback(options.address) or options.insecure:
        return
    if options.token is None and options.tls_cert is None:
        raise ServerConfigError(
            f"refusing to bind {options.address}, which is not a loopback address, without a "
            f"token (--token-file or ${TOKEN_ENV}) or TLS (--tls-cert/--tls-key); "
            "pass --insecure to do it anyway"
        )


# --- auth ----------------------------------------------------------------------------------
def _abort_handler(handler: grpc.RpcMethodHandler, code: grpc.StatusCode, message: str):
    def abort(request_or_iterator, context):
        context.abort(code, message)

    if handler.request_streaming and handler.response_streaming:
        return grpc.stream_stream_rpc_method_handler(abort)
    if handler.request_streaming:
        return grpc.stream_unary_rpc_method_handler(abort)
    if handler.response_streaming:
        return grpc.unary_stream_rpc_method_handler(abort)
    return grpc.unary_unary_rpc_method_handler(abort)


class BearerTokenInterceptor(grpc.ServerInterceptor):
    """Refuses calls without ``authorization: Bearer <token>`` (health checks excepted)."""

    def __init__(self, token: str) -> None:
        self._expected = f"Bearer {token}".encode()

    def intercept_service(self, continuation: Callable, handler_call_details):
        if handler_call_details.method.startswith(_OPEN_METHODS_PREFIX):
            return continuation(handler_call_details)
        given = None
        for key, value in handler_call_details.invocation_metadata or ():
            if key == "authorization":
                given = value.encode() if isinstance(value, str) else bytes(value)
        if given is not None and hmac.compare_digest(given, self._expected):
            return continuation(handler_call_details)
        handler = continuation(handler_call_details)
        if handler is None:
            return None
        message = (
            "missing bearer token: send metadata 'authorization: Bearer <token>'"
            if given is None
            else "wrong bearer token"
        )
        return _abort_handler(handler, grpc.StatusCode.UNAUTHENTICATED, message)


# --- server --------------------------------------------------------------------------------
class _HandlerCapture:
    """Stands in for a server to collect the generated code's method handlers."""

    handlers: dict[str, grpc.RpcMethodHandler]

    def add_generic_rpc_handlers(self, _handlers) -> None:
        pass

    def add_registered_method_handlers(self, _service: str, handlers) -> None:
        self.handlers = dict(handlers)


def add_servicer(servicer: CrossbarTwinServicer, server: grpc.Server) -> None:
    """``add_CrossbarTwinServicer_to_server``, except that ``Session`` receives raw bytes and
    decodes them itself: an undecodable message is then answered in the stream, and gRPC's own
    failure path for undecodable stream messages (which leaves the call unfinished, so that
    ``server.stop`` never returns) is never taken."""
    capture = _HandlerCapture()
    twin_pb2_grpc.add_CrossbarTwinServicer_to_server(servicer, capture)
    handlers = capture.handlers
    handlers["Session"] = grpc.stream_stream_rpc_method_handler(
        servicer.Session, request_deserializer=None,
        response_serializer=twin_pb2.SessionResponse.SerializeToString,
    )  # fmt: skip
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE_NAME, handlers),))
    server.add_registered_method_handlers(SERVICE_NAME, handlers)


class TwinServer:
    """One CrossbarTwin server (see the module docstring)."""

    def __init__(self, options: ServerOptions) -> None:
        check_bind_policy(options)
        self.options = options
        store = StateStore(options.state_dir) if options.state_dir is not None else None
        self.registry = DurableRegistry(
            state_budget_bytes=options.state_budget_bytes, max_chips=options.max_chips,
            store=store, snapshot_wal_bytes=options.snapshot_wal_bytes,
            snapshot_interval_s=options.snapshot_interval_s,
        )  # fmt: skip
        self.servicer = CrossbarTwinServicer(
            # half the threads at most for sessions: unary calls are always served
            self.registry, options.max_message_bytes, max(1, options.max_workers // 2),
        )  # fmt: skip
        self.health = health.HealthServicer(experimental_non_blocking=True)
        interceptors = [BearerTokenInterceptor(options.token)] if options.token else []
        n = options.max_message_bytes
        self._server = grpc.server(
            futures.ThreadPoolExecutor(options.max_workers, thread_name_prefix="twin-rpc"),
            interceptors=interceptors,
            options=[
                ("grpc.max_receive_message_length", n),
                ("grpc.max_send_message_length", n),
                # one server per port: never share a port with another process by accident
                ("grpc.so_reuseport", 0),
            ],
            maximum_concurrent_rpcs=options.max_concurrent_rpcs,
        )
        add_servicer(self.servicer, self._server)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self._server)
        reflection.enable_server_reflection(
            (SERVICE_NAME, HEALTH_SERVICE, reflection.SERVICE_NAME), self._server
        )
        self.port: int | None = None
        self.restore_report: RestoreReport | None = None
        self._stopped = threading.Event()

    @property
    def address(self) -> str:
        host = self.options.address.rpartition(":")[0]
        return f"{host}:{self.port}"

    def _set_health(self, status: int) -> None:
        for name in ("", SERVICE_NAME):
            self.health.set(name, status)

    def bind(self) -> int:
        """Bind the port and start answering (health NOT_SERVING until ``restore``)."""
        o = self.options
        self._set_health(health_pb2.HealthCheckResponse.NOT_SERVING)
        try:
            if o.tls_cert is not None:
                creds = grpc.ssl_server_credentials(
                    [(Path(o.tls_key).read_bytes(), Path(o.tls_cert).read_bytes())]
                )
                port = self._server.add_secure_port(o.address, creds)
            else:
                port = self._server.add_insecure_port(o.address)
        except RuntimeError as exc:
            raise ServerConfigError(f"cannot bind {o.address}: {exc}") from None
        if port == 0 and not o.address.startswith("unix"):
            raise ServerConfigError(f"cannot bind {o.address}")
        self.port = port
        self._server.start()
        return port

    def restore(self) -> RestoreReport:
        """Restore chips from the state dir, then report SERVING and accept calls."""
        report = self.registry.restore()
        self.restore_report = report
        self.registry.start_snapshots()
        self.servicer.ready.set()
        self._set_health(health_pb2.HealthCheckResponse.SERVING)
        if self.options.state_dir is not None:
            log.info(
                "restored %d chips from %s (snapshot: %s, %d log records, %.2f s)",
                report.chips, self.options.state_dir, report.snapshot,
                report.records_replayed, report.seconds,
            )  # fmt: skip
        return report

    def start(self) -> int:
        """Bind, restore, serve; returns the bound port."""
        port = self.bind()
        try:
            self.restore()
        except BaseException:
            self.stop(grace_s=0)
            raise
        return port

    def stop(self, grace_s: float | None = None) -> None:
        """Stop accepting calls, let in-flight ones finish, write a final snapshot."""
        if self._stopped.is_set():
            return
        self._stopped.set()
        self.health.enter_graceful_shutdown()
        self.servicer.ready.clear()
        grace = self.options.grace_s if grace_s is None else grace_s
        self._server.stop(grace).wait()
        self.registry.close()

    def wait(self, timeout_s: float | None = None) -> bool:
        return self._stopped.wait(timeout_s)

    def __enter__(self) -> TwinServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def serve(options: ServerOptions, port_file: Path | None = None) -> None:
    """Run a server until SIGTERM or SIGINT, then shut it down gracefully."""
    server = TwinServer(options)
    stop = threading.Event()

    def on_signal(signum: int, _frame: object) -> None:
        log.info("signal %d: shutting down", signum)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    port = server.bind()
    log.info(
        "CrossbarTwin listening on %s (%s%s)", server.address,
        "TLS" if options.tls_cert else "plaintext", ", token required" if options.token else "",
    )  # fmt: skip
    if port_file is not None:
        tmp = Path(f"{port_file}.tmp")
        tmp.write_text(f"{port}\n")
        os.replace(tmp, port_file)
    try:
        server.restore()
        log.info("SERVING")
        while not stop.wait(0.5):
            pass
    finally:
        server.stop()
        log.info("stopped")
