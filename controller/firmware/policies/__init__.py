"""Correction policies: the protocol firmware code implements, the built-ins, and the loader.

``load_policy("threshold", {"interval_s": 3600})`` builds a built-in policy;
``load_policy("my_pkg.my_module:MyPolicy", {...})`` imports a user policy by dotted path (the
working directory is searched too) or ``load_policy("path/to/file.py:MyPolicy")`` by file, and
calls its constructor with the parameters. See :mod:`controller.firmware.policies.base` for
the protocol.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import os
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

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
from controller.firmware.policies.builtin import (
    AdaptivePolicy,
    BudgetPolicy,
    DriftAwarePolicy,
    GDCPolicy,
    NonePolicy,
    PeriodicRefreshPolicy,
    ThresholdPolicy,
)

BUILTIN: dict[str, type] = {
    "none": NonePolicy,
    "gdc": GDCPolicy,
    "periodic_refresh": PeriodicRefreshPolicy,
    "threshold": ThresholdPolicy,
    "drift_aware": DriftAwarePolicy,
    "adaptive": AdaptivePolicy,
    "budget": BudgetPolicy,
}

_METHODS = ("next_wake_s", "probe_plan", "decide", "pulse_scheme")


class PolicyLoadError(ValueError):
    """A policy name or dotted path that cannot be loaded, or parameters it refuses."""


def _import(module_name: str) -> ModuleType:
    """Import a module by dotted name (trying the working directory too) or by file path."""
    if module_name.endswith(".py") or os.sep in module_name or "/" in module_name:
        path = Path(module_name).resolve()
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
    except ModuleNotFoundError:
        # `pcm-twin` runs from .venv/bin: let "scenarios.examples.x" mean the working directory's
        cwd = os.getcwd()
        if cwd in sys.path:
            raise
        sys.path.append(cwd)
        return importlib.import_module(module_name)


def resolve_policy_class(spec: str) -> type:
    """The class named by a built-in name or a ``package.module:Class`` path."""
    if spec in BUILTIN:
        return BUILTIN[spec]
    if ":" not in spec:
        raise PolicyLoadError(
            f"unknown policy {spec!r}: expected one of {', '.join(BUILTIN)} "
            "or a dotted path package.module:Class"
        )
    module_name, _, attr = spec.rpartition(":")
    try:
        module = _import(module_name)
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


def load_policy(spec: str, params: dict[str, Any] | None = None) -> Policy:
    """Build a policy from its name or dotted path and its parameters."""
    cls = resolve_policy_class(spec)
    try:
        policy = cls(**(params or {}))
    except (TypeError, ValueError) as exc:
        raise PolicyLoadError(f"policy {spec!r} refused its parameters {params!r}: {exc}") from exc
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


__all__ = [
    "BUILTIN",
    "DIFF",
    "NEG",
    "POS",
    "AdaptivePolicy",
    "BasePolicy",
    "BudgetPolicy",
    "ChipView",
    "CorrectionJob",
    "DriftAwarePolicy",
    "GDCPolicy",
    "JobOutcome",
    "MonitorReport",
    "NonePolicy",
    "PeriodicRefreshPolicy",
    "Policy",
    "PolicyLoadError",
    "ProbePlan",
    "PulseScheme",
    "ThresholdPolicy",
    "TileReading",
    "expected_drift_factor",
    "flat_indices",
    "load_policy",
    "mu_nu",
    "resolve_policy_class",
]
