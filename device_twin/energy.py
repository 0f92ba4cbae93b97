"""Energy and latency: the cost of each twin operation, and the per-chip ledger.

Costs follow DESIGN.md §6 (``EnergyModelConfig``). Formulas, per operation:

- program (program-and-verify from RESET): per device one RESET pulse plus ``iterations``
  times (one SET pulse + one verify read: device read + ADC conversion). Devices are written
  ``write_parallel_devices`` at a time; a group takes as long as its slowest device.
- SET / RESET pulses: ``count`` pulses per device; latency as for program.
- read_devices: per device one read (0.1 pJ at g_max, proportional to g) + one ADC conversion;
  one ADC per column, so ceil(n / cols) sequential reads.
- probe: per row pass one DAC drive, one ADC conversion per column read, and the reads of the
  devices on the row (both arrays for a differential probe; a BOTH probe makes two passes
  per row, G+ then G-); one MVM latency per pass.
- mvm: per input vector ``rows`` DAC drives and ``cols`` ADC conversions, plus device reads
  weighted by the normalised input amplitude on each row; one MVM latency per vector.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from device_twin.config import EnergyModelConfig


@dataclass
class Cost:
    energy_pj: float = 0.0
    latency_s: float = 0.0


class EnergyModel:
    """Cost functions; pure, so that tests can recompute them from operation counts."""

    def __init__(self, cfg: EnergyModelConfig, g_max_us: float, tile_cols: int) -> None:
        self.cfg = cfg
        self.g_max_us = float(g_max_us)
        self.tile_cols = int(tile_cols)

    def read_energy_pj(self, g_us: np.ndarray | float) -> float:
        """Energy of reading devices once (sum over ``g_us``), without the ADC."""
        return float(self.cfg.device_read_pj_at_g_max * np.sum(g_us, dtype=np.float64)) / (
            self.g_max_us
        )

    def _grouped_latency_s(self, steps: np.ndarray, step_s: float, fixed_s: float) -> float:
        n = steps.size
        if n == 0:
            return 0.0
        p = self.cfg.write_parallel_devices
        pad = (-n) % p
        groups = np.concatenate([steps, np.zeros(pad, steps.dtype)]).reshape(-1, p)
        return float(groups.shape[0] * fixed_s + groups.max(axis=1).sum() * step_s)

    def program(self, g_target_us: np.ndarray, iterations: np.ndarray) -> Cost:
        c = self.cfg
        n = g_target_us.size
        its = int(iterations.sum(dtype=np.int64))
        # each verify read sees the device near its target
        verify_read = float(
            c.device_read_pj_at_g_max
            * np.dot(iterations.astype(np.float64), g_target_us.astype(np.float64))
            / self.g_max_us
        )
        energy = n * c.reset_pulse_pj + its * (c.set_pulse_pj + c.adc_conversion_pj) + verify_read
        latency = self._grouped_latency_s(
            iterations, c.set_pulse_s + c.device_read_s, c.reset_pulse_s
        )
        return Cost(energy, latency)

    def pulses(self, counts: np.ndarray, reset: bool) -> Cost:
        c = self.cfg
        pj, s = (c.reset_pulse_pj, c.reset_pulse_s) if reset else (c.set_pulse_pj, c.set_pulse_s)
        total = int(counts.sum(dtype=np.int64))
        return Cost(total * pj, self._grouped_latency_s(counts, s, 0.0))

    def read_devices(self, g_us: np.ndarray) -> Cost:
        c = self.cfg
        n = g_us.size
        energy = self.read_energy_pj(g_us) + n * c.adc_conversion_pj
        latency = -(-n // self.tile_cols) * c.device_read_s
        return Cost(energy, float(latency))

    def probe(self, n_rows: int, g_read_us: np.ndarray, n_cols: int | None = None) -> Cost:
        """``n_rows`` identity reads (row passes), each converting ``n_cols`` columns."""
        c = self.cfg
        cols = self.tile_cols if n_cols is None else n_cols
        energy = (
            n_rows * c.dac_row_drive_pj
            + n_rows * cols * c.adc_conversion_pj
            + self.read_energy_pj(g_read_us)
        )
        return Cost(energy, n_rows * c.mvm_latency_s)

    def mvm(
        self, x_norm_abs: np.ndarray, g_row_sum_us: np.ndarray, n_rows: int, n_cols: int
    ) -> Cost:
        """``x_norm_abs``: (batch, rows) input amplitudes in [0, 1] after noise management;
        ``g_row_sum_us``: (rows,) sum of G+ and G- over the columns read, per driven row."""
        c = self.cfg
        batch = x_norm_abs.shape[0]
        reads = float(
            c.device_read_pj_at_g_max
            * np.sum(x_norm_abs.astype(np.float64) @ g_row_sum_us.astype(np.float64))
            / self.g_max_us
        )
        energy = batch * (n_rows * c.dac_row_drive_pj + n_cols * c.adc_conversion_pj) + reads
        return Cost(energy, batch * c.mvm_latency_s)


@dataclass
class LedgerEntry:
    """Running totals for one operation kind."""

    calls: int = 0
    devices: int = 0
    pulses: int = 0
    energy_pj: float = 0.0
    latency_s: float = 0.0


class EnergyLedger:
    """Energy and latency of a chip, by operation kind."""

    def __init__(self) -> None:
        self.by_kind: dict[str, LedgerEntry] = {}

    def record(self, kind: str, cost: Cost, devices: int = 0, pulses: int = 0) -> None:
        e = self.by_kind.setdefault(kind, LedgerEntry())
        e.calls += 1
        e.devices += int(devices)
        e.pulses += int(pulses)
        e.energy_pj += float(cost.energy_pj)
        e.latency_s += float(cost.latency_s)

    @property
    def total_energy_pj(self) -> float:
        return sum(e.energy_pj for e in self.by_kind.values())

    @property
    def total_latency_s(self) -> float:
        return sum(e.latency_s for e in self.by_kind.values())

    def to_dict(self) -> dict[str, dict]:
        return {k: asdict(v) for k, v in sorted(self.by_kind.items())}

    @classmethod
    def from_dict(cls, data: dict[str, dict]) -> EnergyLedger:
        led = cls()
        led.by_kind = {k: LedgerEntry(**v) for k, v in data.items()}
        return led
