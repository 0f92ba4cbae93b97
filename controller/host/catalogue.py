"""What a host can ask the chip host for: the policies, the quantisers, the config schemas.

Plain data for ListPolicies, ListQuantisers and GetConfigSchema, taken from the models that
validate a request, so that the description a host reads is the rule the server applies:
each built-in policy's parameter model (:mod:`~controller.firmware.policies.params`, the one
``pcm-twin policies`` lists), the quantiser models, ``ControllerConfig`` and the twin's
``ChipConfig``. Every schema property carries a ``description``, and every quantity its
``unit`` (:func:`undocumented` lists what does not).
"""

from __future__ import annotations

import inspect
import json
from typing import Any

import pydantic

from controller.firmware import ControllerConfig
from controller.firmware.policies import PARAMS, policy_catalogue
from controller.workloads.quantisers import (
    DualPairQuantiser,
    MultiplicativeQuantiser,
    NoneQuantiser,
    QuantiserConfig,
    UniformQuantiser,
    WPOQuantiser,
)
from device_twin.config import ChipConfig

#: The quantisers a LoadNetwork takes, by the name it takes them by; the default first.
QUANTISER_MODELS = {
    "multiplicative": MultiplicativeQuantiser,
    "uniform": UniformQuantiser,
    "none": NoneQuantiser,
    "dual_pair": DualPairQuantiser,
    "wpo": WPOQuantiser,
}
DEFAULT_QUANTISER = "multiplicative"


def policies() -> list[dict[str, Any]]:
    """Every built-in policy: name, summary, parameters (name, type, unit, default, meaning)
    and the JSON Schema of its parameters."""
    out = []
    for entry in policy_catalogue():
        params = [{**p, "default_json": json.dumps(p["default"], default=str)}
                  for p in entry["parameters"]]  # fmt: skip
        schema = PARAMS[entry["name"]].model_json_schema()
        out.append({**entry, "parameters": params, "params_schema": schema})
    return out


def quantisers() -> list[dict[str, Any]]:
    """Every quantiser: its name, what it does, and the JSON Schema of its JSON form."""
    return [
        {"kind": kind, "summary": _summary(model), "config_schema": model.model_json_schema()}
        for kind, model in QUANTISER_MODELS.items()
    ]


def config_schemas() -> dict[str, dict[str, Any]]:
    """The JSON Schemas of LoadNetwork's JSON fields."""
    return {
        "chip_config": ChipConfig.model_json_schema(),
        "controller_config": ControllerConfig.model_json_schema(),
        "quantiser": pydantic.TypeAdapter(QuantiserConfig).json_schema(),
    }


def _summary(model: type) -> str:
    return (inspect.getdoc(model) or "").split("\n\n")[0].replace("\n", " ")


# --- checking that every schema documents itself ---------------------------------------------
_NUMBERS = {"number", "integer"}


def _types(prop: dict[str, Any]) -> set[str]:
    types = prop.get("type")
    found = set(types) if isinstance(types, list) else {types} if types else set()
    for alt in [*prop.get("anyOf", ()), *prop.get("oneOf", ())]:
        found |= _types(alt)
    return found


def undocumented(schema: dict[str, Any]) -> list[str]:
    """Properties of ``schema`` (its ``$defs`` included) without a description, and number
    properties without a unit: ``Model.field: what is missing``."""
    missing = []
    models = {"": schema, **schema.get("$defs", {})}
    for model_name, model in models.items():
        for name, prop in model.get("properties", {}).items():
            where = f"{model_name or schema.get('title', '')}.{name}"
            if not prop.get("description"):
                missing.append(f"{where}: description")
            if _types(prop) & _NUMBERS and "unit" not in prop:
                missing.append(f"{where}: unit")
    return missing
