"""One mapping between errors and gRPC statuses, for both services and their clients.

Servers: ``abort(context, exc)`` answers a failed call. A ``TwinError`` (the core's typed
errors, and the controller's, which carry the status name in ``.code``) is sent with its
status code and its message; the request fields it names (``.violations``) travel as a
``google.rpc.BadRequest`` in the rich error details (``grpc-status-details-bin``), so a client
that ignores details sees the same code and message. A ``pydantic.ValidationError`` that a
servicer did not turn into ``InvalidArgument`` itself (``invalid_argument``) is
INVALID_ARGUMENT with one violation per error, never pydantic's own dump (which quotes the
input and links to its documentation). Anything else is a bug: INTERNAL, logged with its
traceback, and the message says nothing of the code.

Clients: ``error_from_rpc(exc)`` turns a failed call back into the core's typed error
(``InvalidArgument``, ``NotFound``, ...) with the server's message and violations, or a
``TwinRpcError`` for other statuses, so that the in-process registry and the gRPC client raise
the same errors.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NoReturn

import grpc
import pydantic
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

from device_twin import errors
from device_twin.errors import InvalidArgument, TwinError

log = logging.getLogger(__name__)

#: Field violations sent per refusal, and the most bytes of details sent with one (they travel
#: in a trailer; gRPC's default limit for all metadata of a call is 8 KiB).
MAX_VIOLATIONS = 20
MAX_DETAILS_BYTES = 4096
MAX_DESCRIPTION_CHARS = 300

_CODES_BY_NAME = {c.name: c for c in grpc.StatusCode}
_CODES_BY_VALUE = {c.value[0]: c for c in grpc.StatusCode}
#: The core's typed error a client raises per status: every ``TwinError`` subclass of
#: ``device_twin.errors``, by its own ``.code`` (a new one maps back without another edit).
_ERRORS: dict[str, type[TwinError]] = {
    cls.code: cls
    for cls in vars(errors).values()
    if isinstance(cls, type) and issubclass(cls, TwinError) and cls is not TwinError
}


#: The domain of the ``google.rpc.ErrorInfo`` a refusal may carry.
ERROR_DOMAIN = "pcmtwin"


@dataclass(frozen=True)
class Refusal:
    """What a failed call is answered with: status, message, the request fields at fault, and
    machine-readable facts (``info``: a reason and string metadata, sent as a
    ``google.rpc.ErrorInfo``; e.g. how far an AdvanceTime got before its deadline)."""

    code: grpc.StatusCode
    message: str
    violations: tuple[tuple[str, str], ...] = ()
    info: tuple[str, dict[str, str]] | None = None


def status_code(name: str) -> grpc.StatusCode:
    """The gRPC status named ``name`` (a ``TwinError.code``); UNKNOWN for no such status."""
    return _CODES_BY_NAME.get(name, grpc.StatusCode.UNKNOWN)


def status_code_from_value(value: int) -> grpc.StatusCode:
    return _CODES_BY_VALUE.get(value, grpc.StatusCode.UNKNOWN)


# --- servers -------------------------------------------------------------------------------
def field_path(*parts: str | int) -> str:
    """``layers``, 2, ``weight`` -> ``layers[2].weight`` (empty parts are dropped)."""
    out = ""
    for p in parts:
        if isinstance(p, int):
            out += f"[{p}]"
        elif p != "":
            out += f".{p}" if out else str(p)
    return out


def pydantic_violations(exc: pydantic.ValidationError, field: str = "") -> list[tuple[str, str]]:
    """One (field, description) per validation error, the field prefixed with ``field``;
    no input values, no documentation links."""
    return [
        (field_path(field, *e["loc"]) or field, _words(e["msg"]))
        for e in exc.errors(include_url=False, include_input=False, include_context=False)
    ]


def _words(msg: str) -> str:
    """A validation message without pydantic's prefixes (``Value error, ...``)."""
    for prefix in ("Value error, ", "Assertion failed, "):
        msg = msg.removeprefix(prefix)
    return msg


def invalid_argument(exc: pydantic.ValidationError, field: str, what: str) -> InvalidArgument:
    """``InvalidArgument`` for a request field (``field``, e.g. ``config_json``) that failed
    validation: "<what> is not valid: <field>: <why>; ..." with the violations attached."""
    violations = pydantic_violations(exc, field)
    shown = "; ".join(f"{f}: {d}" for f, d in violations[:5])
    more = f" (and {len(violations) - 5} more)" if len(violations) > 5 else ""
    return InvalidArgument(f"{what} is not valid: {shown}{more}", violations=violations)


def refusal(exc: BaseException, where: str = "a call") -> Refusal:
    """The status, message and field violations a failed call is answered with."""
    if isinstance(exc, TwinError):
        info = getattr(exc, "error_info", None)  # (reason, metadata), if the error has facts
        return Refusal(status_code(exc.code), str(exc), exc.violations, info)
    if isinstance(exc, pydantic.ValidationError):
        e = invalid_argument(exc, "", "the request")
        return Refusal(grpc.StatusCode.INVALID_ARGUMENT, str(e), e.violations)
    # a bug must not kill the server or leak a traceback or internal names
    log.error("internal error in %s", where, exc_info=exc)
    return Refusal(grpc.StatusCode.INTERNAL, "internal error: the server has logged it")


def to_status_proto(r: Refusal) -> status_pb2.Status:
    """``r`` in gRPC's rich error model: code and message, the field violations (if any) as a
    ``google.rpc.BadRequest`` detail, its facts (if any) as a ``google.rpc.ErrorInfo``."""
    msg = status_pb2.Status(code=r.code.value[0], message=r.message)
    if r.violations:
        bad = error_details_pb2.BadRequest()
        for f, d in r.violations[:MAX_VIOLATIONS]:
            bad.field_violations.add(field=f, description=d[:MAX_DESCRIPTION_CHARS])
        msg.details.add().Pack(bad)
    if r.info is not None:
        reason, metadata = r.info
        msg.details.add().Pack(error_details_pb2.ErrorInfo(
            reason=reason, domain=ERROR_DOMAIN, metadata=metadata))  # fmt: skip
    if msg.ByteSize() > MAX_DETAILS_BYTES + len(r.message.encode()):
        del msg.details[:]
    return msg


def to_grpc_status(r: Refusal) -> grpc.Status:
    """``r`` as a status for ``context.abort_with_status`` (see ``to_status_proto``): a
    client that ignores details sees the same code and message."""
    return rpc_status.to_status(to_status_proto(r))


def abort(context: grpc.ServicerContext, exc: BaseException, where: str = "a call") -> NoReturn:
    """End the call with the answer for ``exc`` (see the module docstring)."""
    context.abort_with_status(to_grpc_status(refusal(exc, where)))
    raise AssertionError("unreachable")  # abort_with_status raises


# --- clients -------------------------------------------------------------------------------
class TwinRpcError(TwinError):
    """A call failed for a reason other than a refused request (``.code``: status name)."""

    def __init__(self, code: str, message: str, violations: Sequence[tuple[str, str]] = ()) -> None:
        super().__init__(f"{code}: {message}", violations=violations)
        self.code = code
        self.details = message


def violations_of(exc: grpc.RpcError) -> tuple[tuple[str, str], ...]:
    """The field violations a failed call carries in its rich error details (if any)."""
    try:
        status = rpc_status.from_call(exc)  # type: ignore[arg-type]
    except (ValueError, AttributeError, TypeError):
        return ()
    return violations_in(status)


def violations_in(status: status_pb2.Status | None) -> tuple[tuple[str, str], ...]:
    """The field violations of a ``google.rpc.Status`` (its ``BadRequest`` details)."""
    found: list[tuple[str, str]] = []
    for detail in status.details if status is not None else ():
        bad = error_details_pb2.BadRequest()
        if detail.Unpack(bad):
            found += [(v.field, v.description) for v in bad.field_violations]
    return tuple(found)


def error_from_status(
    code: grpc.StatusCode, message: str, violations: Sequence[tuple[str, str]] = ()
) -> TwinError:
    """The typed error for a status: the core's class for a refusal, else ``TwinRpcError``."""
    cls = _ERRORS.get(code.name)
    if cls is None:
        return TwinRpcError(code.name, message, violations)
    return cls(message, violations=violations)


def error_from_rpc(exc: grpc.RpcError) -> TwinError:
    """The typed error for a failed call (see the module docstring)."""
    code = exc.code()  # type: ignore[attr-defined]
    return error_from_status(code, exc.details() or "", violations_of(exc))  # type: ignore[attr-defined]
