"""What every firmware process works with: one chip's clock, twin, ledger, locks and view.

SimPy's machine-shop example gives each process ``env`` and only the collaborators it uses
(``Machine(env, name, repairman)``); so do the firmware's processes. Each one gets a
:class:`ChipContext` (the things every process of a chip shares, none of them another
process's state) and, by name, the other processes it hands work to and the callbacks it
reports through. None of them sees the :class:`~controller.firmware.model.ChipModel` that
wires them together.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import simpy

from controller.firmware.config import ControllerConfig
from controller.firmware.firmware import FirmwareView
from controller.firmware.ledger import Ledger
from controller.firmware.tiles import TileLocks

#: Called with the error that stops the run (a policy's, the twin's, an evaluator's).
OnError = Callable[[Exception], None]


@dataclass(frozen=True)
class ChipContext:
    """One chip's shared collaborators.

    ``env``: the SimPy environment (device time in seconds); ``twin``: the twin's operations
    (``ChipRegistry`` or ``TwinClient``), every call carrying ``at_s = env.now``; ``chip_id``:
    this chip on the twin; ``view``: what the firmware knows, read-only (the
    :class:`~controller.firmware.policies.base.ChipView` policies get); ``ledger``: where every
    action is recorded; ``locks``: one lock per tile; ``config``: the controller's habits.
    """

    env: simpy.Environment
    twin: Any
    chip_id: str
    view: FirmwareView
    ledger: Ledger
    locks: TileLocks
    config: ControllerConfig

    @property
    def now_s(self) -> float:
        return float(self.env.now)
