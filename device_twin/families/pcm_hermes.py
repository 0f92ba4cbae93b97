"""Family ``pcm_hermes``: aihwkit's ``HermesNoiseModel`` (IBM HERMES chip, Le Gallo et al.
Nat. Electron. 2023; Khaddam-Aljameh et al. JSSC 2022).

HERMES maps a weight's sign to a unit cell of one or two PCM devices (``num_devices``): with
two, the cell is programmed by the multi-device method of Vasilopoulos et al. (TED 2023),
more accurately. The twin's device is then the unit cell: its conductance is the cell's,
characterised up to 20.7 uS (two devices) or 10.35 uS (one), and aihwkit's statistics for
that mode apply:

- programming noise: cubic polynomial sigma_P(gh) (uS at the reference g_max);
- drift exponent: nu = |mu_nu(gh) + sigma_nu(gh)*z| with aihwkit's branch fits
  (mu_nu: one fit, sigma_nu: one per mode); drift g_prog*((age + t0)/t0)^(-nu) with
  t0 = 300 s (two devices) or 200 s (one);
- 1/f read noise: Q_s(gh_prog) branch fits per mode, t_read = 512 ns, the same law as PCM.

As aihwkit notes, its two-device drift is modelled as if both devices held the same
conductance, which is worse than the chip measured.

Pulse response: aihwkit ``PCMPresetDevice`` scaled to the cell's range (assumption: a cell
responds like one PCM device of its range). Write energy (assumption): a RESET resets every
device of the cell (``num_devices`` x NVSim's PCRAM RESET, 12 pJ, 40 ns); a SET pulse acts on
one device (22.5 pJ, 150 ns).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar, Literal

import numpy as np
from pydantic import Field, model_validator

from device_twin.families.base import PulseModelConfig, StrictModel, WriteEnergyConfig
from device_twin.families.pcm import PCMFamily

if TYPE_CHECKING:  # torch is imported where a read needs it: configs load without it
    import torch

# aihwkit HermesNoiseModel defaults per number of devices per unit cell
_PROG_COEFF = {2: (0.16603222, 4.71806468, -8.48101252, 4.68961419),
               1: (0.15781817, 2.32443916, -2.16310839, 0.68841818)}  # fmt: skip
_G_MAX_US = {2: 20.7, 1: 10.35}
_T0_S = {2: 300.0, 1: 200.0}


class HermesDeviceConfig(StrictModel):
    """PCM of IBM's HERMES chip, aihwkit HermesNoiseModel (Le Gallo et al. Nat. Electron. 2023;
    Khaddam-Aljameh et al. JSSC 2022; two-device programming: Vasilopoulos et al. TED 2023);
    pulses: aihwkit PCMPresetDevice scaled to the cell (assumption); write energy: NVSim PCRAM
    cell, RESET x num_devices (assumption)."""

    family: Literal["pcm_hermes"] = "pcm_hermes"
    num_devices: Literal[1, 2] = 2
    prog_coeff: tuple[float, ...] = Field(min_length=1, max_length=8)
    prog_coeff_g_max_reference_us: float = Field(gt=0)
    prog_noise_scale: float = Field(1.0, ge=0, le=100)
    drift_scale: float = Field(1.0, ge=0, le=10)
    read_noise_scale: float = Field(1.0, ge=0, le=100)
    t0_s: float = Field(gt=0)
    t_read_s: float = Field(512e-9, gt=0, le=1e-3)
    pulse: PulseModelConfig = Field(default_factory=PulseModelConfig.from_aihwkit)
    write_energy: WriteEnergyConfig

    @model_validator(mode="before")
    @classmethod
    def _mode_defaults(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        n = data.get("num_devices", 2)
        if n not in (1, 2):
            return data  # the Literal field reports it
        defaults = {
            "prog_coeff": _PROG_COEFF[n], "prog_coeff_g_max_reference_us": _G_MAX_US[n],
            "t0_s": _T0_S[n],
            "write_energy": {"set_pulse_pj": 22.5, "set_pulse_s": 150e-9,
                             "reset_pulse_pj": 12.0 * n, "reset_pulse_s": 40e-9},
        }  # fmt: skip
        return {**defaults, **data}

    @property
    def g_max_characterised_us(self) -> float:
        return _G_MAX_US[self.num_devices]


class HermesFamily(PCMFamily):
    """aihwkit ``HermesNoiseModel`` at the conductance level (see the module docstring)."""

    name: ClassVar[str] = "pcm_hermes"
    aihwkit_model: ClassVar[str] = "HermesNoiseModel"
    config: HermesDeviceConfig

    def drift_mean_sigma(self, g_rel: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        ln = np.log(g_rel)
        mu = np.where(g_rel < 0.0945, np.clip(-0.0387 * ln - 0.0182, 0.0720, 0.13),
                      -0.0436 * g_rel**2 - 0.0126 * g_rel + 0.0736)  # fmt: skip
        if self.config.num_devices == 1:
            sig = np.where(g_rel < 0.3039, np.clip(-0.0120 * ln - 0.0023, 0.0124, 0.04),
                           -0.0165 * g_rel**2 + 0.0116 * g_rel + 0.0104)  # fmt: skip
        else:
            sig = np.where(g_rel < 0.3055, np.clip(-0.0117 * ln - 0.0057, 0.0091, 0.04),
                           -0.0118 * g_rel**2 + 0.0093 * g_rel + 0.0073)  # fmt: skip
        return mu, sig

    def q_s(self, g_prog_us: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
        import torch

        gh = torch.div(g_prog_us, self.g_max_us).abs_()
        low_ln = torch.log(gh)
        if self.config.num_devices == 1:
            low = low_ln.mul_(-0.0078).add_(0.0038).clamp_(0.0179, 0.04)
            high = ((0.0664 * gh - 0.1352) * gh + 0.0768) * gh + 0.0088
            return torch.where(gh < 0.1591, low, high).mul_(scale)
        low = low_ln.mul_(-0.0117).add_(-0.0069).clamp_(0.015, 0.04)
        high = ((0.0069 * gh - 0.0280) * gh + 0.0211) * gh + 0.0123
        return torch.where(gh < 0.16, low, high).mul_(scale)
