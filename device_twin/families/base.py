"""What every device family provides, and the configuration pieces they share.

A family turns keyed normal draws into device state and device state into conductances:

- ``programmed(g_target, z1, z2)``: the state right after program-and-verify to a target
  (``g_prog`` and the family's per-device parameter, stored in the chip's ``nu`` slot);
- ``pulsed_param(g, z)``: that parameter for a device a pulse left at ``g``;
- ``read(batch, draws)``: the conductance at an age (drift, relaxation, 1/f read noise);
- ``programming_sigma_us``: the accuracy of its program-and-verify (for the failure rule);
- its pulse response (``pulse``, the ExpStep rule), write energy (``write_energy``) and read
  duration (``t_read_s``, used by the energy model too: one value per family).

The family never draws random numbers itself: the chip hands it normals keyed by what is
drawn (``device_twin.rng``), so a family is a pure function and is tested against its aihwkit
model by giving both the same normals.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

if TYPE_CHECKING:  # torch is imported where a read needs it: configs load without it
    import torch

_EXPSTEP_FIELDS = (
    "dw_min", "up_down", "w_max", "w_min", "a", "b", "gamma_up", "A_up", "dw_min_dtod",
    "up_down_dtod", "w_max_dtod", "w_min_dtod", "dw_min_std", "dw_min_std_add",
    "dw_min_std_slope", "reset", "reset_dtod", "reset_std",
)  # fmt: skip


class StrictModel(BaseModel):
    # NaN/Inf never make sense in a device model and would poison device state
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


#: ExpStep parameters of aihwkit 1.1's preset devices, as its dataclasses define them
#: (``tests/device_twin/test_pulses.py`` checks them against aihwkit): written out so that a
#: chip config loads without aihwkit and torch.
AIHWKIT_PRESETS: dict[str, dict[str, float]] = {
    "PCMPresetDevice": {
        "dw_min": 0.01, "up_down": 0.0, "w_max": 2.0, "w_min": 0.0, "a": -1.0, "b": 0.0,
        "gamma_up": 2.5, "A_up": -27.235, "dw_min_dtod": 0.2, "up_down_dtod": 0.05,
        "w_max_dtod": 0.1, "w_min_dtod": 0.0, "dw_min_std": 0.6, "dw_min_std_add": 0.042,
        "dw_min_std_slope": 0.108, "reset": 0.01, "reset_dtod": 0.02, "reset_std": 0.01,
    },
    "ReRamESPresetDevice": {
        "dw_min": 0.00135, "up_down": 0.259359, "w_max": 1.0, "w_min": -1.0, "a": -0.5,
        "b": -0.5, "gamma_up": 5.0, "A_up": -1.18445, "dw_min_dtod": 0.2, "up_down_dtod": 0.05,
        "w_max_dtod": 0.3, "w_min_dtod": 0.3, "dw_min_std": 5.0, "dw_min_std_add": 0.0,
        "dw_min_std_slope": 0.0, "reset": 0.0, "reset_dtod": 0.0, "reset_std": 0.01,
    },
}  # fmt: skip


def preset_defaults(preset: str, **overrides: float) -> dict[str, float]:
    """ExpStep parameters of an aihwkit preset device, with overrides."""
    return {**AIHWKIT_PRESETS[preset], **overrides}


class PulseModelConfig(StrictModel):
    """Partial-SET pulse response: the ExpStep rule with an aihwkit preset's parameters.

    Parameters are in aihwkit's weight units ``w`` in [w_min, w_max]; a device's conductance
    is ``g = g_floor + (w - w_min) * g_per_w_us`` (``g_floor``: the family's lowest
    conductance, 0 uS but for CMO; ``g_per_w_us`` defaults to (g_max - g_floor)/(w_max - w_min),
    so w_max maps to the chip's g_max). One SET pulse on a device at ``w`` with bounds
    [b_min, b_max]::

        z  = 2*a*w/(b_max - b_min) + b
        dw = max(1 - A_up*exp(gamma_up*z), 0) * scale_up
        sd = dw_min_std*(|dw| + dw_min_std_add + dw_min_std_slope*|w|)
        w <- max(w, min(w + step, b_max)),  step of mean dw and spread sd, log-normal

    with device-to-device ``scale_up = |1 + dw_min_dtod*xi1 + up_down_dtod*xi2| * dw_min`` and
    ``b_max = w_max*(1 + w_max_dtod*xi3)``. aihwkit draws the step as dw + sd*xi, which goes
    negative when sd is comparable to dw (near the top, sd is ~15x dw); a partial SET pulse
    only crystallises, so the twin keeps aihwkit's mean and spread but draws the step
    log-normal (never negative), and a step never crosses the device's own bound: a SET pulse
    never lowers a device nor lifts it above its bound. RESET sets
    ``w = reset + reset_dtod*xi4`` (fixed per device) ``+ reset_std*xi`` (per pulse), clipped
    to the bounds.
    """

    dw_min: float = Field(gt=0)
    up_down: float = 0.0
    w_max: float = Field(gt=0)
    w_min: float = Field(le=0)
    a: float
    b: float
    gamma_up: float
    A_up: float
    dw_min_dtod: float = Field(ge=0)
    up_down_dtod: float = Field(ge=0)
    w_max_dtod: float = Field(ge=0)
    w_min_dtod: float = Field(ge=0)
    dw_min_std: float = Field(ge=0)
    dw_min_std_add: float = Field(ge=0)
    dw_min_std_slope: float = Field(ge=0)
    reset: float
    reset_dtod: float = Field(ge=0)
    reset_std: float = Field(ge=0)
    g_per_w_us: float | None = Field(None, gt=0)
    max_pulses_per_call: int = Field(1000, ge=1)

    @classmethod
    def from_aihwkit(cls, preset: str = "PCMPresetDevice", **overrides: float) -> PulseModelConfig:
        return cls(**preset_defaults(preset, **overrides))


class WriteEnergyConfig(StrictModel):
    """Energy and duration of one SET and one RESET pulse on one device of the family."""

    set_pulse_pj: float = Field(ge=0)
    set_pulse_s: float = Field(ge=0)
    reset_pulse_pj: float = Field(ge=0)
    reset_pulse_s: float = Field(ge=0)


@dataclass
class DeviceBatch:
    """State of the devices being read, as torch tensors (``age_s`` may be used as scratch)."""

    g_prog_us: torch.Tensor
    param: torch.Tensor
    age_s: torch.Tensor


@dataclass
class ReadDraws:
    """Keyed randomness a read may use.

    ``flicker(band)``: the unit 1/f process at this instant, variance ``band`` per device
    (None: a noise-free read). ``relaxation()``: one normal per device, fixed for the life of
    its current write (families whose state relaxes after a write)."""

    flicker: Callable[[torch.Tensor], torch.Tensor] | None
    relaxation: Callable[[], torch.Tensor]


class DeviceFamily(ABC):
    """The statistics of one device family, at the conductance level (uS)."""

    name: ClassVar[str]
    #: The aihwkit noise model whose statistics the family reproduces.
    aihwkit_model: ClassVar[str]
    #: The aihwkit preset whose ExpStep parameters are the default pulse response.
    pulse_preset: ClassVar[str] = "PCMPresetDevice"
    #: Lowest conductance a device can hold (uS).
    g_floor_us: float = 0.0

    def __init__(self, config: Any, g_max_us: float) -> None:
        self.config = config
        self.g_max_us = float(g_max_us)

    # --- read duration and 1/f band -----------------------------------------------------
    @property
    def t_read_s(self) -> float:
        """Duration of one device read (the 1/f model's t_read)."""
        return float(self.config.t_read_s)

    @property
    def pulse(self) -> PulseModelConfig:
        return self.config.pulse

    @property
    def write_energy(self) -> WriteEnergyConfig:
        return self.config.write_energy

    # --- writes ---------------------------------------------------------------------------
    @abstractmethod
    def programming_sigma_us(self, g_target_us: np.ndarray) -> np.ndarray:
        """Spread of the outcome of program-and-verify around its target (uS, scaled)."""

    def programmed(
        self,
        g_target_us: np.ndarray,
        z_prog: np.ndarray,
        z_param: np.ndarray,
        sigma_us: np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """(g_prog, param) right after program-and-verify to ``g_target_us`` (float32): the
        target plus sigma_P(target) * z (aihwkit's additive programming noise), clipped at
        0 uS, and the family's parameter for the target. ``sigma_us``: sigma_P already known."""
        g_t = np.asarray(g_target_us, np.float32)
        sigma = self.programming_sigma_us(g_t) if sigma_us is None else sigma_us
        g = g_t + (sigma * z_prog).astype(np.float32)
        return np.maximum(g, 0.0).astype(np.float32), self.pulsed_param(g_t, z_param)

    def pulsed_param(self, g_us: np.ndarray, z_param: np.ndarray) -> np.ndarray:
        """The per-device parameter of devices a pulse (or a program) left at ``g_us``; by
        default that conductance itself (aihwkit's ReRAM models take the target as theirs)."""
        return np.asarray(g_us, np.float32).copy()

    # --- reads ----------------------------------------------------------------------------
    @abstractmethod
    def read(self, batch: DeviceBatch, draws: ReadDraws) -> torch.Tensor:
        """Conductance of the devices at their ages (with read noise if ``draws.flicker``)."""

    def describe(self) -> dict[str, Any]:
        """Name, sources and parameters, for ``pcm-twin devices``."""
        w = self.write_energy
        return {
            "family": self.name,
            "aihwkit_model": self.aihwkit_model,
            "pulse_preset": self.pulse_preset,
            "sources": " ".join((type(self.config).__doc__ or "").split()),
            "g_max_us": self.g_max_us,
            "g_floor_us": self.g_floor_us,
            "t_read_s": self.t_read_s,
            "set_pulse_pj": w.set_pulse_pj,
            "reset_pulse_pj": w.reset_pulse_pj,
            "parameters": self.config.model_dump(mode="json", exclude={"family"}),
        }


def polynomial(coeff: tuple[float, ...] | list[float], x: np.ndarray) -> np.ndarray:
    """sum_i coeff[i] * x**i (aihwkit's programming-noise polynomials), float64."""
    out = np.full(np.shape(x), float(coeff[0]))
    p = np.ones(np.shape(x))
    for c in coeff[1:]:
        p = p * x
        out = out + c * p
    return out
