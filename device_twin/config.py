"""Configuration of an emulated PCM chip: geometry, device statistics, pulses, periphery, energy.

Every default carries its source. Device statistics default to aihwkit's
``PCMLikeNoiseModel`` (Nandakumar 2019 / Joshi 2020); the pulse response to aihwkit's
``PCMPresetDevice`` (ExpStep rule, Nandakumar 2020); the periphery to aihwkit's
``IOParameters``; the energy and latency figures to DESIGN.md §6 (NVSim PCRAM cell, ISAAC,
IBM HERMES).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

#: Bytes of device state per device: g_prog (float32), nu (float32), t_write_s (float64).
STATE_BYTES_PER_DEVICE = 16


class _Strict(BaseModel):
    # NaN/Inf never make sense in a device model and would poison device state
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class DeviceModelConfig(_Strict):
    """PCM device statistics: aihwkit ``PCMLikeNoiseModel`` parameters.

    Programming noise sigma_P(g) = c0 + c1*g/g_max + c2*(g/g_max)^2 (uS, at the reference g_max),
    drift g(t) = g_prog*((t - t_write + t0)/t0)^(-nu), 1/f read noise with ``t_read_s``.
    """

    prog_coeff: tuple[float, float, float] = (0.26348, 1.9650, -1.1731)
    prog_coeff_g_max_reference_us: float = Field(25.0, gt=0)
    prog_noise_scale: float = Field(1.0, ge=0, le=100)
    drift_scale: float = Field(1.0, ge=0, le=10)
    read_noise_scale: float = Field(1.0, ge=0, le=100)
    t0_s: float = Field(20.0, gt=0)
    t_read_s: float = Field(250e-9, gt=0)


class ProgramVerifyConfig(_Strict):
    """The modelled program-and-verify loop used by ``program``.

    Each iteration is one SET pulse and one verify read. The error to the target shrinks by
    ``convergence`` per iteration, starting from the full distance from RESET, until it is
    below the programming-noise floor sigma_P(g_target); so iterations grow with the log of
    g_target/sigma_P. IBM's HERMES chip allows at most 30 iterations.
    """

    max_iterations: int = Field(30, ge=1, le=1000)
    convergence: float = Field(0.5, gt=0, lt=1)


def _pcm_preset_defaults() -> dict[str, float]:
    """Read the ExpStep parameters of aihwkit's ``PCMPresetDevice`` (the source of truth)."""
    from aihwkit.simulator.presets.devices import PCMPresetDevice

    dev = PCMPresetDevice()
    names = (
        "dw_min", "up_down", "w_max", "w_min", "a", "b", "gamma_up", "A_up", "dw_min_dtod",
        "up_down_dtod", "w_max_dtod", "w_min_dtod", "dw_min_std", "dw_min_std_add",
        "dw_min_std_slope", "reset", "reset_dtod", "reset_std",
    )  # fmt: skip
    return {n: float(getattr(dev, n)) for n in names}


class PulseModelConfig(_Strict):
    """Partial-SET pulse response: the ExpStep rule with aihwkit ``PCMPresetDevice`` parameters.

    Parameters are in aihwkit's weight units ``w`` in [w_min, w_max]; ``g_per_w_us`` converts
    them to conductance (default: w_max = 2.0 maps to g_max = 25 uS). One SET pulse on a device
    at ``w`` with bounds [b_min, b_max]::

        z  = 2*a*w/(b_max - b_min) + b
        dw = max(1 - A_up*exp(gamma_up*z), 0) * scale_up
        sd = dw_min_std*(|dw| + dw_min_std_add + dw_min_std_slope*|w|)
        w <- clip(w + dw + sd*xi, b_min, b_max)

    with device-to-device ``scale_up = |1 + dw_min_dtod*xi1 + up_down_dtod*xi2| * dw_min`` and
    ``b_max = w_max*(1 + w_max_dtod*xi3)``. RESET sets ``w = reset + reset_dtod*xi4`` (fixed per
    device) ``+ reset_std*xi`` (per pulse), clipped to the bounds.
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
    g_per_w_us: float = Field(12.5, gt=0)
    max_pulses_per_call: int = Field(1000, ge=1)

    @classmethod
    def from_aihwkit(cls, **overrides: float) -> PulseModelConfig:
        return cls(**{**_pcm_preset_defaults(), **overrides})


class IOConfig(_Strict):
    """One direction of the analog periphery (DAC, ADC, noise), as aihwkit ``IOParameters``.

    Defaults are aihwkit's: 7-bit inputs, 9-bit outputs in [-12, 12] (units of g_max times
    input), output noise 0.06, iterative bound management, abs-max noise management.
    """

    is_perfect: bool = False
    inp_bound: float = Field(1.0, gt=0)
    inp_res: float = Field(1 / (2**7 - 2), ge=0)
    inp_noise: float = Field(0.0, ge=0)
    out_bound: float = Field(12.0, gt=0)
    out_res: float = Field(1 / (2**9 - 2), ge=0)
    out_noise: float = Field(0.06, ge=0)
    bound_management: Literal["none", "iterative"] = "iterative"
    noise_management: Literal["none", "abs_max", "max", "constant"] = "abs_max"
    nm_thres: float = Field(0.0, ge=0)

    def to_aihwkit(self):  # -> aihwkit IOParameters
        from aihwkit.simulator.parameters.enums import BoundManagementType, NoiseManagementType
        from aihwkit.simulator.parameters.io import IOParameters

        bm = {"none": BoundManagementType.NONE, "iterative": BoundManagementType.ITERATIVE}
        nm = {
            "none": NoiseManagementType.NONE,
            "abs_max": NoiseManagementType.ABS_MAX,
            "max": NoiseManagementType.MAX,
            "constant": NoiseManagementType.CONSTANT,
        }
        return IOParameters(
            is_perfect=self.is_perfect,
            inp_bound=self.inp_bound,
            inp_res=self.inp_res,
            inp_noise=self.inp_noise,
            out_bound=self.out_bound,
            out_res=self.out_res,
            out_noise=self.out_noise,
            bound_management=bm[self.bound_management],
            noise_management=nm[self.noise_management],
            nm_thres=self.nm_thres,
        )

    def out_step(self) -> float:
        """ADC step in output units (aihwkit's ``UniformQuantize``: res*2*bound)."""
        res = 1 / self.out_res if self.out_res > 1.0 else self.out_res
        return res * 2 * self.out_bound


def _default_probe_io() -> IOConfig:
    # A probe reads one device per output line, so its ADC range is matched to one device
    # (1.25 g_max leaves room for the pulse model's w_max device-to-device spread) and its
    # output noise to a careful single-device read: 8 bits, 0.01 g_max (0.25 uS).
    return IOConfig(
        inp_res=0.0,
        out_bound=1.25,
        out_res=1 / (2**8 - 2),
        out_noise=0.01,
        bound_management="none",
        noise_management="none",
    )


class PeripheryConfig(_Strict):
    """Periphery of every tile: ``forward`` for MVMs, ``probe`` for identity reads."""

    forward: IOConfig = Field(default_factory=IOConfig)
    probe: IOConfig = Field(default_factory=_default_probe_io)


class EnergyModelConfig(_Strict):
    """Energy and latency per operation (DESIGN.md §6)."""

    set_pulse_pj: float = Field(22.5, ge=0)  # NVSim PCRAM cell: 150 uA, 150 ns, ~1 V
    set_pulse_s: float = Field(150e-9, ge=0)
    reset_pulse_pj: float = Field(12.0, ge=0)  # same cell: 300 uA, 40 ns
    reset_pulse_s: float = Field(40e-9, ge=0)
    device_read_pj_at_g_max: float = Field(0.1, ge=0)  # 0.2 V, 100 ns, 25 uS; scales with g
    device_read_s: float = Field(100e-9, ge=0)
    adc_conversion_pj: float = Field(1.67, ge=0)  # ISAAC, 8 bit
    dac_row_drive_pj: float = Field(0.42, ge=0)  # ISAAC
    mvm_latency_s: float = Field(130e-9, ge=0)  # IBM HERMES, one tile
    write_parallel_devices: int = Field(256, ge=1)  # devices written at once (one line)


class ChipConfig(_Strict):
    """A chip: ``n_tiles`` tiles of ``tile_rows`` x ``tile_cols`` weights, each a G+/G- pair.

    Rows are the input (word) lines, columns the output (bit) lines: an MVM computes
    ``y[c] = sum_r x[r] * (G+[r, c] - G-[r, c]) / g_max``.
    """

    n_tiles: int = Field(1, ge=1, le=4096)
    tile_rows: int = Field(256, ge=1, le=8192)
    tile_cols: int = Field(256, ge=1, le=8192)
    g_max_us: float = Field(25.0, ge=0.01, le=1000)
    device: DeviceModelConfig = Field(default_factory=DeviceModelConfig)
    program_verify: ProgramVerifyConfig = Field(default_factory=ProgramVerifyConfig)
    pulse: PulseModelConfig = Field(default_factory=PulseModelConfig.from_aihwkit)
    periphery: PeripheryConfig = Field(default_factory=PeripheryConfig)
    energy: EnergyModelConfig = Field(default_factory=EnergyModelConfig)
    seed: int = Field(0, ge=0, lt=2**63)

    @model_validator(mode="after")
    def _check_pulse_scale(self) -> ChipConfig:
        if self.pulse.w_min > 0 or self.pulse.w_max <= 0:
            raise ValueError("pulse model needs w_min <= 0 < w_max")
        return self

    @property
    def devices_per_tile(self) -> int:
        return 2 * self.tile_rows * self.tile_cols

    @property
    def n_devices(self) -> int:
        return self.n_tiles * self.devices_per_tile

    @property
    def state_bytes(self) -> int:
        return self.n_devices * STATE_BYTES_PER_DEVICE
