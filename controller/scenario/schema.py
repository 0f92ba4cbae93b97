"""The scenario file schema (pydantic v2, ``extra="forbid"`` everywhere).

A scenario is one YAML document::

    name: paper_mnist_selfcorrect        # run folder name
    seed: 0                              # every random draw of the run derives from it
    seeds: 3                             # device-noise seeds per variant (mean +- std)
    duration: 1y
    evaluation: {times: [1s, 1min, 1h, 1d, 1w, 1mo, 1y]}     # or log_spaced: {...}
    workload: {network: paper_cnn}
    training: {kind: digital}
    mapping: {quantiser: multiplicative}
    chip: {tile_rows: 256, tile_cols: 256}
    controller: {policy: {name: threshold, params: {interval_s: 1h}}}
    variants:                            # each deep-merged over the base above
      no_correction: {controller: {policy: {name: gdc}}}

Every section except ``name``, ``duration`` and ``workload`` has defaults. The base is the
template: when ``variants`` is given only the variants run, otherwise the base runs as one
variant named ``base``. See :mod:`controller.scenario.loader` for how a file is read, merged,
checked and mapped back to line numbers, and :func:`merge` for the merge rule.

Nothing in a scenario is evaluated: values are data. The only code a scenario can cause to
run is the import of a user policy module named by ``controller.policy.name``.
"""

from __future__ import annotations

import copy
import re
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    TypeAdapter,
    ValidationError,
    WithJsonSchema,
    create_model,
    field_validator,
    model_validator,
)

from controller.firmware.config import ControllerConfig
from controller.firmware.policies import PARAMS
from controller.scenario.durations import format_duration, parse_duration_s
from controller.workloads.quantisers import (
    QUANTISERS,
    MultiplicativeQuantiser,
    QuantiserConfig,
)
from controller.workloads.training_config import HardwareAwareConfig, TrainingConfig
from controller.workloads.zoo import WORKLOADS
from device_twin.config import ChipConfig

if TYPE_CHECKING:  # the mapping and the network description load torch (seconds): a scenario
    # is validated without them (``pcm-twin validate``), they load when a chip is fitted
    from controller.workloads.network import NetworkDescription


def _duration_out(seconds: float) -> str | float:
    # Write the human form only when it reads back to exactly the same number of seconds.
    text = format_duration(seconds)
    try:
        return text if parse_duration_s(text) == seconds else seconds
    except ValueError:
        return seconds


_DURATION_JSON = {
    "anyOf": [
        {"type": "string", "pattern": r"^\s*(\d+(\.\d*)?|\.\d+)\s*[A-Za-z]*(\s*\S+)*$"},
        {"type": "number", "minimum": 0},
    ],
    "description": "a duration: '1s', '90min', '6h', '30d', '1w', '1mo', '1y', '1h30min', or "
    "a number of seconds",
}

#: Seconds, written in a scenario as ``1y``, ``6h``, ``90min`` ... or a number of seconds.
Duration = Annotated[
    float,
    BeforeValidator(parse_duration_s),
    PlainSerializer(_duration_out, when_used="json"),
    WithJsonSchema(_DURATION_JSON),
]


class Strict(BaseModel):
    """Base of every scenario section: unknown keys are errors."""

    model_config = ConfigDict(extra="forbid")


# --- workload and training ---------------------------------------------------------------------
class WorkloadSpec(Strict):
    """The network and its data set (built-in workloads: ``controller.workloads.zoo``)."""

    network: str = Field(
        description="a built-in workload: paper_cnn, mnist_mlp, digits_mlp, resnet32"
    )
    dataset: str | None = Field(None, description="must be the workload's own data set if given")
    test_images: int | None = Field(
        None, ge=1, description="evaluate on the first N held-out images (default: all)"
    )
    calibration_images: int = Field(
        256, ge=2, le=10000,
        description="training images (the first N) on which the adabs compensations "
        "re-estimate batch-norm statistics through the chip at each evaluation (Joshi 2020)",
    )  # fmt: skip

    @model_validator(mode="after")
    def _known(self) -> WorkloadSpec:
        if self.network not in WORKLOADS:
            raise ValueError(
                f"unknown network {self.network!r}; built-in workloads: {', '.join(WORKLOADS)}"
            )
        own = WORKLOADS[self.network].dataset
        if self.dataset is not None and self.dataset != own:
            raise ValueError(f"workload {self.network!r} runs on {own!r}, not {self.dataset!r}")
        return self


class TrainingSpec(Strict):
    """How the network is trained before it is mapped.

    ``kind: digital`` trains with the paper's options (small-weight penalty, clipping);
    ``kind: hardware_aware`` fine-tunes the digitally trained network with noise injection
    (aihwkit). ``digital`` and ``hardware_aware`` override single fields of the workload's own
    recipes (``controller.workloads.zoo``); their ``seed`` defaults to the scenario's seed. The
    recipes that result key the trained-weights cache.
    """

    kind: Literal["digital", "hardware_aware"] = "digital"
    digital: TrainingConfig | None = None
    hardware_aware: HardwareAwareConfig | None = None


# --- mapping -------------------------------------------------------------------------------------
def _quantiser_shorthand(value: Any) -> Any:
    # ``quantiser: multiplicative`` is short for ``quantiser: {kind: multiplicative}``
    return {"kind": value} if isinstance(value, str) else value


class MappingSpec(Strict):
    """How trained weights become target conductances (DESIGN.md §5,
    ``controller.workloads.quantisers``).

    ``quantiser``: a name (its defaults) or a mapping with ``kind`` and its parameters:
    ``multiplicative`` (the paper: w = m+·Δ+ − m−·Δ−, integer multipliers 0..``n_levels``,
    bases by simulated annealing, ``scope`` layer or network, ``annealing`` schedule),
    ``uniform`` (``n_levels`` evenly spaced levels on one device of the pair) or ``none``
    (continuous targets).
    """

    quantiser: Annotated[QuantiserConfig, BeforeValidator(_quantiser_shorthand)] = Field(
        default_factory=MultiplicativeQuantiser
    )


# --- chip ---------------------------------------------------------------------------------------
#: ``ChipConfig`` fields a scenario does not set: a chip's seed derives from the scenario's
#: ``seed`` (``controller.scenario.seed_run.chip_seed``).
CHIP_FIELDS_NOT_IN_SCENARIO = frozenset({"seed"})


#: A number of tiles within ``ChipConfig``'s limits.
_N_TILES = TypeAdapter(Annotated[(int, *ChipConfig.model_fields["n_tiles"].metadata)])


class _ChipSection(Strict):
    """What the scenario's ``chip`` section adds to ``ChipConfig``'s own fields (the fields
    come from ``ChipConfig``: see ``ChipSpec``)."""

    @field_validator("n_tiles", check_fields=False)
    @classmethod
    def _tiles(cls, v: int | str) -> int | str:
        if isinstance(v, int):
            try:
                _N_TILES.validate_python(v)
            except ValidationError as err:
                msg = err.errors()[0]["msg"].lower()
                raise ValueError(f"n_tiles must be 'auto' or a number of tiles: {msg}") from None
        return v

    @model_validator(mode="after")
    def _a_chip(self) -> _ChipSection:
        # ChipConfig's own checks across fields (e.g. the pulse scale), when the file is read
        try:
            self._config(self.n_tiles if isinstance(self.n_tiles, int) else 1, 0)  # type: ignore[attr-defined]
        except ValidationError as err:
            raise ValueError(
                "; ".join(e["msg"].removeprefix("Value error, ") for e in err.errors())
            ) from None
        return self

    def _config(self, n_tiles: int, seed: int) -> ChipConfig:
        # only what the scenario set: ChipConfig fills the rest with its own defaults (the
        # same as the section's today, and still right if ChipConfig's defaults come to
        # depend on other fields)
        given = self.model_dump(exclude_unset=True, exclude={"n_tiles"})
        return ChipConfig.model_validate({**given, "n_tiles": n_tiles, "seed": seed})

    def chip_config(self, network: NetworkDescription, seed: int = 0) -> ChipConfig:
        """The chip this section describes, fitted to ``network`` (``n_tiles: auto``: as many
        tiles as its mapping uses), with device-noise seed ``seed``. Every field of the
        section reaches the chip, whatever fields ``ChipConfig`` has."""
        from controller.workloads.mapping import fit_chip  # torch: see the imports

        return fit_chip(network, self._config(1, seed), self.n_tiles)  # type: ignore[attr-defined]


def _chip_fields() -> dict[str, Any]:
    """``ChipConfig``'s fields (types, limits, defaults) but the seed; ``n_tiles`` may also be
    ``auto`` (a number within ``ChipConfig``'s limits otherwise, ``_ChipSection._tiles``)."""
    fields: dict[str, Any] = {
        name: (info.annotation, copy.copy(info))
        for name, info in ChipConfig.model_fields.items()
        if name not in CHIP_FIELDS_NOT_IN_SCENARIO
    }
    fields["n_tiles"] = (
        int | Literal["auto"],
        Field("auto", description="'auto': as many tiles as the mapped network uses"),
    )
    return fields


_CHIP_DOC = """The emulated chip: every field of the twin's ``ChipConfig`` but its seed (tile
geometry, the device family, program-verify, periphery and energy models, and any field added
to ``ChipConfig`` later, with no edit here).

``n_tiles: auto`` takes as many tiles as the mapped network needs. ``device`` chooses the
device family (``family: pcm`` unless given; ``pcm-twin devices`` lists them); its ``pulse``
overrides single parameters of the family's aihwkit pulse preset. ``g_max_us`` left out is
the family's characterised maximum."""

ChipSpec = create_model(
    "ChipSpec", __base__=_ChipSection, __module__=__name__, __doc__=_CHIP_DOC, **_chip_fields()
)


# --- controller ---------------------------------------------------------------------------------
class PolicySpec(Strict):
    """A correction policy: a built-in name (``none``, ``gdc``, ``periodic_refresh``,
    ``threshold``, ``drift_aware``, ``adaptive``, ``budget``) or a user policy's dotted path
    ``package.module:Class`` (or ``path/to/file.py:Class``, relative to the scenario file's
    folder), and its parameters. A built-in's parameters are checked by its parameter model
    (``controller.firmware.policies.params``; ``pcm-twin policies`` lists them, the JSON
    Schema holds them); durations (``interval_s: 1h``) are seconds."""

    name: str = "none"
    params: dict[str, Any] = Field(default_factory=dict)


class ControllerSpec(ControllerConfig):
    """The emulated firmware (``controller.firmware.config.ControllerConfig``) and its policy."""

    model_config = ConfigDict(extra="forbid", frozen=False)

    policy: PolicySpec = Field(default_factory=PolicySpec)

    def controller_config(self) -> ControllerConfig:
        return ControllerConfig(**self.model_dump(exclude={"policy"}))


# --- time ---------------------------------------------------------------------------------------
class LogSpacedSpec(Strict):
    """``points`` evaluation times evenly spaced in log time from ``start`` to ``stop``
    (default: the scenario's duration)."""

    start: Duration
    stop: Duration | None = None
    points: int = Field(ge=1, le=1000)


class EvaluationSpec(Strict):
    """When the network is evaluated: an explicit list of times, or a log-spaced grid."""

    times: list[Duration] | None = None
    log_spaced: LogSpacedSpec | None = None

    @model_validator(mode="after")
    def _one(self) -> EvaluationSpec:
        if (self.times is None) == (self.log_spaced is None):
            raise ValueError("give exactly one of 'times' (a list) or 'log_spaced'")
        if self.times is not None and not self.times:
            raise ValueError("'times' must hold at least one time")
        return self


# --- the scenario -------------------------------------------------------------------------------
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,79}$")


class ScenarioCore(Strict):
    """Everything that defines one variant of a study (the base, or a base with overrides)."""

    description: str = ""
    seed: int = Field(0, ge=0, lt=2**32)
    seeds: int = Field(1, ge=1, le=100)
    duration: Duration
    evaluation: EvaluationSpec
    workload: WorkloadSpec
    training: TrainingSpec = Field(default_factory=TrainingSpec)
    mapping: MappingSpec = Field(default_factory=MappingSpec)
    chip: ChipSpec = Field(default_factory=ChipSpec)
    controller: ControllerSpec = Field(default_factory=ControllerSpec)

    @model_validator(mode="before")
    @classmethod
    def _recipes(cls, data: Any) -> Any:
        # A scenario overrides single fields of the workload's own training recipes, and the
        # recipes' and the annealing's seeds follow the scenario's seed unless given: fill
        # them in before validation (errors still point at what the file says).
        if not isinstance(data, dict) or not isinstance(data.get("workload"), dict):
            return data
        workload = WORKLOADS.get(data["workload"].get("network"))  # type: ignore[arg-type]
        training = data.get("training", {})
        if workload is None or not isinstance(training, dict):
            return data  # the schema reports it
        seed = data.get("seed", 0)
        filled = dict(training)
        for key, recipe in (
            ("digital", workload.training),
            ("hardware_aware", workload.hardware_aware),
        ):
            given = filled.get(key) or {}
            if not isinstance(given, dict):
                continue
            defaults = recipe.model_dump()
            if isinstance(seed, int) and not isinstance(seed, bool) and seed >= 0:
                defaults["seed"] = seed
            filled[key] = {**defaults, **given}
        out = {**data, "training": filled}
        mapping = data.get("mapping", {})
        quantiser = (
            mapping.get("quantiser", "multiplicative") if isinstance(mapping, dict) else None
        )
        if isinstance(quantiser, str):
            quantiser = {"kind": quantiser}
        if (
            isinstance(quantiser, dict)
            and quantiser.get("kind", "multiplicative") == "multiplicative"
            and isinstance(seed, int)
            and not isinstance(seed, bool)
            and seed >= 0
        ):
            annealing = quantiser.get("annealing", {})
            if isinstance(annealing, dict) and "seed" not in annealing:
                quantiser = {**quantiser, "annealing": {**annealing, "seed": seed}}
                out["mapping"] = {**mapping, "quantiser": quantiser}  # type: ignore[dict-item]
        return out

    @field_validator("duration")
    @classmethod
    def _positive(cls, v: float) -> float:
        if v <= 0:
            raise ValueError("duration must be > 0")
        return v


class SweepSpec(Strict):
    """The default grid of ``pcm-twin sweep`` for this scenario: dotted key -> values
    (``--grid`` options on the command line replace or add keys)."""

    grid: dict[str, list[Any]] = Field(default_factory=dict)

    @field_validator("grid")
    @classmethod
    def _grid(cls, v: dict[str, list[Any]]) -> dict[str, list[Any]]:
        for key, values in v.items():
            if not re.fullmatch(r"[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*", key):
                raise ValueError(f"grid key {key!r} must be a dotted path such as a.b.c")
            if not values:
                raise ValueError(f"grid key {key!r} needs at least one value")
        return v


class Scenario(ScenarioCore):
    """A scenario file: the base variant, its name, optional ``variants`` (overrides) and an
    optional default ``sweep`` grid."""

    name: str = Field(description="the study's name; its run folder is results/<name>/")
    variants: dict[str, dict[str, Any]] = Field(
        default_factory=dict,
        description="name -> overrides of the base (any top-level key but name and variants), "
        "deep-merged: mappings merge key by key, everything else replaces",
    )
    sweep: SweepSpec | None = None

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not _NAME.match(v):
            raise ValueError("name must be 1-80 letters, digits, '_', '.', '-' (a folder name)")
        return v

    @field_validator("variants")
    @classmethod
    def _variant_names(cls, v: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        for key in v:
            if not _NAME.match(str(key)):
                raise ValueError(f"variant name {key!r}: 1-80 letters, digits, '_', '.', '-'")
        return v


#: Sections whose one key names what the rest of the section parameterises; when an override
#: changes it, the base's section is replaced rather than merged (a ``threshold`` policy's
#: parameters mean nothing to ``periodic_refresh``, nor annealing settings to ``uniform``).
DISCRIMINATORS: dict[tuple[str, ...], str] = {
    ("controller", "policy"): "name",
    ("mapping", "quantiser"): "kind",
}


def merge(base: Any, override: Any, path: tuple[str, ...] = ()) -> Any:
    """Deep-merge ``override`` over ``base``: mappings merge key by key, every other value
    (scalars, lists) replaces. A policy whose ``name``, or a quantiser whose ``kind``, differs
    from the base's replaces the base's section whole (see ``DISCRIMINATORS``)."""
    if not isinstance(base, dict) or not isinstance(override, dict):
        return copy.deepcopy(override)
    key = DISCRIMINATORS.get(path)
    if key is not None and key in override and override.get(key) != base.get(key):
        return copy.deepcopy(override)
    out = copy.deepcopy(base)
    for k, value in override.items():
        out[k] = merge(out[k], value, (*path, str(k))) if k in out else copy.deepcopy(value)
    return out


def variant_schema() -> dict[str, Any]:
    """JSON Schema of one variant's overrides: any top-level key of the base, none required."""
    core = ScenarioCore.model_json_schema(ref_template="#/$defs/{model}")
    return {"type": "object", "properties": core["properties"], "additionalProperties": False}


def scenario_json_schema() -> dict[str, Any]:
    """The JSON Schema of a scenario file (what ``pcm-twin schema`` prints)."""
    schema = Scenario.model_json_schema(ref_template="#/$defs/{model}")
    var = variant_schema()
    schema["properties"]["variants"]["additionalProperties"] = {
        "type": "object",
        "properties": var["properties"],
        "additionalProperties": False,
    }
    defs = schema["$defs"]
    # what the validators accept beyond the models' own schemas: a quantiser by name alone,
    # and single pulse-model parameters (the rest come from the family's aihwkit preset)
    quantiser = defs["MappingSpec"]["properties"]["quantiser"]
    names = {"type": "string", "enum": list(QUANTISERS)}
    defs["MappingSpec"]["properties"]["quantiser"] = {
        "anyOf": [names, {k: v for k, v in quantiser.items() if k != "default"}],
        "description": "a quantiser name, or a mapping with kind and its parameters",
    }
    defs["PulseModelConfig"].pop("required", None)
    # a family fills in what depends on its other fields (HERMES: its coefficients, t0 and
    # write energy from num_devices): a device section may name its family alone
    for name, d in defs.items():
        if name.endswith("DeviceConfig"):
            d.pop("required", None)
    _policy_schemas(defs)
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "pcm-twin scenario"
    return schema


def _policy_schemas(defs: dict[str, Any]) -> None:
    """A policy's ``params`` by its ``name``: each built-in's parameter model (types, units,
    defaults, limits, meanings), selected with if/then so that a variant may override single
    parameters; a user policy's params stay free (its own constructor checks them)."""
    spec = defs["PolicySpec"]
    spec["properties"]["name"] = {
        "anyOf": [
            {"enum": list(PARAMS)},
            {"type": "string", "pattern": ":", "description": "module:Class or file.py:Class"},
        ],
        "default": "none",
        "description": "a built-in policy or a user policy's dotted path",
    }  # fmt: skip
    spec["allOf"] = []
    for name, model in PARAMS.items():
        schema = model.model_json_schema(ref_template="#/$defs/{model}")
        defs.update(schema.pop("$defs", {}))
        defs[model.__name__] = schema
        spec["allOf"].append({
            "if": {"properties": {"name": {"const": name}}, "required": ["name"]},
            "then": {"properties": {"params": {"$ref": f"#/$defs/{model.__name__}"}}},
        })  # fmt: skip
