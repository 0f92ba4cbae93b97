"""Device families behind one small interface (``base.DeviceFamily``), one module each.

=================  =========================================  ==========================
family             statistics (aihwkit)                       pulse response (aihwkit)
=================  =========================================  ==========================
``pcm``            ``PCMLikeNoiseModel``                      ``PCMPresetDevice``
``pcm_hermes``     ``HermesNoiseModel`` (1 or 2 devices/cell) ``PCMPresetDevice``
``reram_wan2022``  ``ReRamWan2022NoiseModel``                 ``ReRamESPresetDevice``
``reram_cmo``      ``ReRamCMONoiseModel``                     ``ReRamESPresetDevice``
=================  =========================================  ==========================

A chip chooses its family with ``ChipConfig.device`` (``{"family": "reram_cmo", ...}``; no
``family`` means ``pcm``). Each family's config says its sources in its docstring.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BeforeValidator, Field

from device_twin.families.base import DeviceFamily, PulseModelConfig, StrictModel, WriteEnergyConfig
from device_twin.families.pcm import PCMDeviceConfig, PCMFamily
from device_twin.families.pcm_hermes import HermesDeviceConfig, HermesFamily
from device_twin.families.reram_cmo import ReRamCMODeviceConfig, ReRamCMOFamily
from device_twin.families.reram_wan2022 import ReRamWan2022DeviceConfig, ReRamWan2022Family

FAMILIES: dict[str, tuple[type[StrictModel], type[DeviceFamily]]] = {
    "pcm": (PCMDeviceConfig, PCMFamily),
    "pcm_hermes": (HermesDeviceConfig, HermesFamily),
    "reram_wan2022": (ReRamWan2022DeviceConfig, ReRamWan2022Family),
    "reram_cmo": (ReRamCMODeviceConfig, ReRamCMOFamily),
}

#: The chip's g_max_us when a config leaves it out (the family's characterised maximum).
DEFAULT_G_MAX_US = {"pcm": 25.0, "pcm_hermes": 20.7, "reram_wan2022": 40.0, "reram_cmo": 88.2}


def _device_defaults(value: Any) -> Any:
    """No ``family`` means ``pcm``; a partial ``pulse`` overrides the family's preset."""
    if not isinstance(value, dict):
        return value
    value = {"family": "pcm", **value}
    family = FAMILIES.get(value["family"])
    pulse = value.get("pulse")
    if family is not None and isinstance(pulse, dict):
        base = family[0].model_fields["pulse"].default_factory().model_dump()  # type: ignore[misc]
        value["pulse"] = {**base, **pulse}
    return value


DeviceConfig = Annotated[
    PCMDeviceConfig | HermesDeviceConfig | ReRamWan2022DeviceConfig | ReRamCMODeviceConfig,
    Field(discriminator="family"),
    BeforeValidator(_device_defaults),
]


def make_family(config: Any, g_max_us: float) -> DeviceFamily:
    """The family object of a device config."""
    return FAMILIES[config.family][1](config, g_max_us)


def default_g_max_us(device: Any) -> float:
    family = device.get("family", "pcm") if isinstance(device, dict) else device.family
    if family == "pcm_hermes":
        n = device.get("num_devices", 2) if isinstance(device, dict) else device.num_devices
        return 20.7 if n == 2 else 10.35
    return DEFAULT_G_MAX_US.get(family, 25.0)


def describe_families() -> list[dict[str, Any]]:
    """Every family with its sources and default parameters (``pcm-twin devices``)."""
    out = []
    for config_cls, _ in FAMILIES.values():
        config = config_cls()
        out.append(make_family(config, default_g_max_us(config)).describe())
    return out


__all__ = [
    "DEFAULT_G_MAX_US", "FAMILIES", "DeviceConfig", "DeviceFamily", "HermesDeviceConfig",
    "PCMDeviceConfig", "PulseModelConfig", "ReRamCMODeviceConfig", "ReRamWan2022DeviceConfig",
    "WriteEnergyConfig", "default_g_max_us", "describe_families", "make_family",
]  # fmt: skip
