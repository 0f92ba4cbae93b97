"""pcm-twin schema and validate."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from controller.cli import app
from tests.controller.scenario.conftest import REPO

TOP_LEVEL = {"name", "description", "seed", "seeds", "duration", "evaluation", "workload",
             "training", "mapping", "chip", "controller", "variants", "sweep"}  # fmt: skip


def test_schema_prints_the_json_schema() -> None:
    """`pcm-twin schema` prints a JSON Schema with every top-level section, closed to
    unknown keys."""
    res = CliRunner().invoke(app, ["schema"])
    assert res.exit_code == 0
    schema = json.loads(res.output)
    assert set(schema["properties"]) == TOP_LEVEL
    assert schema["additionalProperties"] is False
    assert set(schema["required"]) == {"name", "duration", "evaluation", "workload"}
    variant = schema["properties"]["variants"]["additionalProperties"]
    assert "name" not in variant["properties"] and "controller" in variant["properties"]


def test_validate_accepts_the_shipped_scenarios() -> None:
    """Every shipped scenario validates."""
    files = sorted(str(p) for p in (REPO / "scenarios").glob("*.yaml"))
    assert len(files) >= 3
    res = CliRunner().invoke(app, ["validate", *files])
    assert res.exit_code == 0, res.output
    assert res.output.count(": ok") == len(files)


def test_validate_lists_every_problem(tmp_path: Path) -> None:
    """`pcm-twin validate` prints each problem as file:line: path: message and exits 1."""
    bad = tmp_path / "bad.yaml"
    text = (REPO / "scenarios" / "smoke.yaml").read_text()
    bad.write_text(
        text.replace("seeds: 2", "seeds: 0").replace("interval_s: 6h", "interval_s: -6h")
    )
    res = CliRunner().invoke(app, ["validate", str(bad)])
    assert res.exit_code == 1
    lines = [ln for ln in res.output.splitlines() if ln.startswith(f"  {bad}:")]
    assert len(lines) == 2, res.output
    assert f"{bad}:6: seeds:" in lines[0]
    assert (
        "variants.mult_threshold.controller.policy.params.interval_s: duration '-6h' is negative"
        in lines[1]
    )


def test_shipped_scenarios_conform_to_the_json_schema() -> None:
    """The exported JSON Schema accepts every shipped scenario (shorthands included) and
    refuses an unknown key, as pydantic does."""
    import jsonschema
    import yaml

    from controller.scenario.schema import scenario_json_schema

    validator = jsonschema.Draft202012Validator(scenario_json_schema())
    for path in sorted((REPO / "scenarios").glob("*.yaml")):
        data = yaml.safe_load(path.read_text())
        assert list(validator.iter_errors(data)) == [], path
        data["chip"]["colour"] = "blue"
        assert [list(e.absolute_path) for e in validator.iter_errors(data)] == [["chip"]]
