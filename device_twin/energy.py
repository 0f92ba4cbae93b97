"""Energy and latency: the cost of each twin operation, and the per-chip ledger.

Costs follow DESIGN.md §6 (``EnergyModelConfig``) and the device family's write energy and
read duration (``write_energy``, ``t_read_s``). A device read lasts ``t_read`` and costs
``V_read^2 * g * t_read``. Formulas, per operation:

- program (program-and-verify from RESET, ``pulses.PulseModel.program_cost``): per device one
  RESET pulse, ``pulses`` SET pulses and ``reads`` verify reads (device read at the target +
  one ADC conversion). Devices are written ``write_parallel_devices`` at a time; a group takes
  one RESET and then as long as its slowest device (pulses x t_SET + reads x t_read).
- SET / RESET pulses: ``count`` pulses per device; latency as for program.
- read_devices: per device one read + one ADC conversion; one ADC per column, so
  ceil(n / cols) sequential reads of t_read.
- probe: per row pass one DAC drive, one ADC conversion per column read, and the reads of the
  devices on the row (both arrays for a differential probe; a BOTH probe makes two passes
  per row, G+ then G-); one MVM latency per pass.
- mvm: per input vector ``rows`` DAC drives and ``cols`` ADC conversions, plus device reads
  weighted by the normalised input amplitude on each row; one MVM latency per vector.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from device_twin.config import EnergyModelConfig, WriteEnergyConfig


@dataclass
class Cost:
    energy_pj: float = 0.0
    latency_s: float = 0.0


class EnergyModel:
    """Cost functions; pure, so that tests can recompute them from operation counts."""

    def __init__(
        self,
        cfg: EnergyModelConfig,
        g_max_us: float,
        tile_cols: int,
        write: WriteEnergyConfig,
        t_read_s: float,
    ) -> None:
        self.cfg = cfg
        self.g_max_us = float(g_max_us)
        self.tile_cols = int(tile_cols)
        self.write = write
        self.t_read_s = float(t_read_s)
        # pJ per uS of conductance read once: V^2 * (g_us * 1e-6 S) * t_read * 1e12
        self.read_pj_per_us = cfg.read_voltage_v**2 * self.t_read_s * 1e6

    def read_energy_pj(self, g_us: np.ndarray | float) -> float:
        """Energy of reading devices once (sum over ``g_us``), without the ADC."""
        return self.read_pj_per_us * float(np.sum(g_us, dtype=np.float64))

    def _grouped_latency_s(self, steps_s: np.ndarray, fixed_s: float) -> float:
        n = steps_s.size
        if n == 0:
            return 0.0
        p = self.cfg.write_parallel_devices
        pad = (-n) % p
        groups = np.concatenate([steps_s, np.zeros(pad, steps_s.dtype)]).reshape(-1, p)
        return float(groups.shape[0] * fixed_s + groups.max(axis=1).sum())

    def program(self, g_target_us: np.ndarray, pulses: np.ndarray, reads: np.ndarray) -> Cost:
        c, w = self.cfg, self.write
        n = g_target_us.size
        n_pulses = int(pulses.sum(dtype=np.int64))
        n_reads = int(reads.sum(dtype=np.int64))
        # each verify read sees the device near its target
        verify = self.read_pj_per_us * float(
            np.dot(reads.astype(np.float64), g_target_us.astype(np.float64))
        )
        energy = (n * w.reset_pulse_pj + n_pulses * w.set_pulse_pj
                  + n_reads * c.adc_conversion_pj + verify)  # fmt: skip
        steps = pulses * w.set_pulse_s + reads * self.t_read_s
        return Cost(energy, self._grouped_latency_s(steps, w.reset_pulse_s))

    def pulses(self, counts: np.ndarray, reset: bool) -> Cost:
        w = self.write
        pj, s = (w.reset_pulse_pj, w.reset_pulse_s) if reset else (w.set_pulse_pj, w.set_pulse_s)
        total = int(counts.sum(dtype=np.int64))
        return Cost(total * pj, self._grouped_latency_s(counts * s, 0.0))

    def read_devices(self, g_us: np.ndarray) -> Cost:
        n = g_us.size
        energy = self.read_energy_pj(g_us) + n * self.cfg.adc_conversion_pj
        latency = -(-n // self.tile_cols) * self.t_read_s
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

    def mvm(self, batch: int, n_rows: int, n_cols: int, g_driven_us: float) -> Cost:
        """``batch`` input vectors on ``n_rows`` rows, ``n_cols`` columns converted;
        ``g_driven_us``: the conductance read, summed over vectors, each device weighted by
        its row's input amplitude |x| / max|x| (the DAC's full range after noise
        management): sum over vectors v and rows r of |x_vr| / max_r |x_vr| * g_r, with g_r
        the sum of G+ and G- over the columns read (``Chip`` computes it)."""
        c = self.cfg
        energy = batch * (n_rows * c.dac_row_drive_pj + n_cols * c.adc_conversion_pj)
        return Cost(energy + self.read_pj_per_us * g_driven_us, batch * c.mvm_latency_s)


def mvm_driven_g_us(x: Any, g_rows_us: np.ndarray) -> float:
    """``g_driven_us`` of :meth:`EnergyModel.mvm` for the inputs ``x`` (a torch tensor, batch x
    rows) on rows whose devices hold ``g_rows_us`` (uS, G+ and G- summed over the columns
    read): the sum over vectors and rows of |x| / max|x| * g."""
    import torch

    xa = x.abs()
    peak = xa.amax(dim=1).clamp_min_(1e-30)
    g = torch.from_numpy(g_rows_us.astype(np.float32))
    driven = (xa @ g).div_(peak)
    if not bool(torch.isfinite(driven).all()):  # inputs near float32's limit
        driven = (xa / peak[:, None]) @ g
    return float(driven.sum(dtype=torch.float64))


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
