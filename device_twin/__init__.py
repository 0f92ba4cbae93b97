"""The device twin: an aihwkit-backed model of an analog-memory crossbar chip.

Layers, from the bottom: ``families`` (device statistics, one module per device family),
``rng`` and ``flicker`` (keyed random draws, 1/f read noise), ``pulses`` (pulse response,
saturation, programming cost), ``periphery`` (DAC/ADC through aihwkit tiles), ``energy`` (the
ledger), ``chip`` (tiles of devices and the operations on them: ``validation``, ``reads``,
``writes``). The gRPC service sits on top and only translates.

``Chip``, ``Array`` and ``PulseKind`` load torch on first use (PEP 562): a program that only
reads configs (``pcm-twin validate``) never imports it.
"""

from typing import TYPE_CHECKING, Any

from device_twin.config import ChipConfig
from device_twin.errors import (
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    ResourceExhausted,
    TwinError,
)

if TYPE_CHECKING:
    from device_twin.chip import Array, Chip, PulseKind

_FROM_CHIP = ("Array", "Chip", "PulseKind")


def __getattr__(name: str) -> Any:
    if name in _FROM_CHIP:
        from device_twin import chip

        return getattr(chip, name)
    raise AttributeError(f"module 'device_twin' has no attribute {name!r}")


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
