"""The SimPy chip model: the emulated on-chip firmware over a device twin.

Start with :class:`ChipModel` (its docstring shows the lifecycle and how a run is driven); the
processes live in ``monitor`` (drift monitor), ``trigger`` (correction trigger), ``pulsegen``
(pulse generator), ``inference`` (host requests) and ``evaluations`` (scheduled measurements),
each given the shared ``context`` and its collaborators; the firmware's per-device state in
``firmware``; the event ledger in ``ledger``; the names of what is measured in ``quantities``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from controller.firmware.config import ControllerConfig, DigitalEnergyConfig
from controller.firmware.errors import PolicyError

# The model and the ledger load the twin (torch, aihwkit: seconds); a scenario that is only
# validated needs the policies and the configuration, so they load on first use (PEP 562).
_FROM_LEDGER = ("Event", "Ledger")
_FROM_MODEL = ("ChipModel", "RunResults", "default_compensation_factory", "make_environment")


def __getattr__(name: str) -> Any:
    if name in _FROM_LEDGER:
        from controller.firmware import ledger

        return getattr(ledger, name)
    if name in _FROM_MODEL:
        from controller.firmware import model

        return getattr(model, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


if TYPE_CHECKING:
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
