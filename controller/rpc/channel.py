"""The one place gRPC channels to pcm-twin services are made: address, token, TLS, limits.

``make_channel("127.0.0.1:50051", token=..., root_cert=...)`` returns a channel whose every
call carries ``authorization: Bearer <token>`` (when a token is given), secured with TLS
(when a root certificate is given: the server's self-signed certificate or its CA) and
allowed messages of up to ``max_message_bytes`` each way.
"""

from __future__ import annotations

import collections
import os
from pathlib import Path

import grpc

from device_twin.service.servicer import DEFAULT_MAX_MESSAGE_BYTES


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
