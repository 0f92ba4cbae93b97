"""What a chip operation returns (:class:`OpResult`): counts, cost, and its data or writes.

Every ``Chip`` operation answers one; the service, its codec and the controller's client pass
it on unchanged (``device_twin.chip`` re-exports it).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from device_twin.program_verify import VerifyStats
from device_twin.writes import DeviceWrites


@dataclass
class OpResult:
    """What an operation did: counts, cost, and its data (reads) or its writes.

    ``failed``: devices whose program-and-verify could not reach their target (their bound
    lies below it), addressed as in the request (``Array.BOTH`` addressing for ``program``);
    for ``program_verify``, the positions in the request of the devices the loop left
    outside tolerance, ``values`` the deviation of every device's last read (weight units)
    and ``verify`` the loop's counts."""

    kind: str
    tile: int
    at_s: float
    devices: int = 0
    pulses: int = 0
    iterations: int = 0
    energy_pj: float = 0.0
    latency_s: float = 0.0
    values: np.ndarray | None = None  # read_devices: uS; probe: int16 codes; mvm: outputs
    scale_us: float | None = None  # probe: uS per ADC code
    writes: DeviceWrites | None = field(default=None, repr=False)
    failed: np.ndarray | None = None
    verify: VerifyStats | None = field(default=None, repr=False)  # program_verify only
