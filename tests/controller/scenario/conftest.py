"""Shared pieces of the scenario tests: the smoke scenario and a tiny one for sweeps."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[3]
SMOKE = REPO / "scenarios" / "smoke.yaml"


@pytest.fixture
def tiny_scenario() -> dict[str, Any]:
    """The smallest real run: digits_mlp on one seed for six hours, threshold checks."""
    return {
        "name": "tiny",
        "seed": 5,
        "seeds": 1,
        "duration": "6h",
        "evaluation": {"times": ["1s", "6h"]},
        "workload": {"network": "digits_mlp", "test_images": 200},
        "training": {"digital": {"epochs": 15}},
        "mapping": {"quantiser": {"kind": "multiplicative", "annealing": {"n_steps": 40}}},
        "chip": {"tile_rows": 64, "tile_cols": 64},
        "controller": {"policy": {"name": "threshold",
                                  "params": {"interval_s": "2h", "threshold": 0.05}}},
    }  # fmt: skip


@pytest.fixture(scope="session")
def report_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished run folder for the report tests: two variants (no correction, threshold
    checks every 2 h) on two seeds over six hours, with its report.html."""
    from controller.scenario.loader import load_scenario
    from controller.scenario.runner import run_to_folder

    scenario = {
        "name": "report_demo",
        "description": "digits_mlp for six hours: GDC only vs threshold checks every 2 h",
        "seed": 5,
        "seeds": 2,
        "duration": "6h",
        "evaluation": {"times": ["1s", "1h", "2h", "6h"]},
        "workload": {"network": "digits_mlp", "test_images": 200},
        "training": {"digital": {"epochs": 15}},
        "mapping": {"quantiser": {"kind": "multiplicative", "annealing": {"n_steps": 40}}},
        "chip": {"tile_rows": 64, "tile_cols": 64},
        "controller": {"policy": {"name": "gdc"}},
        "variants": {
            "gdc": {},
            "threshold": {"controller": {"policy": {
                "name": "threshold", "params": {"interval_s": "2h", "threshold": 0.05}}}},
        },
    }  # fmt: skip
    out = tmp_path_factory.mktemp("report") / "report_demo"
    run_to_folder(load_scenario(scenario), out, progress=False, workers=1)
    return out


@pytest.fixture(scope="session")
def report_sweep(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished sweep folder of two points (threshold 0.05 and 0.2 on the tiny run)."""
    from controller.scenario.sweep import parse_grid, run_sweep

    scenario = {
        "name": "tiny_sweep", "seed": 5, "seeds": 1, "duration": "4h",
        "evaluation": {"times": ["1s", "4h"]},
        "workload": {"network": "digits_mlp", "test_images": 200},
        "training": {"digital": {"epochs": 15}},
        "mapping": {"quantiser": {"kind": "multiplicative", "annealing": {"n_steps": 40}}},
        "chip": {"tile_rows": 64, "tile_cols": 64},
        "controller": {"policy": {"name": "threshold", "params": {"interval_s": "2h"}}},
    }  # fmt: skip
    out = tmp_path_factory.mktemp("sweep") / "tiny_sweep"
    run_sweep(scenario, [parse_grid("controller.policy.params.threshold=0.05,0.2")], out,
              workers=1)  # fmt: skip
    return out
