"""Typed errors of the twin core. The gRPC layer maps each to one status code."""

from __future__ import annotations


class TwinError(Exception):
    """Base class: a request the twin refuses. State is unchanged when one is raised."""

    code = "UNKNOWN"


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
