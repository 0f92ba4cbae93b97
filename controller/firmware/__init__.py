"""The SimPy chip model: the emulated on-chip firmware over a device twin.

Start with :class:`ChipModel` (its docstring shows the lifecycle and how a run is driven); the
processes live in ``monitor`` (drift monitor), ``trigger`` (correction trigger), ``pulsegen``
(pulse generator), ``inference`` (host requests) and ``evaluations`` (scheduled measurements),
each given the shared ``context`` and its collaborators; the firmware's per-device state in
``firmware``; the event ledger in ``ledger``; the names of what is measured in ``quantities``.
"""

from controller.firmware.config import ControllerConfig, DigitalEnergyConfig
from controller.firmware.errors import PolicyError
from controller.firmware.ledger import Event, Ledger
from controller.firmware.model import (
    ChipModel,
    RunResults,
    default_compensation_factory,
    make_environment,
)

__all__ = [
    "ChipModel",
    "ControllerConfig",
    "DigitalEnergyConfig",
    "Event",
    "Ledger",
    "PolicyError",
    "RunResults",
    "default_compensation_factory",
    "make_environment",
]
