"""Credentials, for both ends of a pcm-twin channel: the bearer token and TLS.

Servers: ``BearerTokenInterceptor(token)`` refuses every call without
``authorization: Bearer <token>`` (UNAUTHENTICATED; compared in constant time; the token is
never logged), except the health check, so that orchestrators can probe liveness without a
secret (it reveals nothing but SERVING / NOT_SERVING). ``server_credentials`` reads a TLS
certificate and key.

Clients: ``make_channel("127.0.0.1:50051", token=..., root_cert=...)`` returns a channel whose
every call carries the token (when one is given), secured with TLS (when a root certificate
is given: the server's self-signed certificate or its CA) and allowed messages of up to
``max_message_bytes`` each way. It is the one place channels to pcm-twin services are made.

Both: ``load_token`` reads the token from a file or ``$PCM_TWIN_TOKEN``.
"""

from __future__ import annotations

import collections
import hmac
import os
from collections.abc import Callable
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2

from pcmtwin.codec import DEFAULT_MAX_MESSAGE_BYTES

TOKEN_ENV = "PCM_TWIN_TOKEN"
HEALTH_SERVICE = health_pb2.DESCRIPTOR.services_by_name["Health"].full_name
_OPEN_METHODS_PREFIX = f"/{HEALTH_SERVICE}/"


class ConfigError(ValueError):
    """Options refused before anything is served: an empty token file, half a TLS pair, a
    public bind without token or TLS, an address that cannot be bound."""


def load_token(token_file: Path | None, env: dict[str, str] | None = None) -> str | None:
    """The bearer token: from ``token_file`` if given, else ``$PCM_TWIN_TOKEN``, else None."""
    env = os.environ if env is None else env
    if token_file is not None:
        token = Path(token_file).read_text().strip()
        if not token:
            raise ConfigError(f"token file {token_file} is empty")
        return token
    return env.get(TOKEN_ENV) or None


# --- servers -------------------------------------------------------------------------------
def server_credentials(tls_cert: Path, tls_key: Path) -> grpc.ServerCredentials:
    return grpc.ssl_server_credentials([(Path(tls_key).read_bytes(), Path(tls_cert).read_bytes())])


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


# --- clients -------------------------------------------------------------------------------
class _ClientCallDetails(
    collections.namedtuple(
        "_ClientCallDetails",
        ("method", "timeout", "metadata", "credentials", "wait_for_ready", "compression"),
    ),
    grpc.ClientCallDetails,
):
    pass


class _BearerToken(
    grpc.UnaryUnaryClientInterceptor,
    grpc.UnaryStreamClientInterceptor,
    grpc.StreamUnaryClientInterceptor,
    grpc.StreamStreamClientInterceptor,
):
    """Adds the bearer token to every call (works on plaintext loopback channels too)."""

    def __init__(self, token: str) -> None:
        self._header = ("authorization", f"Bearer {token}")

    def _details(self, d: grpc.ClientCallDetails) -> grpc.ClientCallDetails:
        metadata = [*(d.metadata or ()), self._header]
        return _ClientCallDetails(
            d.method, d.timeout, metadata, d.credentials, d.wait_for_ready, d.compression
        )

    def intercept_unary_unary(self, continuation, client_call_details, request):
        return continuation(self._details(client_call_details), request)

    def intercept_unary_stream(self, continuation, client_call_details, request):
        return continuation(self._details(client_call_details), request)

    def intercept_stream_unary(self, continuation, client_call_details, request_iterator):
        return continuation(self._details(client_call_details), request_iterator)

    def intercept_stream_stream(self, continuation, client_call_details, request_iterator):
        return continuation(self._details(client_call_details), request_iterator)


#: A channel's reconnect backoff after losing its server: first and longest wait (ms).
RECONNECT_BACKOFF_MS = (200, 2000)


def make_channel(
    address: str,
    *,
    token: str | None = None,
    root_cert: bytes | str | os.PathLike | None = None,
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
    server_name: str | None = None,
) -> grpc.Channel:
    """A channel to a pcm-twin service.

    ``root_cert``: PEM bytes, or a path to them; enables TLS. ``server_name`` overrides the
    name checked against the server certificate (default: the host of ``address``).
    """
    options: list[tuple[str, object]] = [
        ("grpc.max_receive_message_length", int(max_message_bytes)),
        ("grpc.max_send_message_length", int(max_message_bytes)),
        # a server that restarts is found again within a second or two: gRPC's default
        # reconnect backoff grows to two minutes, and calls fail fast meanwhile
        ("grpc.initial_reconnect_backoff_ms", RECONNECT_BACKOFF_MS[0]),
        ("grpc.max_reconnect_backoff_ms", RECONNECT_BACKOFF_MS[1]),
    ]
    if root_cert is not None:
        pem = root_cert if isinstance(root_cert, bytes) else Path(root_cert).read_bytes()
        if server_name:
            options.append(("grpc.ssl_target_name_override", server_name))
        channel = grpc.secure_channel(
            address, grpc.ssl_channel_credentials(root_certificates=pem), options=options
        )
    else:
        channel = grpc.insecure_channel(address, options=options)
    if token:
        channel = grpc.intercept_channel(channel, _BearerToken(token))
    return channel
