"""Configuration of the controller: channels, monitoring, and the controller's digital energy.

Digital energy figures (per device and operation) come from Horowitz, "Computing's energy
problem", ISSCC 2014 (45 nm): an 8-bit add 0.03 pJ, a 32-bit integer multiply 3.1 pJ, a 64-bit
read from an 8 KB SRAM 10 pJ (1.25 pJ per byte). The firmware reads one level byte per device
it checks and compares it with the read value (a subtract and a compare); it plans a pulse
count with one multiply. These are small next to the analog costs, and reported separately.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class DigitalEnergyConfig(BaseModel):
    """Energy the controller's own digital logic spends, per device (pJ)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    level_lookup_pj: float = Field(1.25, ge=0)  # one byte of an 8 KB SRAM (Horowitz 2014)
    compare_pj: float = Field(0.06, ge=0)  # subtract + compare, 8 bit (2 x 0.03 pJ)
    pulse_plan_pj: float = Field(3.1, ge=0)  # one 32-bit multiply per device and step

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
    ``progress_steps``: how often ``ChipModel.run`` reports progress.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    pulse_channels: int = Field(4, ge=1, le=4096)
    rows_fraction: float = Field(1.0, gt=0, le=1)
    reuse_probe_reads: bool = True
    keep_events: bool = True
    progress_steps: int = Field(100, ge=1)
    digital_energy: DigitalEnergyConfig = Field(default_factory=DigitalEnergyConfig)
