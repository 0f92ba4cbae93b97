"""pcm-twin schema and validate."""

from __future__ import annotations

import json
import re
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


COMMANDS = [["run"], ["sweep"], ["validate"], ["schema"], ["policies"], ["demo"], ["pulse-curve"],
            ["devices"], ["twin", "serve"], ["chip", "serve"], ["twin"], ["chip"], []]  # fmt: skip


def test_help_names_values_not_python_types() -> None:
    """No --help shows a flag as taking a <bool> or a list as <list[...]>; run and sweep name
    their scenario FILE the same way (optional for run, which also resumes)."""
    runner = CliRunner()
    for cmd in COMMANDS:
        res = runner.invoke(app, [*cmd, "--help"], terminal_width=100)
        assert res.exit_code == 0, (cmd, res.output)
        assert "<bool>" not in res.output and "<list[" not in res.output, (cmd, res.output)
    run = runner.invoke(app, ["run", "--help"], terminal_width=100).output
    sweep = runner.invoke(app, ["sweep", "--help"], terminal_width=100).output
    assert re.search(r" run \[OPTIONS\] \[FILE\]\s*\n", run)
    assert re.search(r" sweep \[OPTIONS\] FILE\s*\n", sweep)
    for text in (run, sweep):
        assert "--workers" in text and "N " in text and "(default: CPUs)" in text


def test_version() -> None:
    """`pcm-twin --version` prints the installed version."""
    from importlib.metadata import version

    res = CliRunner().invoke(app, ["--version"])
    assert res.exit_code == 0 and res.output == f"pcm-twin {version('pcm-twin')}\n"


def test_policies_lists_parameters_with_units_and_defaults() -> None:
    """`pcm-twin policies budget` shows its parameters with type, unit, default and meaning;
    --json gives the catalogue's data; an unknown name exits 1."""
    runner = CliRunner()
    res = runner.invoke(app, ["policies", "budget"], env={"COLUMNS": "80"})
    assert res.exit_code == 0
    assert max(len(line) for line in res.output.splitlines()) <= 80
    row = next(ln for ln in res.output.splitlines() if ln.startswith("budget_pj_per_day"))
    assert row.split()[:4] == ["budget_pj_per_day", "number", "(pJ/day)", "1e6"]
    data = json.loads(runner.invoke(app, ["policies", "--json", "threshold"]).output)
    assert [p["name"] for p in data] == ["threshold"]
    assert runner.invoke(app, ["policies", "tresholdd"]).exit_code == 1


def test_the_command_line_keeps_grpc_info_logs_off_the_terminal() -> None:
    """Importing the command line sets GRPC_VERBOSITY=ERROR unless the user set it (gRPC's
    INFO lines such as "Got goaway" are for debugging, not a researcher's terminal); worker
    processes inherit it."""
    import os
    import subprocess
    import sys

    code = "import os, controller.cli; print(os.environ['GRPC_VERBOSITY'])"
    env = {k: v for k, v in os.environ.items() if k != "GRPC_VERBOSITY"}
    run = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert run.stdout.strip() == "ERROR", run.stderr
    env["GRPC_VERBOSITY"] = "INFO"
    run = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert run.stdout.strip() == "INFO", run.stderr


def test_devices_lists_the_four_families_with_sources() -> None:
    """`pcm-twin devices` prints every family, its aihwkit model and sources; --json the
    parameters, each valid as a chip's device config."""
    import json

    from device_twin.config import ChipConfig

    res = CliRunner().invoke(app, ["devices"])
    assert res.exit_code == 0, res.output
    for name in ("pcm", "pcm_hermes", "reram_wan2022", "reram_cmo", "PCMLike", "Hermes",
                 "ReRamWan2022", "ReRamCMO", "NVSim"):  # fmt: skip
        assert name in res.output
    res = CliRunner().invoke(app, ["devices", "--json"])
    families = json.loads(res.output)
    assert [f["family"] for f in families] == ["pcm", "pcm_hermes", "reram_wan2022", "reram_cmo"]
    for f in families:
        cfg = ChipConfig(device={"family": f["family"], **f["parameters"]})
        assert cfg.g_max_us == f["g_max_us"]


def test_validate_loads_no_torch_aihwkit_pandas_or_grpc() -> None:
    """`pcm-twin validate` on the paper's study (every shipped policy, eight variants) loads
    none of torch, aihwkit, pandas, scipy, matplotlib, gRPC or SimPy: validating is reading
    YAML and pydantic models (it took 5-15 s when it loaded them)."""
    import subprocess
    import sys

    heavy = ("torch", "aihwkit", "pandas", "scipy", "matplotlib", "grpc", "simpy")
    code = ("import sys\nfrom controller.cli import app\n"
            f"sys.argv = ['pcm-twin', 'validate', {str(REPO / 'scenarios' / 'paper_mnist_selfcorrect.yaml')!r}]\n"
            "try:\n    app()\nexcept SystemExit as exc:\n    assert exc.code == 0, exc.code\n"
            f"print(sorted(m for m in {heavy!r} if m in sys.modules))")  # fmt: skip
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == "[]", out.stdout + out.stderr
