"""The device twin: an aihwkit-backed model of a PCM crossbar chip.

Layers, from the bottom: ``physics`` (device statistics) and ``pulses`` (pulse response),
``periphery`` (DAC/ADC through aihwkit tiles), ``energy`` (the ledger), ``chip`` (tiles of
devices and the operations on them). The gRPC service sits on top and only translates.
"""

from device_twin.chip import Array, Chip, PulseKind
from device_twin.config import ChipConfig
from device_twin.errors import (
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    ResourceExhausted,
    TwinError,
)

__all__ = [
    "AlreadyExists",
    "Array",
    "Chip",
    "ChipConfig",
    "FailedPrecondition",
    "InvalidArgument",
    "NotFound",
    "PulseKind",
    "ResourceExhausted",
    "TwinError",
]
