"""What every fuzzed refusal is checked for, on both services: a message a host programmer
reads, and the same refusal in gRPC's rich error model.

``check_refusal(request, code, message, rich)`` asserts that

- the message and every field violation hold no pydantic dump or link, no Python internals
  (a traceback, a class repr or object address, a dunder name, a private class name such as
  ``_CorrectingPolicy``, an exception class name) and no raw bytes (a bytes repr, ``\\x``
  escapes, control characters) once what the request itself said is taken out: a refusal may
  quote the client's own text (``chip 'a b' not found``, an unknown JSON key), escaped;
- a refusal the servers answer themselves (not one gRPC makes: a message over the size
  limit, a deadline, undecodable bytes) carries ``google.rpc.Status`` details with the same
  code and message; an INVALID_ARGUMENT names at least one field (``BadRequest``), unless
  what was sent was no request at all (bytes that do not decode).
"""

from __future__ import annotations

import contextlib
import json
import re

import grpc
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

C = grpc.StatusCode
LEAK = re.compile(
    r"input_value|https?://|pydantic|For further information|Traceback|<class |<function "
    r"| object at 0x|__\w+__|\b_[A-Z][A-Za-z0-9]+|\b(?:Type|Value|Key|Attribute|Index|Runtime"
    r"|Assertion|Validation|Lookup|NotImplemented|Name)Error\b|\bb'|\bb\"|\\x[0-9a-fA-F]{2}"
    r"|[\x00-\x1f\x7f]"
)
#: Codes gRPC itself answers with, without rich details (size limit, deadline, bad bytes).
GRPC_OWN = {C.RESOURCE_EXHAUSTED, C.DEADLINE_EXCEEDED, C.CANCELLED, C.INTERNAL, C.UNKNOWN}
MAX_MESSAGE_CHARS = 2000


def rich_status(exc: grpc.RpcError) -> status_pb2.Status | None:
    """The ``google.rpc.Status`` a failed call carries (None: none)."""
    try:
        return rpc_status.from_call(exc)
    except ValueError as err:  # its code or message differ from the call's
        raise AssertionError(f"rich status disagrees with the call: {err}") from None


def _strings(value, out: set[str]) -> None:
    """Every string a JSON value holds, keys included."""
    if isinstance(value, str):
        out.add(value)
    elif isinstance(value, dict):
        for k, v in value.items():
            out.add(str(k))
            _strings(v, out)
    elif isinstance(value, list):
        for v in value:
            _strings(v, out)


def echoes(request: Message | None) -> list[str]:
    """What a refusal may quote from ``request``: its text fields (and the keys and strings of
    those holding JSON), as given and as Python quotes them; longest first."""
    found: set[str] = set()

    def walk(msg: Message) -> None:
        for fd, value in msg.ListFields():
            if fd.message_type is not None and fd.message_type.GetOptions().map_entry:
                values = [v for kv in value.items() for v in kv]
                found.update(v for v in values if isinstance(v, str))
                values = [v for v in values if isinstance(v, Message)]
            else:
                values = value if fd.is_repeated else [value]
            for v in values:
                if fd.type == FieldDescriptor.TYPE_MESSAGE:
                    walk(v)
                elif fd.type == FieldDescriptor.TYPE_STRING:
                    found.add(v)
                    with contextlib.suppress(ValueError, RecursionError):
                        _strings(json.loads(v), found)

    if request is not None:
        walk(request)
    quoted = {q for s in found for q in (repr(s), json.dumps(s)) if s}
    # as given too, unless so short or plain that taking it out would take words apart
    quoted |= {s for s in found if s.strip() and (len(s) >= 3 or not s.isascii()
                                                  or not s.isprintable())}  # fmt: skip
    return sorted(quoted, key=len, reverse=True)


def check_text(text: str, request: Message | None, what: str) -> None:
    for echo in echoes(request):
        text = text.replace(echo, "")
    assert len(text) <= MAX_MESSAGE_CHARS, f"{what}: {len(text)} characters: {text[:200]!r}"
    leak = LEAK.search(text)
    assert leak is None, f"{what} leaks {leak.group()!r}: {text!r}"


def check_refusal(
    request: Message | None, code: grpc.StatusCode, message: str, rich: status_pb2.Status | None
) -> None:
    """See the module docstring."""
    if code == C.OK:
        return
    check_text(message, request, f"{code.name} message")
    if rich is None:
        assert code in GRPC_OWN, f"{code.name} {message!r} has no rich status"
        return
    assert (rich.code, rich.message) == (code.value[0], message), "rich status disagrees"
    fields = []
    for detail in rich.details:
        bad = error_details_pb2.BadRequest()
        if detail.Unpack(bad):
            for v in bad.field_violations:
                assert v.field and v.description, "an empty field violation"
                check_text(v.field, request, "violation field")
                check_text(v.description, request, "violation description")
                fields.append(v.field)
    if code == C.INVALID_ARGUMENT and request is not None:  # (bytes that are no request: none)
        assert fields, f"INVALID_ARGUMENT {message!r} names no field"
