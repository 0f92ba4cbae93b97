"""The parameters of the built-in policies, as typed models: one pydantic model per policy.

Each built-in policy class names its model (``ThresholdPolicy.Params = ThresholdParams``) and
builds itself from it, so the model is the one place that says what a parameter is: its type,
unit, default, limits and meaning. The scenario loader validates ``policy.params`` with it
(``pcm-twin validate``), ``pcm-twin schema`` exports it, ``pcm-twin policies`` lists it, and a
server can send it (:func:`parameter_docs` gives plain data).

Units: durations (``*_s``) in seconds, written as a number or a duration string (``6h``,
``1d``, ``90min``, :mod:`controller.firmware.durations`); thresholds and tolerances in weight
units, i.e. fractions of ``g_max``; energies in pJ.

A user policy may declare a model the same way (a ``Params`` class attribute, a subclass of
:class:`PolicyParams`): its parameters are then validated, listed and suggested like a
built-in's.
"""

from __future__ import annotations

import math
import types
import typing
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationInfo,
    WithJsonSchema,
    field_validator,
)

from controller.firmware.durations import format_duration, parse_duration_s
from controller.firmware.policies.base import COMPENSATIONS

DAY_S = 86400.0
#: The shortest interval between two wake-ups of the monitor (ten per device second): a
#: wake-up probes and corrects, which takes up to milliseconds of device time, and a host
#: advancing a day must not need millions of them (1e-6 s would make a 10 s advance take
#: ten million).
MIN_INTERVAL_S = 0.1

#: JSON Schema of a duration parameter: a duration string or a number of seconds.
_DURATION_JSON = {
    "anyOf": [
        {"type": "string", "pattern": r"^\s*(\d+(\.\d*)?|\.\d+)\s*[A-Za-z]*(\s*\S+)*$"},
        {"type": "number", "exclusiveMinimum": 0},
    ],
}


def _duration_s(value: Any) -> Any:
    # a duration string or a number of seconds; anything else (a boolean too) is left to the
    # checks that follow
    if isinstance(value, bool):
        return value
    return parse_duration_s(value) if isinstance(value, str | int | float) else value


#: Seconds (> 0): a number, or a duration string such as ``6h``.
Seconds = Annotated[float, BeforeValidator(_duration_s), WithJsonSchema(_DURATION_JSON)]


def _compensation(value: Any) -> Any:
    return None if value in ("none", "") else value


#: Drift compensation at inference: ``gdc`` (one factor per tile), ``per_column`` (one per
#: output column), ``adabs`` (batch-norm statistics re-estimated through the chip, Joshi 2020),
#: ``gdc_adabs`` (both) or none.
Compensation = Annotated[
    Literal["gdc", "per_column", "adabs", "gdc_adabs"] | None,
    BeforeValidator(_compensation),
    WithJsonSchema({"enum": [*COMPENSATIONS, "none", None]}),
]
_COMPENSATION_DOC = (
    "drift compensation at inference: gdc (one factor per tile), per_column (one per output "
    "column), adabs (batch-norm statistics re-estimated through the chip), gdc_adabs (both) "
    "or none"
)


def _param(default: Any, description: str, unit: str = "", **limits: Any) -> Any:
    """A parameter field: its default, meaning and unit (``""``: none, a pure number or a
    choice; the schema says so too)."""
    return Field(default, description=description, json_schema_extra={"unit": unit}, **limits)


class PolicyParams(BaseModel):
    """Base of a policy's parameter model: unknown parameters are errors; values are final;
    a boolean is not a number (``{"interval_s": true}`` is refused, not taken as 1 s)."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    @field_validator("*", mode="before")
    @classmethod
    def _no_booleans_for_numbers(cls, value: Any, info: ValidationInfo) -> Any:
        field = cls.model_fields.get(info.field_name or "")
        if isinstance(value, bool) and field is not None and field.annotation is not bool:
            raise ValueError(f"expected a {_type_name(field.annotation, _is_duration(field))}, "
                             f"got the boolean {str(value).lower()}")  # fmt: skip
        return value


# --- the building blocks ---------------------------------------------------------------------
class NoneParams(PolicyParams):
    """``none``: the raw chip."""

    compensation: Compensation = _param(None, _COMPENSATION_DOC)


class GDCParams(PolicyParams):
    """``gdc``: global drift compensation, no correction."""

    compensation: Compensation = _param("gdc", _COMPENSATION_DOC)


class _Verified(GDCParams):
    """What every correcting policy shares: how a correction job verifies its devices, and
    how inference compensates drift around the corrections."""

    compensation: Compensation = _param("per_column", _COMPENSATION_DOC)
    recalibrate: bool = _param(
        True,
        "after a correction, re-take the drift compensation reference of the columns it "
        "rewrote whole",
    )
    tolerance: float = _param(
        0.05, "a corrected device is done when within this of its level", "g_max", gt=0, le=1
    )
    max_iterations: int = _param(
        2, "program-and-verify steps of a job before a device is reported failed", ge=1, le=1000
    )
    verify_reads: int = _param(1, "reads averaged per verify step", ge=1, le=100)
    loop: Literal["twin", "steps"] = _param(
        "twin", "twin: each job's program-and-verify loop runs in the twin in one call "
        "(ProgramVerify, as on die); steps: the pulse generator drives it one twin call per "
        "step (firmware prototyping; same physics and outcomes)"
    )  # fmt: skip


class PeriodicRefreshParams(_Verified):
    """``periodic_refresh``: re-program every device every ``interval_s``, no probing."""

    interval_s: Seconds = _param(DAY_S, "time between wake-ups", "s", ge=MIN_INTERVAL_S)


class _Probing(_Verified):
    """What the policies that probe share: how a job pulses, and how much a probe reads."""

    method: Literal["auto", "pulse", "program"] = _param(
        "auto", "auto: SET pulses where they land within tolerance, else re-program; "
        "pulse: re-program only on overshoot; program: always re-program"
    )  # fmt: skip
    rows_fraction: float | None = _param(
        None,
        "share of each tile's rows probed per wake-up, round-robin (none: the controller's)",
        gt=0,
        le=1,
    )


class _Checked(_Probing):
    """What the probing policies share: which devices a wake-up corrects, and how."""

    threshold: float = _param(
        0.05,
        "correct a device further than this from its level (scope=tile: when the tile's "
        "mean |y_t - y_0| exceeds it)",
        "g_max",
        gt=0,
    )
    scope: Literal["device", "tile"] = _param(
        "device", "device: each device on its own; tile: a tile's drift metric decides"
    )
    rewrite: Literal["columns", "tile", "devices", "matched"] = _param(
        "columns",
        "what a correction rewrites: columns: every device of each column with a device to "
        "correct (its devices then share their age: per-column compensation stays right); "
        "tile: every device of such a tile; devices: only those devices; matched: only those, "
        "to their level times the drift of their compensation group",
    )
    expected_drift: bool = _param(
        False, "divide each read by the drift expected for its device's age and level first"
    )
    pairs: Literal["all", "lsp"] = _param(
        "all",
        "on a chip with several pairs per weight: all: every pair's devices back to their own "
        "targets (a device of pair k counts F^k times against the threshold); lsp: only the "
        "least significant pair is written, its devices retargeted to absorb the whole "
        "weight's error (small SET steps on one device of each pair where they can); "
        "judged on raw reads of every pair, so not with expected_drift or scope=tile",
    )

    @field_validator("pairs")
    @classmethod
    def _lsp_reads_raw(cls, pairs: str, info: ValidationInfo) -> str:
        # lsp.py judges whole weights on raw reads: a drift-aware or tile-wide check would
        # be silently ignored (a drift_aware run with pairs: lsp equalled threshold's).
        if pairs == "lsp" and info.data.get("expected_drift"):
            raise ValueError("lsp judges each weight on raw reads: set expected_drift: false "
                             "(drift_aware and adaptive default to true)")  # fmt: skip
        if pairs == "lsp" and info.data.get("scope") == "tile":
            raise ValueError("lsp judges each weight on its own: scope must be device")
        return pairs


class ThresholdParams(_Checked):
    """``threshold``: the paper's check every ``interval_s``."""

    interval_s: Seconds = _param(3600.0, "time between wake-ups", "s", ge=MIN_INTERVAL_S)


class DriftAwareParams(ThresholdParams):
    """``drift_aware``: ``threshold`` on reads divided by the drift expected."""

    expected_drift: bool = _param(
        True, "divide each read by the drift expected for its device's age and level first"
    )


class AdaptiveParams(_Checked):
    """``adaptive``: drift-aware checks that thin out as the devices age."""

    base_interval_s: Seconds = _param(
        3600.0, "interval right after a write; it grows with the log of the devices' age", "s",
        ge=MIN_INTERVAL_S,
    )  # fmt: skip
    max_interval_s: Seconds = _param(
        30 * DAY_S, "longest interval between checks", "s", ge=MIN_INTERVAL_S
    )
    growth: float = _param(
        1.0, "interval = base_interval_s * (1 + growth * ln(1 + age / base_interval_s))", ge=0
    )
    expected_drift: bool = _param(
        True, "divide each read by the drift expected for its device's age and level first"
    )


class BudgetParams(ThresholdParams):
    """``budget``: threshold checks within an energy budget per day, worst devices first."""

    budget_pj_per_day: float = _param(
        1e6, "correction energy allowed in any 24 h (twin + controller)", "pJ/day", gt=0
    )
    initial_pj_per_device: float = _param(
        200.0, "estimated cost of correcting one device before the first job has run", "pJ",
        gt=0,
    )  # fmt: skip


class ColumnRefreshParams(_Probing):
    """``column_refresh``: rewrite whole the columns whose compensated error exceeds
    ``threshold``."""

    interval_s: Seconds = _param(DAY_S, "time between wake-ups", "s", ge=MIN_INTERVAL_S)
    threshold: float = _param(
        0.05,
        "rewrite a column whose rms weight error, once compensated as inference compensates "
        "it, exceeds this (baseline: the part of it drift added since the column's last "
        "rewrite)",
        "g_max",
        gt=0,
    )
    baseline: bool = _param(
        True,
        "count only the error drift added since a column's last rewrite, sqrt(e^2 - e0^2), "
        "e0 its error at the first check after that rewrite: errors a rewrite cannot remove "
        "(a device saturating below its level, the read noise) trigger nothing",
    )


# --- the models as data ----------------------------------------------------------------------
@dataclass(frozen=True)
class ParameterDoc:
    """One parameter as a reader (or a client over gRPC) sees it: all plain strings/values."""

    name: str
    type: str
    unit: str
    default: Any
    default_text: str
    description: str


def _type_name(annotation: Any, duration: bool) -> str:
    if duration:
        return "duration"
    args = typing.get_args(annotation)
    origin = typing.get_origin(annotation)
    if origin is Annotated:
        return _type_name(args[0], False)
    if origin in (typing.Union, types.UnionType):
        names = [_type_name(a, False) for a in args if a is not type(None)]
        return " | ".join(names) + (" | none" if type(None) in args else "")
    if origin is Literal:
        return " | ".join(str(a) for a in args)
    return {float: "number", int: "integer", bool: "boolean", str: "string"}.get(
        annotation, getattr(annotation, "__name__", str(annotation))
    )


def _number(value: float) -> str:
    """``0.05``, ``200``, ``1e6``."""
    return f"{value:g}".replace("e+0", "e").replace("e+", "e").replace("e-0", "e-")


def _is_duration(field: Any) -> bool:
    return any(isinstance(m, WithJsonSchema) and m.json_schema is _DURATION_JSON
               for m in field.metadata)  # fmt: skip


def field_order(model: type[BaseModel]) -> list[str]:
    """A model's fields, most specific first: the policy's own, then what it shares."""
    out: list[str] = []
    for cls in model.__mro__:
        for name in getattr(cls, "__annotations__", {}):
            if name in model.model_fields and name not in out:
                out.append(name)
    return out


def parameter_docs(model: type[BaseModel]) -> list[ParameterDoc]:
    """Every parameter of ``model``: name, type, unit, default and meaning."""
    docs = []
    for name in field_order(model):
        field = model.model_fields[name]
        extra = field.json_schema_extra if isinstance(field.json_schema_extra, dict) else {}
        duration = _is_duration(field)
        default = field.default
        if default is None:
            text = "none"
        elif duration and isinstance(default, float) and math.isfinite(default):
            text = format_duration(default)
        else:
            text = _number(default) if isinstance(default, float) else str(default).lower()
        docs.append(ParameterDoc(
            name=name, type=_type_name(field.annotation, duration), unit=str(extra.get("unit", "")),
            default=default, default_text=text, description=field.description or "",
        ))  # fmt: skip
    return docs


__all__ = [
    "AdaptiveParams",
    "BudgetParams",
    "ColumnRefreshParams",
    "Compensation",
    "DriftAwareParams",
    "GDCParams",
    "NoneParams",
    "ParameterDoc",
    "PeriodicRefreshParams",
    "PolicyParams",
    "Seconds",
    "ThresholdParams",
    "field_order",
    "parameter_docs",
]
