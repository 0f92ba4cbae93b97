"""Configuration of an emulated chip: geometry, device family, periphery, energy.

Every default carries its source. The device family (``device``, see
``device_twin.families``) holds the device statistics, the pulse response and the write
energy; the periphery defaults are aihwkit's ``IOParameters``; the periphery's energy and
latency figures come from DESIGN.md §6 (ISAAC, IBM HERMES).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from device_twin.families import (
    DeviceConfig,
    HermesDeviceConfig,
    PCMDeviceConfig,
    PulseModelConfig,
    ReRamCMODeviceConfig,
    WriteEnergyConfig,
    default_g_max_us,
)
from device_twin.families.base import StrictModel as _Strict


def _field(default: Any, description: str, unit: str = "", **limits: Any) -> Any:
    """A config field with its meaning and unit (``""``: a pure number, a count or a choice),
    both in the JSON Schema (``GetConfigSchema``, ``pcm-twin schema``)."""
    return Field(default, description=description, json_schema_extra={"unit": unit}, **limits)


#: Bytes of device state per device: g_prog (float32), nu (float32), t_write_s (float64) and
#: the device's write count (uint32, keys its random draws).
STATE_BYTES_PER_DEVICE = 20

#: The PCM family's config, under its former name.
DeviceModelConfig = PCMDeviceConfig

__all__ = [
    "ChipConfig", "DeviceConfig", "DeviceModelConfig", "EnergyModelConfig", "IOConfig",
    "PCMDeviceConfig", "PeripheryConfig", "ProgramVerifyConfig", "PulseModelConfig",
    "WriteEnergyConfig",
]  # fmt: skip


class ProgramVerifyConfig(_Strict):
    """The modelled program-and-verify loop of ``program`` (see ``device_twin.pulses``).

    Each iteration is one or more SET pulses and one verify read; the loop applies the
    nominal pulses from RESET to the target. IBM's HERMES chip allows at most 30 iterations.
    """

    max_iterations: int = _field(
        30, "program-and-verify iterations before a device is reported failed (IBM HERMES: 30)",
        "iterations", ge=1, le=1000,
    )  # fmt: skip


class IOConfig(_Strict):
    """One direction of the analog periphery (DAC, ADC, noise), as aihwkit ``IOParameters``.

    Defaults are aihwkit's: 7-bit inputs, 9-bit outputs in [-12, 12] (units of g_max times
    input), output noise 0.06, iterative bound management, abs-max noise management.
    """

    is_perfect: bool = Field(
        False, description="an ideal periphery: no quantisation, no noise, no bounds"
    )
    inp_bound: float = _field(
        1.0, "DAC range: inputs are clipped to [-inp_bound, inp_bound] after noise management",
        "input", gt=0,
    )  # fmt: skip
    inp_res: float = _field(
        1 / (2**7 - 2), "DAC step as a share of the input range (1/126: 7 bits; a value > 1 is "
        "the number of steps; 0: no quantisation)", "", ge=0,
    )  # fmt: skip
    inp_noise: float = _field(0.0, "Gaussian noise on each input (std)", "input", ge=0)
    out_bound: float = _field(
        12.0, "ADC range: outputs are clipped to [-out_bound, out_bound]", "g_max x input",
        gt=0,
    )  # fmt: skip
    out_res: float = _field(
        1 / (2**9 - 2), "ADC step as a share of the output range (1/510: 9 bits; a value > 1 is "
        "the number of steps; 0: no quantisation)", "", ge=0,
    )  # fmt: skip
    out_noise: float = _field(
        0.06, "Gaussian noise on each output before the ADC (std)", "g_max x input", ge=0
    )
    bound_management: Literal["none", "iterative"] = Field(
        "iterative", description="iterative: an MVM whose outputs clip is run again with its "
        "inputs halved (aihwkit's); none: outputs clip",
    )  # fmt: skip
    noise_management: Literal["none", "abs_max", "max", "constant"] = Field(
        "abs_max", description="how each input vector is scaled into the DAC range before the "
        "MVM (abs_max: by its largest |x|; constant: by nm_thres; none: not scaled)",
    )  # fmt: skip
    nm_thres: float = _field(
        0.0, "noise management's scale (constant) or smallest scale (the others)", "input",
        ge=0,
    )  # fmt: skip

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

    forward: IOConfig = Field(
        default_factory=IOConfig, description="the periphery of MVMs (inference, evaluation)"
    )
    probe: IOConfig = Field(
        default_factory=_default_probe_io,
        description="the periphery of identity reads (the drift monitor's probes): 8-bit ADC "
        "matched to one device, 0.01 g_max output noise",
    )


_MOVED_TO_FAMILY = ("set_pulse_pj", "set_pulse_s", "reset_pulse_pj", "reset_pulse_s")


class EnergyModelConfig(_Strict):
    """Energy and latency of the periphery (DESIGN.md §6) and of device reads.

    A device read lasts the family's ``t_read_s`` (the read duration of its 1/f noise model:
    one value for noise, latency and energy) and costs ``read_voltage_v^2 * g * t_read_s``
    (0.25 pJ at 25 uS for PCM's 250 ns). SET/RESET pulse figures belong to the device family
    (``device.write_energy``).
    """

    read_voltage_v: float = _field(0.2, "read bias of a device read (DESIGN.md §6)", "V",
                                   ge=0, le=10)  # fmt: skip
    adc_conversion_pj: float = _field(1.67, "one 8-bit ADC conversion (ISAAC)", "pJ", ge=0)
    dac_row_drive_pj: float = _field(0.42, "driving one row through its DAC (ISAAC)", "pJ", ge=0)
    mvm_latency_s: float = _field(130e-9, "one MVM pass of a tile (IBM HERMES)", "s", ge=0)
    write_parallel_devices: int = _field(
        256, "devices written at once (one line) by program and pulses", "devices", ge=1
    )

    @model_validator(mode="before")
    @classmethod
    def _moved(cls, data: Any) -> Any:
        if isinstance(data, dict):
            moved = [k for k in (*_MOVED_TO_FAMILY, "device_read_pj_at_g_max", "device_read_s")
                     if k in data]  # fmt: skip
            if moved:
                raise ValueError(
                    f"{', '.join(moved)}: pulse energies moved to device.write_energy, and a "
                    "device read now lasts the family's t_read_s and costs read_voltage_v^2 * g "
                    "* t_read_s"
                )
        return data


class ChipConfig(_Strict):
    """A chip: ``n_tiles`` tiles of ``tile_rows`` x ``tile_cols`` weights, each held by
    ``pairs_per_weight`` G+/G- pairs.

    Rows are the input (word) lines, columns the output (bit) lines: an MVM computes
    ``y[c] = sum_r x[r] * sum_k F^k (G+_k[r, c] - G-_k[r, c]) / g_max`` with the significance
    factor F = ``significance_factor`` (Mackin 2022: W ~ F (G+ - G-) + (g+ - g-), pair 1 the
    most significant); a single pair (the default) is ``(G+ - G-)/g_max``. ``device`` chooses
    the device family (default ``pcm``); ``g_max_us`` defaults to the family's characterised
    maximum.
    """

    n_tiles: int = _field(1, "tiles on the chip", "tiles", ge=1, le=4096)
    tile_rows: int = _field(256, "rows of a tile: its input (word) lines", "rows", ge=1, le=8192)
    tile_cols: int = _field(
        256, "columns of a tile: its output (bit) lines", "columns", ge=1, le=8192
    )
    g_max_us: float = _field(
        None,  # filled in before validation: the family's maximum
        "max conductance the mapping uses; unset: the family's characterised one", "uS",
        ge=0.01, le=1000,
    )  # fmt: skip
    device: DeviceConfig = Field(
        default_factory=PCMDeviceConfig,
        description="the device family (family: pcm, pcm_hermes, reram_wan2022, reram_cmo; "
        "`pcm-twin devices` lists them) and its statistics, pulse response and write energy",
    )
    program_verify: ProgramVerifyConfig = Field(
        default_factory=ProgramVerifyConfig, description="the modelled program-and-verify loop"
    )
    periphery: PeripheryConfig = Field(
        default_factory=PeripheryConfig, description="DAC, ADC and noise of MVMs and probes"
    )
    energy: EnergyModelConfig = Field(
        default_factory=EnergyModelConfig,
        description="energy and latency of the periphery and of device reads",
    )
    seed: int = _field(0, "the chip's seed: every random draw of its devices derives from it",
                       "", ge=0, lt=2**63)  # fmt: skip
    pairs_per_weight: int = _field(
        1, "conductance pairs per weight (Mackin 2022: 2, MSP and LSP)", "pairs", ge=1, le=4
    )
    significance_factor: float = _field(
        2.0, "F: pair k counts F^k times in a weight (Mackin 2022's optimum: 2)", "", gt=0,
        le=100,
    )  # fmt: skip

    @model_validator(mode="before")
    @classmethod
    def _defaults(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        data = dict(data)
        if "pulse" in data:  # former place of the pulse response: now the family's
            device = data.get("device", {})
            pulse = data.pop("pulse")
            if isinstance(device, dict):
                data["device"] = {**device, "pulse": pulse}
            else:
                data["device"] = device.model_copy(update={"pulse": pulse})
        if data.get("g_max_us") is None:
            data["g_max_us"] = default_g_max_us(data.get("device", {}))
        return data

    @model_validator(mode="after")
    def _check_family_range(self) -> ChipConfig:
        d = self.device
        if isinstance(d, HermesDeviceConfig) and self.g_max_us > d.g_max_characterised_us + 1e-9:
            raise ValueError(
                f"pcm_hermes with {d.num_devices} device(s) per cell is characterised up to "
                f"{d.g_max_characterised_us} uS: g_max_us {self.g_max_us} is beyond it"
            )
        if isinstance(d, ReRamCMODeviceConfig) and d.g_min_us >= self.g_max_us:
            raise ValueError(f"reram_cmo needs g_min_us ({d.g_min_us}) below g_max_us")
        return self

    @property
    def pulse(self) -> PulseModelConfig:
        """The pulse response of the chip's device family."""
        return self.device.pulse

    @property
    def n_arrays(self) -> int:
        """Device arrays per tile: array ``2*pair + sign`` (sign 0 = G+, 1 = G-)."""
        return 2 * self.pairs_per_weight

    @property
    def significance(self) -> tuple[float, ...]:
        """f_k = F^k of each pair, least significant first."""
        return tuple(float(self.significance_factor) ** k for k in range(self.pairs_per_weight))

    @property
    def devices_per_tile(self) -> int:
        return self.n_arrays * self.tile_rows * self.tile_cols

    @property
    def n_devices(self) -> int:
        return self.n_tiles * self.devices_per_tile

    @property
    def state_bytes(self) -> int:
        return self.n_devices * STATE_BYTES_PER_DEVICE
