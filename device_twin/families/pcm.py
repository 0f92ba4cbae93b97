"""Family ``pcm``: aihwkit's ``PCMLikeNoiseModel`` (Nandakumar et al. 2019, Joshi et al. 2020).

Per device the chip keeps ``g_prog`` and the drift exponent ``nu`` (in the ``nu`` slot).

- programming noise: g_prog = g_T + sigma_P(g_T)*z, sigma_P = c0 + c1*gh + c2*gh^2 (uS at the
  reference g_max, gh = g_T/g_max), clipped at 0;
- drift exponent: nu = |mu_nu(gh) + sigma_nu(gh)*z|, mu_nu = clip(-0.0155 ln gh + 0.0244,
  0.049, 0.1), sigma_nu = clip(-0.0125 ln gh - 0.0059, 0.008, 0.045);
- drift: g(t) = g_prog*((age + t0)/t0)^(-nu);
- 1/f read noise: sigma = g(t)*Q_s*sqrt(L), L = ln((age + t0 + t_read)/(2 t_read)),
  Q_s = min(0.0088/max(gh_prog^0.65, 1e-3), 0.2): the twin draws sqrt(L)*xi as the keyed
  1/f process of ``device_twin.flicker`` (variance L, correlated in time); clipped at 0.

Pulse response: aihwkit ``PCMPresetDevice`` (ExpStep, Nandakumar et al. 2020). Write energy:
NVSim's sample PCRAM cell (Lee et al., ISCA 2009): SET 150 uA for 150 ns, RESET 300 uA for
40 ns, at ~1 V: 22.5 pJ and 12 pJ.
"""

from __future__ import annotations

import math
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

if TYPE_CHECKING:  # torch is imported where a read needs it: configs load without it
    import torch


def _pcm_write_energy() -> WriteEnergyConfig:
    return WriteEnergyConfig(set_pulse_pj=22.5, set_pulse_s=150e-9, reset_pulse_pj=12.0,
                             reset_pulse_s=40e-9)  # fmt: skip


class PCMDeviceConfig(StrictModel):
    """PCM, aihwkit PCMLikeNoiseModel (Nandakumar et al. ICECS 2019; Joshi et al. Nat. Commun.
    2020); pulses: aihwkit PCMPresetDevice (Nandakumar et al. 2020); write energy: NVSim PCRAM
    sample cell (22.5 pJ SET / 12 pJ RESET)."""

    family: Literal["pcm"] = "pcm"
    prog_coeff: tuple[float, float, float] = (0.26348, 1.9650, -1.1731)
    prog_coeff_g_max_reference_us: float = Field(25.0, gt=0)
    prog_noise_scale: float = Field(1.0, ge=0, le=100)
    drift_scale: float = Field(1.0, ge=0, le=10)
    read_noise_scale: float = Field(1.0, ge=0, le=100)
    t0_s: float = Field(20.0, gt=0)
    t_read_s: float = Field(250e-9, gt=0, le=1e-3)
    pulse: PulseModelConfig = Field(default_factory=PulseModelConfig.from_aihwkit)
    write_energy: WriteEnergyConfig = Field(default_factory=_pcm_write_energy)


class PCMFamily(DeviceFamily):
    """aihwkit ``PCMLikeNoiseModel`` at the conductance level (see the module docstring)."""

    name: ClassVar[str] = "pcm"
    aihwkit_model: ClassVar[str] = "PCMLikeNoiseModel"
    pulse_preset: ClassVar[str] = "PCMPresetDevice"
    config: PCMDeviceConfig

    # --- writes -------------------------------------------------------------------------
    def programming_sigma_us(self, g_target_us: np.ndarray) -> np.ndarray:
        c = self.config
        gh = np.asarray(g_target_us, np.float64) / self.g_max_us
        sig = polynomial(c.prog_coeff, gh) * self.g_max_us / c.prog_coeff_g_max_reference_us
        return sig * c.prog_noise_scale

    def drift_mean_sigma(self, g_rel: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(mu_nu, sigma_nu) at relative conductance ``g_rel`` (already floored at 1e-7)."""
        ln = np.log(g_rel)
        return np.clip(-0.0155 * ln + 0.0244, 0.049, 0.1), np.clip(-0.0125 * ln - 0.0059,
                                                                    0.008, 0.045)  # fmt: skip

    def pulsed_param(self, g_us, z_param):
        g_rel = np.maximum(np.abs(np.asarray(g_us, np.float64)) / self.g_max_us, 1e-7)
        mu, sig = self.drift_mean_sigma(g_rel)
        nu = np.abs(mu + sig * np.asarray(z_param, np.float64)) * self.config.drift_scale
        return nu.astype(np.float32)

    # --- reads ----------------------------------------------------------------------------
    @property
    def t0_s(self) -> float:
        return float(self.config.t0_s)

    def q_s(self, g_prog_us: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
        """aihwkit's Q_s(g_prog) times ``scale`` (a new tensor; g_prog >= 0)."""
        import torch

        # min(0.0088/max(gh^0.65, 1e-3), 0.2) == 0.0088*max(gh, gh_c)^-0.65 for gh >= 0, with
        # gh_c where the 0.2 cap starts (the 1e-3 floor lies below it): one clamp, log, exp.
        knee_us = (0.0088 / 0.2) ** (1 / 0.65) * self.g_max_us
        c = math.log(0.0088 * scale) + 0.65 * math.log(self.g_max_us)
        return torch.clamp(g_prog_us, min=knee_us).log_().mul_(-0.65).add_(c).exp_()

    def read(self, batch: DeviceBatch, draws: ReadDraws) -> torch.Tensor:
        """Drift and 1/f read noise (aihwkit's law), clipped at 0 uS; consumes ``age_s``."""
        import torch

        t0, t_read = self.t0_s, self.t_read_s
        # ln(1 + age/t0) serves both the drift law and the 1/f band:
        #   L = ln((age + t0 + t_read)/(2 t_read))
        #     = ln((t0 + t_read)/(2 t_read)) + ln(1 + age/(t0 + t_read)),
        # and replacing t0 + t_read by t0 in the last term changes it by < t_read/t0.
        log_age = torch.log1p_(batch.age_s.div_(t0))
        g = torch.mul(batch.param, log_age).neg_().exp_().mul_(batch.g_prog_us)
        scale = self.config.read_noise_scale
        if scale > 0 and draws.flicker is not None:
            band = log_age.add_(math.log((t0 + t_read) / (2 * t_read)))
            noise = draws.flicker(band)
            # g >= 0 here, so g + |g|*Q_s*S == g*(1 + Q_s*S)
            g.mul_(self.q_s(batch.g_prog_us, scale).mul_(noise).add_(1.0))
        return g.clamp_(min=0.0)
