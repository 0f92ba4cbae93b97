"""Family ``reram_cmo``: aihwkit's ``ReRamCMONoiseModel`` (CMO/HfOx ReRAM of IBM Research
Zurich; Falcone et al.; read noise: Lombardo et al. DRC 2024).

aihwkit's law at time t after programming (seconds), conductances in uS in [g_min, g_max]:

- programming noise: g_prog = g_T + (c0 + c1*g_T)*z, c per acceptance range of the
  program-and-verify loop (0.2 % or 2 %; aihwkit 1.1 uses 0.2 % unless told otherwise);
- relaxation, independent of the level: g = g_prog + m*ln(t) + (s0*ln(t) + s1)*xi;
- 1/f read noise: sigma = K*log10(g)*sqrt(ln((t + t_read)/(2 t_read))), t_read = 1 us;
- clamp to [g_min, g_max].

aihwkit draws xi afresh at every call and its fits are not meant below 1 s (the relaxation
spread ``s0*ln(t) + s1`` is negative below 55 us). The twin's rule: the law is evaluated at
max(age, 1 s) (the relaxation seen 1 s after programming has happened by the first read),
xi_r is one normal per write (keyed, drawn again at every read), so a device relaxes along one
trajectory whose spread at each age is aihwkit's; the read noise is the keyed 1/f process of
``device_twin.flicker``; log10(g) is taken of max(g, 1e-3 uS) (aihwkit's is undefined at
g <= 0). A pulse leaves a device at g, which becomes its new g_prog.

Pulse response: aihwkit ``ReRamESPresetDevice`` (Gong et al. 2018), weights [-1, 1] mapped to
[g_min, g_max], RESET to w_min. Write energy: NVSim's sample RRAM cell (0.6 pJ, 10 ns).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar, Literal

import numpy as np
from pydantic import Field

from device_twin.families.base import (
    DeviceBatch,
    DeviceFamily,
    PulseModelConfig,
    ReadDraws,
    StrictModel,
    WriteEnergyConfig,
    polynomial,
)
from device_twin.families.reram_wan2022 import nvsim_rram_energy, reram_pulse

if TYPE_CHECKING:  # torch is imported where a read needs it: configs load without it
    import torch

#: Age (s) below which the relaxation law is held at its 1-s value.
MIN_AGE_S = 1.0


class ReRamCMODeviceConfig(StrictModel):
    """CMO/HfOx ReRAM, aihwkit ReRamCMONoiseModel (Falcone et al.; 1/f: Lombardo et al. DRC
    2024), evaluated at max(age, 1 s); pulses: aihwkit ReRamESPresetDevice (Gong et al. 2018);
    write energy: NVSim RRAM sample cell (0.6 pJ, 10 ns)."""

    family: Literal["reram_cmo"] = "reram_cmo"
    g_min_us: float = Field(9.0, ge=0)
    acceptance_range_percent: Literal[0.2, 2.0] = 0.2
    prog_coeff_by_acceptance: dict[float, tuple[float, float]] = Field(
        default_factory=lambda: {0.2: (0.00081107, 0.00106879), 2.0: (0.0112185391, 0.01129027418)}
    )
    relax_mean_us_per_ln_s: float = -0.08900206
    relax_std_coeff: tuple[float, float] = (0.04201137, 0.41183342)
    read_noise_k: float = Field(0.0277316483, ge=0)
    prog_noise_scale: float = Field(1.0, ge=0, le=100)
    drift_scale: float = Field(1.0, ge=0, le=10)
    read_noise_scale: float = Field(1.0, ge=0, le=100)
    t_read_s: float = Field(1e-6, gt=0, le=1e-3)
    pulse: PulseModelConfig = Field(default_factory=reram_pulse)
    write_energy: WriteEnergyConfig = Field(default_factory=nvsim_rram_energy)

    @property
    def t0_s(self) -> float:
        """Time origin of the family's law: the age below which it is held (1 s)."""
        return MIN_AGE_S


class ReRamCMOFamily(DeviceFamily):
    """aihwkit ``ReRamCMONoiseModel`` with the twin's rule in time (module docstring)."""

    name: ClassVar[str] = "reram_cmo"
    aihwkit_model: ClassVar[str] = "ReRamCMONoiseModel"
    pulse_preset: ClassVar[str] = "ReRamESPresetDevice"
    config: ReRamCMODeviceConfig

    @property
    def g_floor_us(self) -> float:  # type: ignore[override]
        return float(self.config.g_min_us)

    def programming_sigma_us(self, g_target_us: np.ndarray) -> np.ndarray:
        c = self.config
        coeff = c.prog_coeff_by_acceptance[c.acceptance_range_percent]
        return np.abs(polynomial(coeff, np.asarray(g_target_us, np.float64))) * c.prog_noise_scale

    def read(self, batch: DeviceBatch, draws: ReadDraws) -> torch.Tensor:
        import torch

        c = self.config
        age = batch.age_s.clamp_(min=MIN_AGE_S)
        ln_t = torch.log(age)
        ds = c.drift_scale
        s0, s1 = c.relax_std_coeff
        g = batch.g_prog_us + (c.relax_mean_us_per_ln_s * ds) * ln_t
        g.addcmul_((ln_t * s0 + s1) * ds, draws.relaxation())
        if c.read_noise_scale > 0 and c.read_noise_k > 0 and draws.flicker is not None:
            t_read = self.t_read_s
            band = torch.log((age + t_read) / (2 * t_read))
            amp = torch.clamp(g, min=1e-3).log10_().mul_(c.read_noise_k)
            g.addcmul_(amp, draws.flicker(band), value=c.read_noise_scale)
        return g.clamp_(min=c.g_min_us, max=self.g_max_us)
