"""The CrossbarTwin gRPC server: the servicer over a durable registry, on ``pcmtwin.serving``.

``TwinServer(ServerOptions(...)).start()`` binds (``127.0.0.1:0`` picks a free port, reported
by ``.port``), reports NOT_SERVING on ``grpc.health.v1`` while it restores its state
directory, then SERVING. ``serve(options)`` does the same and blocks until SIGTERM or
SIGINT, then shuts down gracefully: in-flight calls get ``grace_s`` to finish and a final
snapshot is written. ``pcm-twin twin serve`` (controller/cli.py) is a thin wrapper.

Bind policy, TLS, bearer token, health, reflection and message limits are the common ones of
``pcmtwin.serving`` (security posture: SECURITY.md). Specific to the twin: chips per server
and the device-state memory budget are limited (RESOURCE_EXHAUSTED), and at most half the
server's threads serve ``Session`` streams, so that unary calls are always served.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import grpc

from device_twin.registry import DEFAULT_MAX_CHIPS, DEFAULT_STATE_BUDGET_BYTES
from device_twin.service import persistence
from device_twin.service.persistence import DurableRegistry, RestoreReport, StateStore
from device_twin.service.servicer import SERVICE_NAME, CrossbarTwinServicer
from pcmtwin import serving
from pcmtwin.v1 import twin_pb2, twin_pb2_grpc

log = logging.getLogger(__name__)

DEFAULT_ADDRESS = "127.0.0.1:50051"


@dataclass(kw_only=True)
class ServerOptions(serving.ServingOptions):
    """A twin server's options: the common ones, its state directory and its limits."""

    address: str = DEFAULT_ADDRESS
    state_dir: Path | None = None
    max_chips: int = DEFAULT_MAX_CHIPS
    state_budget_bytes: int = DEFAULT_STATE_BUDGET_BYTES
    max_concurrent_rpcs: int = 256
    snapshot_wal_bytes: int = persistence.DEFAULT_SNAPSHOT_WAL_BYTES
    snapshot_interval_s: float = persistence.DEFAULT_SNAPSHOT_INTERVAL_S


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


class TwinServer(serving.GrpcServer):
    """One CrossbarTwin server (see the module docstring)."""

    service_name = SERVICE_NAME
    banner = "CrossbarTwin"

    def __init__(self, options: ServerOptions) -> None:
        super().__init__(
            options, thread_name_prefix="twin-rpc",
            maximum_concurrent_rpcs=options.max_concurrent_rpcs,
        )  # fmt: skip
        self.options: ServerOptions = options
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
        add_servicer(self.servicer, self.server)
        self.restore_report: RestoreReport | None = None

    def restore(self) -> RestoreReport:
        """Restore chips from the state dir, then report SERVING and accept calls."""
        report = self.registry.restore()
        self.restore_report = report
        self.registry.start_snapshots()
        self.servicer.ready.set()
        self.set_serving(True)
        if self.options.state_dir is not None:
            log.info(
                "restored %d chips from %s (snapshot: %s, %d log records, %.2f s)",
                report.chips, self.options.state_dir, report.snapshot,
                report.records_replayed, report.seconds,
            )  # fmt: skip
        return report

    def open(self) -> None:
        self.restore()

    def before_stop(self) -> None:
        self.servicer.ready.clear()

    def after_stop(self) -> None:
        self.registry.close()  # a final snapshot, then the state dir is released


def serve(options: ServerOptions, port_file: Path | None = None) -> None:
    """Run a twin server until SIGTERM or SIGINT, then shut it down gracefully."""
    serving.serve(TwinServer(options), port_file)
