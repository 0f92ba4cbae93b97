"""A scenario's chip section reaches the chip whole: every ChipConfig field, present or future."""

from __future__ import annotations

import copy
import enum
import typing
from typing import Any

import pytest
import torch
from pydantic import BaseModel, ValidationError
from torch import nn

from controller.scenario.loader import ScenarioInvalid, load_scenario
from controller.scenario.prepare import prepare_variant
from controller.scenario.schema import CHIP_FIELDS_NOT_IN_SCENARIO, ChipSpec
from controller.workloads.mapping import fit_chip, tiles_needed
from controller.workloads.network import NetworkDescription
from device_twin.config import ChipConfig

#: Every field a scenario's chip section sets (all of ChipConfig's but the seed).
SCENARIO_FIELDS = [f for f in ChipConfig.model_fields if f not in CHIP_FIELDS_NOT_IN_SCENARIO]


def _network(hidden: int = 40) -> NetworkDescription:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(64, hidden), nn.ReLU(), nn.Linear(hidden, 10))
    return NetworkDescription.from_torch(net, (1, 8, 8), name="mlp")


def _candidates(value: Any, annotation: Any) -> list[Any]:
    """Values of a field's type that differ from ``value`` (the default), to try in turn."""
    args = typing.get_args(annotation)
    if typing.get_origin(annotation) is typing.Literal:
        return [a for a in args if a != value]
    if isinstance(value, bool):
        return [not value]
    if isinstance(value, enum.Enum):
        return [m for m in type(value) if m != value]
    if isinstance(value, int):
        return [value + 1, value - 1, value * 2]
    if isinstance(value, float):
        return [value * 1.25, value * 0.8, value + 0.5, value - 0.5] if value else [0.5, -0.5]
    if isinstance(value, str):
        return [value + "x"]
    if isinstance(value, tuple) and value:
        inner = args[0] if args else type(value[0])
        return [(v, *value[1:]) for v in _candidates(value[0], inner)]
    if isinstance(value, BaseModel):  # one field changed, the first that can be
        out = []
        for name, info in type(value).model_fields.items():
            for v in _candidates(getattr(value, name), info.annotation):
                out.append(value.model_copy(update={name: v}))
        return out
    return []


def _changed(name: str) -> Any:
    """A valid value of ChipConfig field ``name`` other than its default."""
    info = ChipConfig.model_fields[name]
    default = info.get_default(call_default_factory=True)
    if default is None:  # filled in by ChipConfig itself (g_max_us: the family's maximum)
        default = getattr(ChipConfig(), name)
    for v in _candidates(default, info.annotation):
        dumped = v.model_dump(mode="json") if isinstance(v, BaseModel) else v
        try:
            cfg = ChipConfig.model_validate({**ChipConfig().model_dump(), name: dumped})
        except ValidationError:
            continue
        if getattr(cfg, name) != default:
            return getattr(cfg, name)
    raise AssertionError(f"no value to try for ChipConfig.{name}: extend _candidates")


def _scenario(tiny_scenario: dict[str, Any], chip: dict[str, Any]) -> dict[str, Any]:
    return {**copy.deepcopy(tiny_scenario), "chip": chip}


@pytest.mark.parametrize("name", SCENARIO_FIELDS)
def test_every_chip_config_field_in_a_scenario_reaches_the_chip(name, tiny_scenario):
    """Each field of ChipConfig (listed from ChipConfig itself, so a field added later is
    checked too) given in a scenario's chip section is the value of the resolved chip."""
    value = _changed(name)
    if name == "n_tiles":
        value = 7  # more than the network needs: kept as given
    given = value.model_dump(mode="json") if isinstance(value, BaseModel) else value
    core = load_scenario(_scenario(tiny_scenario, {name: given})).variants[0].core
    chip = core.chip.chip_config(_network(), seed=11)
    assert getattr(chip, name) == value
    default = ChipConfig()
    others = set(SCENARIO_FIELDS) - {name, "n_tiles"}
    assert {f: getattr(chip, f) for f in others} == {f: getattr(default, f) for f in others}
    assert chip.seed == 11


def test_the_chip_section_takes_every_chip_config_field_but_the_seed():
    """ChipSpec's fields are ChipConfig's (same order), with the seed left to the scenario."""
    assert list(ChipSpec.model_fields) == SCENARIO_FIELDS
    assert "seed" in ChipConfig.model_fields and "seed" in CHIP_FIELDS_NOT_IN_SCENARIO
    with pytest.raises(ValidationError, match="seed"):
        ChipSpec.model_validate({"seed": 3})


def test_a_prepared_variant_runs_on_the_chip_its_section_describes(tiny_scenario):
    """prepare_variant's chip carries every field the scenario set, all at once (the chip each
    seed run creates is this one with the seed's device-noise seed)."""
    chip = {name: _changed(name) for name in SCENARIO_FIELDS if name != "n_tiles"}
    chip |= {"tile_rows": 64, "tile_cols": 64, "n_tiles": "auto"}
    section = {k: v.model_dump(mode="json") if isinstance(v, BaseModel) else v
               for k, v in chip.items()}  # fmt: skip
    variant = load_scenario(_scenario(tiny_scenario, section)).variants[0]
    prep = prepare_variant(variant, {})
    expected = variant.core.chip.chip_config(prep.mapped.description)
    assert prep.chip_config == expected
    for name, value in chip.items():
        if name != "n_tiles":
            assert getattr(prep.chip_config, name) == value, name
    assert prep.chip_config.n_tiles == tiles_needed(prep.mapped.description, 64, 64)


def test_auto_tiles_are_what_the_mapping_uses_and_a_number_is_kept():
    """n_tiles auto: as many tiles as the network's blocks (at least one); a number as given;
    a network too big for any chip is refused."""
    desc = _network()
    small = ChipConfig(tile_rows=16, tile_cols=16, seed=4)
    assert fit_chip(desc, small).n_tiles == 4 * 3 + 3 * 1
    assert fit_chip(desc, small, 20) == small.model_copy(update={"n_tiles": 20})
    with pytest.raises(ValidationError):
        fit_chip(_network(80), ChipConfig(tile_rows=1, tile_cols=1))  # 64*80 + 80*10 tiles


def test_a_chip_section_out_of_the_chips_limits_is_refused(tiny_scenario):
    """n_tiles beyond ChipConfig's limits, or a pulse scale the chip refuses, is an error when
    the file is read, not when the run starts."""
    for chip, message in [({"n_tiles": 5000}, "n_tiles must be 'auto' or a number of tiles"),
                          ({"n_tiles": 0}, "greater than or equal to 1"),
                          ({"device": {"pulse": {"w_min": 0.5}}}, "w_min")]:  # fmt: skip
        with pytest.raises(ScenarioInvalid, match=message):
            load_scenario(_scenario(tiny_scenario, chip))


def test_the_chip_gets_only_what_the_scenario_sets(tiny_scenario, monkeypatch):
    """The section hands ChipConfig only the keys the scenario wrote (plus n_tiles and seed),
    so ChipConfig's own defaults apply to the rest, even defaults that depend on other
    fields (a device family's, say)."""
    import controller.scenario.schema as schema

    received: list[set[str]] = []

    class Recording(ChipConfig):
        @classmethod
        def model_validate(cls, obj: Any, **kw: Any) -> ChipConfig:
            received.append(set(obj))
            return ChipConfig.model_validate(obj, **kw)

    chip = {"tile_rows": 64, "device": {"drift_scale": 0.5}}
    core = load_scenario(_scenario(tiny_scenario, chip)).variants[0].core
    monkeypatch.setattr(schema, "ChipConfig", Recording)
    resolved = core.chip.chip_config(_network(), seed=3)
    assert received == [{"tile_rows", "device", "n_tiles", "seed"}]
    assert resolved.device.drift_scale == 0.5 and resolved.device.read_noise_scale == 1.0
