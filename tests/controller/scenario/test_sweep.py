"""pcm-twin sweep: grids, Dask, resume after interruption, the combined table and front."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from controller.scenario.loader import ScenarioInvalid
from controller.scenario.plots import pareto_front
from controller.scenario.results import COMPLETE_MARKER
from controller.scenario.sweep import parse_grid, point_name, run_sweep, set_dotted

PNG = b"\x89PNG\r\n\x1a\n"


def test_parse_grid_reads_yaml_scalars() -> None:
    """Grid values are YAML scalars: numbers, strings with units, booleans."""
    axis = parse_grid("controller.policy.params.interval_s=1h,6h, 1d")
    assert axis.key == "controller.policy.params.interval_s"
    assert axis.values == ("1h", "6h", "1d")
    assert parse_grid("a.b=0.05,1,true").values == (0.05, 1, True)
    with pytest.raises(ValueError, match="KEY=V1"):
        parse_grid("no-values")


def test_set_dotted_and_point_names() -> None:
    """Dotted keys set nested values on a copy; folder names use the keys' last parts."""
    data = {"controller": {"policy": {"name": "threshold"}}}
    out = set_dotted(data, "controller.policy.params.threshold", 0.1)
    assert out["controller"]["policy"] == {"name": "threshold", "params": {"threshold": 0.1}}
    assert "params" not in data["controller"]["policy"]
    with pytest.raises(ValueError, match="not a mapping"):
        set_dotted(data, "controller.policy.name.x", 1)
    assert (
        point_name({"a.interval_s": "1h", "b.threshold": 0.05}) == "interval_s=1h__threshold=0.05"
    )


def test_pareto_front() -> None:
    """The front holds exactly the points no other point beats on both energy and loss."""
    energy = [10.0, 5.0, 20.0, 5.0, 1.0, float("nan")]
    loss = [1.0, 2.0, 0.5, 3.0, 4.0, 0.0]
    assert pareto_front(energy, loss) == [2, 0, 1, 4]


def test_a_bad_grid_point_fails_before_anything_runs(tmp_path: Path, tiny_scenario: dict) -> None:
    """A grid value the schema refuses is reported with its point, and nothing runs."""
    with pytest.raises(ScenarioInvalid, match=r"\[threshold=-1\]"):
        run_sweep(tiny_scenario, [parse_grid("controller.policy.params.threshold=0.1,-1")],
                  tmp_path / "sweep")  # fmt: skip
    assert not (tmp_path / "sweep" / "runs").exists()


def test_sweep_on_dask_resumes_and_draws_the_front(
    tmp_path: Path, tiny_scenario: dict[str, Any]
) -> None:
    """A sweep runs on a Dask LocalCluster, writes the combined table and the front plot, and,
    run again after an interruption, re-runs only the run that had not completed."""
    from dask.distributed import Client, LocalCluster

    out = tmp_path / "sweep"
    grid = [parse_grid("controller.policy.params.threshold=0.03,0.3")]
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False,
                      dashboard_address=None) as cluster, Client(cluster) as client:  # fmt: skip
        report = run_sweep(tiny_scenario, grid, out, dask=client)
        assert sorted(report.ran) == ["threshold=0.03", "threshold=0.3"]
        assert report.failed == {}
        table = report.table
        assert table is not None and len(table) == 2
        assert (out / "sweep.csv").is_file() and (out / "sweep.parquet").is_file()
        assert (out / "front.png").read_bytes()[:8] == PNG
        tight, loose = (table.set_index("run").loc[n] for n in ("threshold=0.03", "threshold=0.3"))
        assert tight["upkeep_energy_pj"] > loose["upkeep_energy_pj"]
        for name in report.ran:
            run = out / "runs" / name
            assert (run / COMPLETE_MARKER).is_file()
            assert yaml.safe_load((run / "scenario.yaml").read_text())["controller"]["policy"][
                "params"]["threshold"] == float(name.split("=")[1])  # fmt: skip

        # interruption: one run lost its marker (it died before writing it last)
        kept = out / "runs" / "threshold=0.3"
        kept_summary = (kept / "summary.json").stat().st_mtime_ns
        (out / "runs" / "threshold=0.03" / COMPLETE_MARKER).unlink()
        again = run_sweep(tiny_scenario, grid, out, dask=cluster.scheduler_address)
    assert again.ran == ["threshold=0.03"] and again.skipped == ["threshold=0.3"]
    assert (kept / "summary.json").stat().st_mtime_ns == kept_summary
    assert len(again.table) == 2
    info = json.loads((out / "sweep.json").read_text())
    assert info["ran"] == ["threshold=0.03"] and info["skipped"] == ["threshold=0.3"]


def test_a_changed_scenario_reruns_finished_points(tmp_path: Path, tiny_scenario: dict) -> None:
    """A complete run whose scenario has changed since is not reused: its marker holds the
    scenario's hash."""
    out = tmp_path / "sweep"
    grid = [parse_grid("controller.policy.params.threshold=0.3")]
    assert run_sweep(tiny_scenario, grid, out).ran == ["threshold=0.3"]
    assert run_sweep(tiny_scenario, grid, out).skipped == ["threshold=0.3"]
    changed = {**tiny_scenario, "evaluation": {"times": ["1s", "1h", "6h"]}}
    assert run_sweep(changed, grid, out).ran == ["threshold=0.3"]
