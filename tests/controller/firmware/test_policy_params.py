"""The built-in policies' parameter models: validation, suggestions, durations, the catalogue."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from controller.firmware.policies import (
    BUILTIN,
    PARAMS,
    AdaptivePolicy,
    BudgetPolicy,
    PeriodicRefreshPolicy,
    PolicyParamsInvalid,
    load_policy,
    policy_catalogue,
)

README = Path(__file__).resolve().parents[3] / "README.md"


def test_every_builtin_has_a_parameter_model_whose_defaults_it_uses() -> None:
    """Each built-in names its model, and a policy built without parameters holds the model's
    defaults (the model is the one place a default is written)."""
    assert set(PARAMS) == set(BUILTIN)
    for name, model in PARAMS.items():
        policy = load_policy(name)
        assert policy.params == model()
        assert policy.compensation == model().compensation
    threshold = load_policy("threshold")
    assert (threshold.interval_s, threshold.threshold, threshold.scheme.tolerance) == (
        3600.0, 0.05, 0.05)  # fmt: skip
    assert load_policy("drift_aware").expected_drift is True
    adaptive = load_policy("adaptive", {"base_interval_s": "2h", "max_interval_s": "1w"})
    assert isinstance(adaptive, AdaptivePolicy)
    assert (adaptive.interval_s, adaptive.max_interval_s) == (7200.0, 604800.0)


def test_durations_and_exponent_strings_are_read_as_numbers() -> None:
    """Duration parameters take duration strings; numbers written as strings are numbers."""
    budget = load_policy("budget", {"budget_pj_per_day": "2.0e5", "interval_s": "6h"})
    assert isinstance(budget, BudgetPolicy)
    assert budget.budget_pj_per_day == 200000.0 and budget.interval_s == 21600.0
    refresh = load_policy("periodic_refresh", {"interval_s": "1d", "tolerance": 0.1})
    assert isinstance(refresh, PeriodicRefreshPolicy)
    assert refresh.scheme.method == "program" and refresh.scheme.rewrite_all
    assert refresh.interval_s == 86400.0 and refresh.scheme.tolerance == 0.1
    assert load_policy("gdc", {"compensation": "none"}).compensation is None


@pytest.mark.parametrize(
    ("name", "params", "problems"),
    [
        ("threshold", {"treshold": 0.1}, [("treshold", "did you mean 'threshold'?")]),
        ("budget", {"budget_pj_per_dya": 1e5}, [("budget_pj_per_dya", "did you mean 'budget_pj_per_day'?")]),
        ("threshold", {"interval_s": "-6h", "scope": "chip"},
         [("interval_s", "negative"), ("scope", "'device' or 'tile'")]),
        ("threshold", {"interval_s": 0}, [("interval_s", "greater than or equal to 0.1")]),
        ("threshold", {"interval_s": 1e-6}, [("interval_s", "greater than or equal to 0.1")]),
        ("threshold", {"interval_s": True, "threshold": False},
         [("interval_s", "got the boolean true"), ("threshold", "got the boolean false")]),
        ("threshold", {"interval_s": float("inf")}, [("interval_s", "not finite")]),
        ("adaptive", {"interval_s": 60},
         [("interval_s", "did you mean 'max_interval_s' or 'base_interval_s'?")]),
        ("periodic_refresh", {"method": "auto"}, [("method", "unknown parameter")]),
        ("gdc", {"compensation": "x"}, [("compensation", "'gdc'")]),
        ("threshold", {"rows_fraction": 1.5}, [("rows_fraction", "less than or equal to 1")]),
        ("drift_aware", {"pairs": "lsp"}, [("pairs", "set expected_drift: false")]),
        ("threshold", {"pairs": "lsp", "scope": "tile"}, [("pairs", "scope must be device")]),
    ],
)  # fmt: skip
def test_bad_parameters_are_named_each(name: str, params: dict, problems: list) -> None:
    """Every parameter at fault is named with what is wrong, in the order given; a misspelt
    name gets the closest known one."""
    with pytest.raises(PolicyParamsInvalid) as info:
        load_policy(name, params)
    got = info.value.problems
    assert [p for p, _ in got] == [p for p, _ in problems], got
    for (_, msg), (_, fragment) in zip(got, problems, strict=True):
        assert fragment in msg, got


def test_a_user_policy_without_a_model_gets_suggestions_from_its_signature() -> None:
    """A user policy's unknown keyword is refused before its constructor runs, with the
    closest name its constructor takes."""
    with pytest.raises(PolicyParamsInvalid, match="did you mean 'min_level'"):
        load_policy("scenarios.examples.level_guard:LevelGuard", {"min_levle": 4})


def test_the_catalogue_is_plain_data_with_units() -> None:
    """policy_catalogue() serialises as JSON and says each parameter's type, unit, default."""
    catalogue = json.loads(json.dumps(policy_catalogue()))
    assert [p["name"] for p in catalogue] == list(BUILTIN)
    budget = {
        q["name"]: q for q in next(p for p in catalogue if p["name"] == "budget")["parameters"]
    }
    assert budget["budget_pj_per_day"]["unit"] == "pJ/day"
    assert budget["interval_s"] | {"description": ""} == {
        "name": "interval_s", "type": "duration", "unit": "s", "default": 3600.0,
        "default_text": "1h", "description": ""}  # fmt: skip
    assert all(q["description"] for p in catalogue for q in p["parameters"])


def test_readme_lists_every_parameter() -> None:
    """The README's tables of policy parameters are the catalogue's (generated, kept true)."""
    from controller.scenario.commands import policies_markdown

    text = README.read_text()
    assert policies_markdown() in text, (
        "regenerate with controller.scenario.commands.policies_markdown()"
    )
    assert "`pcm-twin policies [NAME]`" in text
