"""The SimPy chip model: the emulated on-chip firmware over a device twin.

Start with :class:`ChipModel` (its docstring shows how a run is driven); the processes live in
``monitor`` (drift monitor), ``trigger`` (correction trigger), ``pulsegen`` (pulse generator),
``inference`` (host requests); the firmware's per-device state in ``firmware``; the event
ledger in ``ledger``.
"""

from controller.firmware.config import ControllerConfig, DigitalEnergyConfig
from controller.firmware.errors import ModelStopped, PolicyError
from controller.firmware.ledger import Event, Ledger
from controller.firmware.model import (
    ChipModel,
    RunResults,
    ScheduledEvaluation,
    default_compensation_factory,
    make_environment,
)

__all__ = [
    "ChipModel",
    "ControllerConfig",
    "DigitalEnergyConfig",
    "Event",
    "Ledger",
    "ModelStopped",
    "PolicyError",
    "RunResults",
    "ScheduledEvaluation",
    "default_compensation_factory",
    "make_environment",
]
