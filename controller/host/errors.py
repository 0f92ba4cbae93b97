"""The chip host's own refusals, beside the twin's typed errors (``device_twin.errors``).

Each carries ``.code``, the gRPC status name ``pcmtwin.status`` answers with, like the twin's.
A refused call changes nothing, except where the class says otherwise.
"""

from __future__ import annotations

from device_twin.errors import TwinError


class PermissionDenied(TwinError):
    """A user policy (dotted path) on a server that does not allow them."""

    code = "PERMISSION_DENIED"


class DeadlineExceeded(TwinError):
    """The call's deadline came first. An AdvanceTime has advanced as far as its message and
    its ``error_info`` (reason ``ADVANCE_STOPPED``: from_s, reached_s, target_s) say."""

    code = "DEADLINE_EXCEEDED"

    def __init__(self, message: str, error_info: tuple[str, dict[str, str]] | None = None):
        super().__init__(message)
        self.error_info = error_info


class Cancelled(DeadlineExceeded):
    """The client cancelled the call (an AdvanceTime stops where its progress says)."""

    code = "CANCELLED"


class Unavailable(TwinError):
    """The twin cannot be reached: the chip host keeps the run and goes on once it is back."""

    code = "UNAVAILABLE"


class Aborted(TwinError):
    """A concurrent call got in the way: another AdvanceTime is running, or the network was
    replaced or unloaded during this call."""

    code = "ABORTED"
