"""Correction policies: the protocol firmware code implements, the built-ins, their parameter
models, and the loader.

``load_policy("threshold", {"interval_s": "1h"})`` builds a built-in policy;
``load_policy("my_pkg.my_module:MyPolicy", {...})`` imports a user policy by dotted path or
``load_policy("path/to/file.py:MyPolicy")`` by file, and calls its constructor with the
parameters. A relative file path, and a module not found on ``sys.path``, are looked up in
``base_dir`` (a scenario's folder), then in the working directory.

Parameters are checked before the policy is built: a built-in's (or a user policy's with a
``Params`` model) by its model (:mod:`~controller.firmware.policies.params`), every problem
named with its parameter and a misspelt name answered with the closest one
(:class:`PolicyParamsInvalid`). :data:`PARAMS` maps each built-in name to its model and
:func:`policy_catalogue` gives all of them as plain data (``pcm-twin policies``, a server).
See :mod:`controller.firmware.policies.base` for the protocol.
"""

from __future__ import annotations

import contextlib
import difflib
import importlib
import importlib.util
import inspect
import os
import re
import sys
from dataclasses import asdict
from pathlib import Path
from types import ModuleType
from typing import Any

from pydantic import BaseModel, ValidationError

from controller.firmware.policies.base import (
    DIFF,
    NEG,
    POS,
    BasePolicy,
    ChipView,
    CorrectionJob,
    JobOutcome,
    MonitorReport,
    Policy,
    ProbePlan,
    PulseScheme,
    TileReading,
    expected_drift_factor,
    flat_indices,
    mu_nu,
)
from controller.firmware.policies.budget import BudgetPolicy
from controller.firmware.policies.builtin import (
    AdaptivePolicy,
    ColumnRefreshPolicy,
    DriftAwarePolicy,
    GDCPolicy,
    NonePolicy,
    PeriodicRefreshPolicy,
    ThresholdPolicy,
)
from controller.firmware.policies.params import PolicyParams, field_order, parameter_docs

BUILTIN: dict[str, type] = {
    "none": NonePolicy,
    "gdc": GDCPolicy,
    "periodic_refresh": PeriodicRefreshPolicy,
    "threshold": ThresholdPolicy,
    "drift_aware": DriftAwarePolicy,
    "adaptive": AdaptivePolicy,
    "budget": BudgetPolicy,
    "column_refresh": ColumnRefreshPolicy,
}

#: Each built-in policy's parameter model, by name (what a server lists and a schema exports).
PARAMS: dict[str, type[PolicyParams]] = {name: cls.Params for name, cls in BUILTIN.items()}

_METHODS = ("next_wake_s", "probe_plan", "decide", "pulse_scheme")


class PolicyLoadError(ValueError):
    """A policy name or dotted path that cannot be loaded, or parameters it refuses."""


class PolicyParamsInvalid(PolicyLoadError):
    """Parameters a policy refuses; ``problems`` holds (parameter, what is wrong) for each."""

    def __init__(self, spec: str, problems: list[tuple[str, str]]) -> None:
        self.spec = spec
        self.problems = problems
        said = "; ".join(f"{name}: {msg}" if name else msg for name, msg in problems)
        super().__init__(f"policy {spec!r}: {said}")


def _is_path(module_name: str) -> bool:
    return module_name.endswith(".py") or os.sep in module_name or "/" in module_name


def _import(module_name: str, base_dir: Path | None = None) -> ModuleType:
    """Import a module by dotted name or by file path; relative paths and modules not on
    ``sys.path`` are looked up in ``base_dir``, then in the working directory."""
    if _is_path(module_name):
        path = Path(module_name)
        if not path.is_absolute():
            candidates = [d / path for d in (base_dir, Path.cwd()) if d is not None]
            path = next((c for c in candidates if c.is_file()), candidates[0])
        path = path.resolve()
        if not path.is_file():
            raise FileNotFoundError(f"no such file: {path}")
        name = f"_pcm_twin_policy_{path.stem}_{abs(hash(str(path)))}"
        if name in sys.modules:
            return sys.modules[name]
        spec = importlib.util.spec_from_file_location(name, path)
        if spec is None or spec.loader is None:
            raise ImportError(f"cannot load {path}")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
        return module
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        # not on sys.path (`pcm-twin` runs from .venv/bin): "examples.x" may be the scenario
        # folder's, "scenarios.examples.x" the working directory's
        if exc.name is None or not f"{module_name}.".startswith(f"{exc.name}."):
            raise  # the module was found, and something it imports was not
        top = module_name.split(".")[0]
        for folder in (base_dir, Path.cwd()):
            if folder is None or str(folder.resolve()) in sys.path:
                continue
            if (folder / top).is_dir() or (folder / f"{top}.py").is_file():
                sys.path.append(str(folder.resolve()))
                return importlib.import_module(module_name)
        raise


def resolve_policy_class(spec: str, base_dir: str | Path | None = None) -> type:
    """The class named by a built-in name or a ``package.module:Class`` path (a relative file
    path or a module not on ``sys.path`` is looked up in ``base_dir`` first)."""
    if spec in BUILTIN:
        return BUILTIN[spec]
    if ":" not in spec:
        close = difflib.get_close_matches(spec, BUILTIN, n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise PolicyLoadError(
            f"unknown policy {spec!r}: {hint}expected one of {', '.join(BUILTIN)} "
            "or a dotted path package.module:Class"
        )
    module_name, _, attr = spec.rpartition(":")
    try:
        module = _import(module_name, Path(base_dir) if base_dir is not None else None)
    except Exception as exc:
        raise PolicyLoadError(f"policy {spec!r}: cannot import {module_name!r}: {exc}") from exc
    obj: Any = module
    for part in attr.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            raise PolicyLoadError(f"policy {spec!r}: {module_name!r} has no {attr!r}")
    if not callable(obj):
        raise PolicyLoadError(f"policy {spec!r}: {attr!r} is not a class or factory")
    return obj


def params_model(cls: Any) -> type[BaseModel] | None:
    """The parameter model a policy class declares (``Params``), if any."""
    model = getattr(cls, "Params", None)
    return model if isinstance(model, type) and issubclass(model, BaseModel) else None


def _suggest(name: str, known: list[str]) -> str:
    """An unknown parameter: the closest known names, if any, and every known one."""
    listed = f"the parameters are {', '.join(known) or '(none)'}"
    close = difflib.get_close_matches(name, known, n=2, cutoff=0.6)
    if close:
        return f"unknown parameter; did you mean {' or '.join(map(repr, close))}? ({listed})"
    return f"unknown parameter; {listed}"


def _pydantic_message(err: Any) -> str:
    msg = str(err.get("msg", "invalid"))
    for prefix in ("Value error, ", "Assertion failed, "):
        msg = msg.removeprefix(prefix)
    return msg


def _constructor_names(cls: Any) -> list[str] | None:
    """The keyword parameters of a constructor without a model (None: it takes any)."""
    try:
        sig = inspect.signature(cls)
    except (TypeError, ValueError):
        return None
    kinds = {p.kind for p in sig.parameters.values()}
    if inspect.Parameter.VAR_KEYWORD in kinds:
        return None
    return [n for n, p in sig.parameters.items()
            if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]  # fmt: skip


def check_params(spec: str, cls: Any, params: dict[str, Any]) -> dict[str, Any]:
    """``params`` as the policy will get them (durations in seconds, numbers as numbers),
    or :class:`PolicyParamsInvalid` naming every parameter at fault. Only a policy with a
    parameter model is checked field by field; another one's unknown names are caught from
    its constructor's signature."""
    model = params_model(cls)
    if model is None:
        known = _constructor_names(cls)
        if known is not None:
            bad = [(str(k), _suggest(str(k), known)) for k in params if k not in known]
            if bad:
                raise PolicyParamsInvalid(spec, bad)
        return dict(params)
    try:
        validated = model.model_validate(params)
    except ValidationError as exc:
        known = field_order(model)
        problems: list[tuple[str, str]] = []
        for err in exc.errors(include_url=False):
            name = str(err["loc"][0]) if err["loc"] else ""
            msg = _suggest(name, known) if err["type"] == "extra_forbidden" else (
                _pydantic_message(err))  # fmt: skip
            if (name, msg) not in problems:
                problems.append((name, msg))
        given = list(params)
        problems.sort(key=lambda p: given.index(p[0]) if p[0] in given else len(given))
        raise PolicyParamsInvalid(spec, problems) from None
    return validated.model_dump(include=set(params))


def load_policy(
    spec: str, params: dict[str, Any] | None = None, base_dir: str | Path | None = None
) -> Policy:
    """Build a policy from its name or dotted path and its parameters (checked first, see
    :func:`check_params`)."""
    cls = resolve_policy_class(spec, base_dir)
    checked = check_params(spec, cls, params or {})
    try:
        policy = cls(**checked)
    except (TypeError, ValueError) as exc:
        raise _refused(spec, params or {}, exc) from exc
    missing = [m for m in _METHODS if not callable(getattr(policy, m, None))]
    if missing:
        raise PolicyLoadError(
            f"policy {spec!r} does not implement {', '.join(missing)} "
            "(subclass controller.firmware.policies.BasePolicy for defaults)"
        )
    if not hasattr(policy, "name") or not isinstance(policy.name, str):
        with contextlib.suppress(AttributeError):
            policy.name = spec
    return policy


def _refused(spec: str, params: dict[str, Any], exc: Exception) -> PolicyLoadError:
    """A constructor's own refusal, blamed on the parameter it names (or whose value it
    quotes: ``could not convert string to float: 'high'``) when there is one."""
    message = str(exc)
    for key in params:
        if re.search(rf"\b{re.escape(str(key))}\b", message):
            return PolicyParamsInvalid(spec, [(str(key), message)])
    for key, value in params.items():
        if repr(value) in message:
            return PolicyParamsInvalid(spec, [(str(key), message)])
    return PolicyLoadError(f"policy {spec!r} refused its parameters {params!r}: {message}")


def policy_catalogue() -> list[dict[str, Any]]:
    """Every built-in policy as plain data: name, what it does, and each parameter's name,
    type, unit, default and meaning (for ``pcm-twin policies`` and for servers)."""
    out = []
    for name, cls in BUILTIN.items():
        doc = inspect.getdoc(cls) or ""
        out.append({
            "name": name,
            "summary": doc.split("\n\n")[0].replace("\n", " "),
            "parameters": [asdict(d) for d in parameter_docs(PARAMS[name])],
        })  # fmt: skip
    return out


__all__ = [
    "BUILTIN",
    "DIFF",
    "NEG",
    "POS",
    "AdaptivePolicy",
    "BasePolicy",
    "BudgetPolicy",
    "ColumnRefreshPolicy",
    "ChipView",
    "CorrectionJob",
    "DriftAwarePolicy",
    "GDCPolicy",
    "JobOutcome",
    "MonitorReport",
    "PARAMS",
    "NonePolicy",
    "PeriodicRefreshPolicy",
    "Policy",
    "PolicyLoadError",
    "PolicyParams",
    "PolicyParamsInvalid",
    "ProbePlan",
    "PulseScheme",
    "ThresholdPolicy",
    "TileReading",
    "check_params",
    "expected_drift_factor",
    "flat_indices",
    "load_policy",
    "mu_nu",
    "params_model",
    "policy_catalogue",
    "resolve_policy_class",
]
