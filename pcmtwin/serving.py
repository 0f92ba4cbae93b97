"""Serving a pcm-twin gRPC service: the one server skeleton both CrossbarTwin and ChipHost use.

``GrpcServer`` owns the ``grpc.Server`` of one service and everything that is not the
service itself: the bind policy, TLS, the bearer-token interceptor (``credentials.py``),
``grpc.health.v1`` health, server reflection (``grpc.reflection.v1`` and ``v1alpha``), message
size limits, and a graceful stop. A service subclasses it, adds its servicer to ``.server``
and overrides the hooks: ``open`` (get ready, e.g. restore state; health says NOT_SERVING
until it returns), ``before_stop`` and ``after_stop``. ``serve(server, port_file)`` runs a
server until SIGTERM or SIGINT, then stops it gracefully (in-flight calls get ``grace_s``).

Security posture (see SECURITY.md): binds 127.0.0.1 by default; any other address needs a
bearer token or TLS, or an explicit ``insecure=True``; with a token, every call but the
health check must carry it (reflection too); messages each way are limited to
``max_message_bytes`` (RESOURCE_EXHAUSTED).
"""

from __future__ import annotations

import ipaddress
import logging
import os
import signal
import threading
from concurrent import futures
from dataclasses import dataclass
from pathlib import Path

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection, reflection_pb2

from pcmtwin.codec import DEFAULT_MAX_MESSAGE_BYTES
from pcmtwin.credentials import (
    HEALTH_SERVICE,
    TOKEN_ENV,
    BearerTokenInterceptor,
    ConfigError,
    server_credentials,
)

log = logging.getLogger(__name__)

REFLECTION_V1_SERVICE = "grpc.reflection.v1.ServerReflection"


@dataclass(kw_only=True)
class ServingOptions:
    """What every pcm-twin server is configured with; services add their own fields."""

    address: str = "127.0.0.1:0"
    token: str | None = None
    tls_cert: Path | None = None
    tls_key: Path | None = None
    insecure: bool = False
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES
    max_workers: int = 8
    grace_s: float = 5.0


# --- bind policy ---------------------------------------------------------------------------
def split_host(address: str) -> str:
    """The host part of ``host:port``, ``[v6]:port`` or ``unix:path`` (returned whole)."""
    if address.startswith(("unix:", "unix-abstract:")):
        return address
    host, sep, _port = address.rpartition(":")
    if not sep:
        raise ConfigError(f"address {address!r} is not host:port")
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


def check_bind_policy(options: ServingOptions) -> None:
    """Refuse (``ConfigError``) half a TLS pair, or a public bind without token or TLS."""
    if (options.tls_cert is None) != (options.tls_key is None):
        raise ConfigError("TLS needs both --tls-cert and --tls-key")
    if is_loopback(options.address) or options.insecure:
        return
    if options.token is None and options.tls_cert is None:
        raise ConfigError(
            f"refusing to bind {options.address}, which is not a loopback address, without a "
            f"token (--token-file or ${TOKEN_ENV}) or TLS (--tls-cert/--tls-key); "
            "pass --insecure to do it anyway"
        )


# --- reflection ----------------------------------------------------------------------------
def _add_reflection_v1_descriptor() -> None:
    """Put ``grpc.reflection.v1`` in the default descriptor pool, so that reflection can
    describe itself under that name too. grpcio-reflection ships only v1alpha; v1 has the same
    messages with the same field numbers under another package, so its descriptor is v1alpha's
    renamed."""
    pool = descriptor_pool.Default()
    try:
        pool.FindServiceByName(REFLECTION_V1_SERVICE)
        return
    except KeyError:
        pass
    fdp = descriptor_pb2.FileDescriptorProto.FromString(reflection_pb2.DESCRIPTOR.serialized_pb)
    old, new = f".{fdp.package}.", ".grpc.reflection.v1."
    fdp.name, fdp.package = "grpc/reflection/v1/reflection.proto", "grpc.reflection.v1"
    fdp.options.Clear()
    for m in fdp.message_type:
        for f in m.field:
            if f.type_name.startswith(old):
                f.type_name = new + f.type_name[len(old) :]
    for s in fdp.service:
        for method in s.method:
            method.input_type = new + method.input_type[len(old) :]
            method.output_type = new + method.output_type[len(old) :]
    pool.Add(fdp)


def enable_reflection(server: grpc.Server, service_names: list[str]) -> None:
    """Serve reflection for ``service_names`` as ``grpc.reflection.v1alpha`` and ``v1`` (one
    servicer: the two versions' messages are the same on the wire)."""
    _add_reflection_v1_descriptor()
    names = (*service_names, HEALTH_SERVICE, reflection.SERVICE_NAME, REFLECTION_V1_SERVICE)
    servicer = reflection.ReflectionServicer(names)
    method = grpc.stream_stream_rpc_method_handler(
        servicer.ServerReflectionInfo,
        request_deserializer=reflection_pb2.ServerReflectionRequest.FromString,
        response_serializer=reflection_pb2.ServerReflectionResponse.SerializeToString,
    )
    for name in (reflection.SERVICE_NAME, REFLECTION_V1_SERVICE):
        handlers = {"ServerReflectionInfo": method}
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(name, handlers),))


# --- the server ----------------------------------------------------------------------------
class GrpcServer:
    """One pcm-twin gRPC server (see the module docstring)."""

    service_name: str = ""  # the service's full name, e.g. "pcmtwin.v1.CrossbarTwin"
    banner: str = "a pcm-twin service"

    def __init__(
        self,
        options: ServingOptions,
        *,
        thread_name_prefix: str = "rpc",
        maximum_concurrent_rpcs: int | None = None,
    ) -> None:
        check_bind_policy(options)
        self.options = options
        self.health = health.HealthServicer(experimental_non_blocking=True)
        interceptors = [BearerTokenInterceptor(options.token)] if options.token else []
        n = options.max_message_bytes
        self.server = grpc.server(
            futures.ThreadPoolExecutor(options.max_workers, thread_name_prefix=thread_name_prefix),
            interceptors=interceptors,
            options=[
                ("grpc.max_receive_message_length", n),
                ("grpc.max_send_message_length", n),
                # one server per port: never share a port with another process by accident
                ("grpc.so_reuseport", 0),
            ],
            maximum_concurrent_rpcs=maximum_concurrent_rpcs,
        )
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        enable_reflection(self.server, [self.service_name])
        self.port: int | None = None
        self._stopped = threading.Event()

    @property
    def address(self) -> str:
        return f"{self.options.address.rpartition(':')[0]}:{self.port}"

    def describe(self) -> str:
        """One line for the log once bound."""
        o = self.options
        return (
            f"{self.banner} listening on {self.address} "
            f"({'TLS' if o.tls_cert else 'plaintext'}{', token required' if o.token else ''})"
        )

    def set_serving(self, serving: bool) -> None:
        status = health_pb2.HealthCheckResponse
        for name in ("", self.service_name):
            self.health.set(name, status.SERVING if serving else status.NOT_SERVING)

    def bind(self) -> int:
        """Bind the port and start answering (health NOT_SERVING until ``open``)."""
        o = self.options
        self.set_serving(False)
        try:
            if o.tls_cert is not None and o.tls_key is not None:
                creds = server_credentials(o.tls_cert, o.tls_key)
                port = self.server.add_secure_port(o.address, creds)
            else:
                port = self.server.add_insecure_port(o.address)
        except RuntimeError as exc:
            raise ConfigError(f"cannot bind {o.address}: {exc}") from None
        if port == 0 and not o.address.startswith("unix"):
            raise ConfigError(f"cannot bind {o.address}")
        self.port = port
        self.server.start()
        return port

    def open(self) -> None:
        """Get ready for calls, then report SERVING. Services extend it (state restore)."""
        self.set_serving(True)

    def start(self) -> int:
        """Bind, open, serve; returns the bound port."""
        port = self.bind()
        try:
            self.open()
        except BaseException:
            self.stop(grace_s=0)
            raise
        return port

    def before_stop(self) -> None:
        """Called once health says NOT_SERVING, before in-flight calls are waited for."""

    def after_stop(self) -> None:
        """Called once the server has stopped (release what the service holds)."""

    def stop(self, grace_s: float | None = None) -> None:
        """Stop accepting calls, let in-flight ones finish within ``grace_s``, release."""
        if self._stopped.is_set():
            return
        self._stopped.set()
        self.health.enter_graceful_shutdown()
        self.before_stop()
        self.server.stop(self.options.grace_s if grace_s is None else grace_s).wait()
        self.after_stop()

    def wait(self, timeout_s: float | None = None) -> bool:
        """Wait until the server is stopped (True) or ``timeout_s`` passes (False)."""
        return self._stopped.wait(timeout_s)

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def write_port_file(port_file: Path, port: int) -> None:
    """Write the bound port atomically (readers never see a partial file)."""
    tmp = Path(f"{port_file}.tmp")
    tmp.write_text(f"{port}\n")
    os.replace(tmp, port_file)


def serve(server: GrpcServer, port_file: Path | None = None) -> None:
    """Run ``server`` until SIGTERM or SIGINT, then stop it gracefully.

    The port is bound (and written to ``port_file``) before ``open`` runs, so a client can
    connect and watch health go from NOT_SERVING to SERVING."""
    stop = threading.Event()

    def on_signal(signum: int, _frame: object) -> None:
        log.info("signal %d: shutting down", signum)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    port = server.bind()
    log.info("%s", server.describe())
    if port_file is not None:
        write_port_file(port_file, port)
    try:
        server.open()
        log.info("SERVING")
        while not stop.wait(0.5):
            pass
    finally:
        server.stop()
        log.info("stopped")
