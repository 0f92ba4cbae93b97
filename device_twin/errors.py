"""Typed errors of the twin core. The gRPC layer maps each to one status code.

``.code`` names the gRPC status (``pcmtwin.status`` sends it, with the message).
``.violations`` names the request fields at fault, as (field, description) pairs, e.g.
``("x.dtype", "...")``; the gRPC layer sends them as ``google.rpc.BadRequest`` field
violations. ``field=`` is the shorthand for one violation described by the message itself.
"""

from __future__ import annotations

from collections.abc import Sequence


class TwinError(Exception):
    """Base class: a request the twin refuses. State is unchanged when one is raised."""

    code = "UNKNOWN"

    def __init__(
        self,
        message: str = "",
        *,
        field: str | None = None,
        violations: Sequence[tuple[str, str]] = (),
    ) -> None:
        super().__init__(message)
        self.violations: tuple[tuple[str, str], ...] = tuple(violations) or (
            ((field, message),) if field else ()
        )


class InvalidArgument(TwinError, ValueError):
    """Wrong shape, dtype, NaN/Inf, value out of range, unknown enum."""

    code = "INVALID_ARGUMENT"


class NotFound(TwinError, LookupError):
    """Unknown chip or tile."""

    code = "NOT_FOUND"


class AlreadyExists(TwinError):
    """A chip with that id exists already."""

    code = "ALREADY_EXISTS"


class FailedPrecondition(TwinError):
    """Time going backwards, tile not programmed."""

    code = "FAILED_PRECONDITION"


class ResourceExhausted(TwinError):
    """Too large: message, chip state over the memory budget, too many chips."""

    code = "RESOURCE_EXHAUSTED"
