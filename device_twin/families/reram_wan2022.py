"""Family ``reram_wan2022``: aihwkit's ``ReRamWan2022NoiseModel`` (NeuRRAM, Wan et al.,
Nature 2022).

aihwkit's model is a distribution at three times only: the conductance of a device
programmed to g_T is g_T + sigma_t(g_T)*xi at t = 1 s (also its programming noise), 1 day
and 2 days, sigma_t a 4th-order polynomial in g_T/g_max (uS; as in aihwkit 1.1 the
polynomial is not rescaled when g_max differs from its 40 uS fit, see its
``coeff_g_max_reference``), with a fresh xi at every call. A twin needs one trajectory per
device, so it keeps ``g_prog`` (the 1-s state) and g_T (in the ``nu`` slot, as aihwkit's
``generate_drift_coefficients`` returns g_T), and states this rule between and beyond:

- sigma(a) is linear in ln(a) between the characterised times, sigma(1 s) before 1 s, and
  held at its 2-day value after 2 days (no data; a trend extrapolated from two points over
  months would be invention);
- the programmed deviation D = g_prog - g_T persists, and relaxation adds an independent
  part: g(a) = g_T + D*min(1, sigma(a)/sigma_1s) + sqrt(max(sigma(a)^2 - sigma_1s^2, 0))*xi_r,
  xi_r one normal per write (keyed, drawn again at every read). At each characterised time
  this is exactly aihwkit's distribution; between two reads a device moves smoothly;
- a pulse leaves a device at g: g becomes its g_T and D = 0;
- read noise: aihwkit's model has none and advises ~1 % of g_max of short-term read noise;
  the twin adds ``read_noise_g_max_fraction`` * g_max with the 1/f time structure of
  ``device_twin.flicker`` over periods from 2 t_read to 1 s (``t_read_s``: 1 us, assumed as
  aihwkit's CMO ReRAM fit).

Pulse response: aihwkit ``ReRamESPresetDevice`` (Gong et al., Nat. Commun. 2018), weights
[-1, 1] mapped to [0, g_max], RESET to the low state w_min (the preset's reset level 0 is the
symmetric point of a training device). Write energy: NVSim's sample RRAM cell (2 V, 10 ns,
0.6 pJ for SET and RESET).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, ClassVar, Literal

import numpy as np
from pydantic import Field, field_validator

from device_twin.families.base import (
    DeviceBatch,
    DeviceFamily,
    PulseModelConfig,
    ReadDraws,
    StrictModel,
    WriteEnergyConfig,
    polynomial,
)

if TYPE_CHECKING:  # torch is imported where a read needs it: configs load without it
    import torch

_DAY_S = 86400.0
#: aihwkit's fits, coefficients in ascending powers of g_T/g_max (uS).
_COEFF = {1.0: (0.348, 16.030, -43.853, 45.393, -16.815),
          _DAY_S: (0.701, 22.086, -50.773, 47.095, -16.458),
          2 * _DAY_S: (0.782, 20.274, -43.507, 37.062, -11.934)}  # fmt: skip
#: Longest period of the short-term read noise.
READ_NOISE_MAX_PERIOD_S = 1.0


def reram_pulse() -> PulseModelConfig:
    return PulseModelConfig.from_aihwkit("ReRamESPresetDevice", reset=-1.0)


def nvsim_rram_energy() -> WriteEnergyConfig:
    return WriteEnergyConfig(set_pulse_pj=0.6, set_pulse_s=10e-9, reset_pulse_pj=0.6,
                             reset_pulse_s=10e-9)  # fmt: skip


class ReRamWan2022DeviceConfig(StrictModel):
    """ReRAM of NeuRRAM, aihwkit ReRamWan2022NoiseModel (Wan et al. Nature 2022), with a stated
    rule between its three characterised times; pulses: aihwkit ReRamESPresetDevice (Gong et al.
    2018); write energy: NVSim RRAM sample cell (0.6 pJ, 10 ns)."""

    family: Literal["reram_wan2022"] = "reram_wan2022"
    coeff_by_time_s: dict[float, tuple[float, ...]] = Field(default_factory=lambda: dict(_COEFF))
    noise_scale: float = Field(1.0, ge=0, le=100)
    read_noise_g_max_fraction: float = Field(0.01, ge=0, le=1)
    t_read_s: float = Field(1e-6, gt=0, le=1e-3)
    pulse: PulseModelConfig = Field(default_factory=reram_pulse)
    write_energy: WriteEnergyConfig = Field(default_factory=nvsim_rram_energy)

    @property
    def t0_s(self) -> float:
        """Time origin of the family's law: its first characterised time (1 s)."""
        return float(min(self.coeff_by_time_s))

    @field_validator("coeff_by_time_s")
    @classmethod
    def _times(cls, v: dict[float, tuple[float, ...]]) -> dict[float, tuple[float, ...]]:
        if not v or any(t <= 0 or not c for t, c in v.items()):
            raise ValueError("coeff_by_time_s needs times > 0 s, each with coefficients")
        return dict(sorted(v.items()))


class ReRamWan2022Family(DeviceFamily):
    """aihwkit ``ReRamWan2022NoiseModel`` with the twin's rule in time (module docstring)."""

    name: ClassVar[str] = "reram_wan2022"
    aihwkit_model: ClassVar[str] = "ReRamWan2022NoiseModel"
    pulse_preset: ClassVar[str] = "ReRamESPresetDevice"
    config: ReRamWan2022DeviceConfig

    def sigma_at_knots_us(self, g_target_us: np.ndarray) -> np.ndarray:
        """|sigma_t(g_T)| at each characterised time, shape (times, devices), float64."""
        gh = np.asarray(g_target_us, np.float64) / self.g_max_us
        s = self.config.noise_scale
        return np.stack(
            [np.abs(polynomial(c, gh)) * s for c in self.config.coeff_by_time_s.values()]
        )

    def programming_sigma_us(self, g_target_us: np.ndarray) -> np.ndarray:
        return self.sigma_at_knots_us(g_target_us)[0]

    def sigma_at_age_us(self, g_target_us: torch.Tensor, age_s: torch.Tensor) -> torch.Tensor:
        """sigma(a): linear in ln(a) between the characterised times, held outside them."""
        import torch

        knots = self.sigma_at_knots_us(g_target_us.numpy())
        ln_t = [math.log(t) for t in self.config.coeff_by_time_s]
        ln_a = torch.log(torch.clamp(age_s, min=1e-30)).numpy().astype(np.float64)
        out = knots[0].copy()
        for i in range(len(ln_t) - 1):
            f = np.clip((ln_a - ln_t[i]) / (ln_t[i + 1] - ln_t[i]), 0.0, 1.0)
            out = np.where(ln_a > ln_t[i], knots[i] + f * (knots[i + 1] - knots[i]), out)
        return torch.from_numpy(out.astype(np.float32))

    def read(self, batch: DeviceBatch, draws: ReadDraws) -> torch.Tensor:
        import torch

        g_t = batch.param
        sig1 = torch.from_numpy(self.programming_sigma_us(g_t.numpy()).astype(np.float32))
        sig = self.sigma_at_age_us(g_t, batch.age_s)
        dev = batch.g_prog_us - g_t
        keep = torch.where(sig1 > 0, torch.clamp(sig / sig1.clamp(min=1e-30), max=1.0), 1.0)
        grow = torch.clamp(sig * sig - sig1 * sig1, min=0.0).sqrt_()
        g = g_t + dev * keep + grow * draws.relaxation()
        amp = self.config.read_noise_g_max_fraction * self.g_max_us
        if amp > 0 and draws.flicker is not None:
            band_value = math.log((READ_NOISE_MAX_PERIOD_S + self.t_read_s) / (2 * self.t_read_s))
            band = torch.full_like(g, band_value)
            g.add_(draws.flicker(band), alpha=amp / math.sqrt(band_value))
        return g.clamp_(min=0.0)
