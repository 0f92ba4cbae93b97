"""Configuration of the controller: channels, monitoring, and the controller's digital energy.

Digital energy figures (per device and operation) come from Horowitz, "Computing's energy
problem", ISSCC 2014 (45 nm): an 8-bit add 0.03 pJ, a 32-bit integer multiply 3.1 pJ, a 64-bit
read from an 8 KB SRAM 10 pJ (1.25 pJ per byte). The firmware reads one level byte per device
it checks and compares it with the read value (a subtract and a compare); it plans a pulse
count with one multiply. These are small next to the analog costs, and reported separately.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


def _field(default: Any, description: str, unit: str = "", **limits: Any) -> Any:
    """A config field with its meaning and unit (``""``: a pure number, a count or a
    choice); numbers are strict (a boolean is not a number, nor is a string)."""
    return Field(default, description=description, json_schema_extra={"unit": unit},
                 strict=True, **limits)  # fmt: skip


class DigitalEnergyConfig(BaseModel):
    """Energy the controller's own digital logic spends, per device (pJ)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    level_lookup_pj: float = _field(
        1.25, "reading a device's stored level: one byte of an 8 KB SRAM (Horowitz 2014)",
        "pJ", ge=0,
    )  # fmt: skip
    compare_pj: float = _field(
        0.06, "comparing a read with its level: an 8-bit subtract and compare (2 x 0.03 pJ)",
        "pJ", ge=0,
    )  # fmt: skip
    pulse_plan_pj: float = _field(
        3.1, "planning a device's next pulse step: one 32-bit multiply", "pJ", ge=0
    )

    def check_pj(self, devices: int) -> float:
        """Compare ``devices`` reads with their stored levels."""
        return devices * (self.level_lookup_pj + self.compare_pj)

    def plan_pj(self, devices: int) -> float:
        """Plan the next pulse step of ``devices`` devices."""
        return devices * self.pulse_plan_pj


class ControllerConfig(BaseModel):
    """The emulated firmware's resources and habits.

    ``pulse_channels``: correction jobs that run at once (one tile each); ``rows_fraction``:
    share of each tile's rows the drift monitor probes per wake-up unless the policy says
    otherwise (round-robin); ``reuse_probe_reads``: a correction job starts from the values
    the monitor has just probed instead of reading its devices again; ``keep_events``: keep
    every ledger event in memory for results (the totals are kept either way);
    ``progress_steps``: how often ``ChipModel.run`` reports progress; ``program_scope``: what
    loading a network programs (whole tiles, or the devices holding weights).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    pulse_channels: int = _field(
        4, "correction jobs that run at once (one tile each)", "jobs", ge=1, le=4096
    )
    rows_fraction: float = _field(
        1.0, "share of each tile's rows the drift monitor probes per wake-up, round-robin, "
        "unless the policy says otherwise", "", gt=0, le=1,
    )  # fmt: skip
    reuse_probe_reads: bool = Field(
        True, description="a correction job starts from the values the monitor has just "
        "probed instead of reading its devices again",
    )  # fmt: skip
    keep_events: bool = Field(
        True, description="keep every ledger event in memory (results, event streams); the "
        "totals are kept either way",
    )  # fmt: skip
    program_scope: Literal["tiles", "weights"] = Field(
        "tiles", description="what loading a network programs: tiles, every device of each "
        "tile it uses, from RESET (a RESET pulse for each device that holds no weight); "
        "weights, only the devices holding a weight (the tile's other devices stay as made, "
        "at RESET, 0 uS: a fresh chip's tiles need no RESET)",
    )  # fmt: skip
    progress_steps: int = _field(
        100, "how often a run reports its progress on the way to its end", "reports", ge=1
    )
    digital_energy: DigitalEnergyConfig = Field(
        default_factory=DigitalEnergyConfig,
        description="energy the controller's own digital logic spends per device",
    )
