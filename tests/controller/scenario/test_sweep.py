"""pcm-twin sweep: grids, Dask, resume after interruption, the combined table and front."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pandas as pd
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


def _fake_run(scenario: dict, out_dir: str, twin_address=None, policy_dir=None) -> dict:
    """A grid point's run folder as a real run leaves it (summary, COMPLETE), with made-up
    figures that depend on the point: fast enough to test what the sweep does with folders."""
    from controller.scenario.results import content_hash, dumps_json, mark_complete

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    th = scenario["controller"]["policy"]["params"]["threshold"]
    acc = [0.95, 0.95 - th]
    variant = {"accuracy_mean": acc, "accuracy_std": [0.01, 0.01], "accuracy_loss": th,
               "upkeep_energy_pj": 1e6 / th, "upkeep_energy_pj_std": 0.0, "corrections": 3.0,
               "correction_pulses": 10.0, "availability": 1.0}  # fmt: skip
    (out / "summary.json").write_text(dumps_json({"variants": {"base": variant}}))
    mark_complete(out, content_hash(scenario))
    return {"out_dir": out_dir, "host": "test"}


def test_a_smaller_grid_keeps_the_folders_other_points_in_its_table(
    tmp_path: Path, tiny_scenario: dict
) -> None:
    """Run again with a smaller grid into the same folder, the table still covers every
    complete point there (in_grid tells this grid's), and says which run folders it leaves
    out and why (a point made from another version of the scenario)."""
    out = tmp_path / "sweep"
    three = [parse_grid("controller.policy.params.threshold=0.02,0.05,0.1")]
    assert len(run_sweep(tiny_scenario, three, out, run_fn=_fake_run).table) == 3
    one = run_sweep(tiny_scenario, [parse_grid("controller.policy.params.threshold=0.05")],
                    out, run_fn=_fake_run)  # fmt: skip
    assert one.skipped == ["threshold=0.05"] and sorted(one.earlier) == ["threshold=0.02",
                                                                         "threshold=0.1"]  # fmt: skip
    csv = pd.read_csv(out / "sweep.csv")
    assert sorted(csv["controller.policy.params.threshold"]) == [0.02, 0.05, 0.1]
    assert dict(zip(csv["run"], csv["in_grid"], strict=True)) == {
        "threshold=0.05": True, "threshold=0.02": False, "threshold=0.1": False}  # fmt: skip
    # a new axis: the earlier points ran with the scenario's own value of it
    grid = [parse_grid("controller.policy.params.interval_s=2h,1h")]
    both = run_sweep(tiny_scenario, grid, out, run_fn=_fake_run)
    table = both.table.set_index("run")
    assert table.loc["threshold=0.1", "controller.policy.params.interval_s"] == "2h"
    assert table.loc["interval_s=1h", "controller.policy.params.threshold"] == 0.05
    # the scenario changed: its earlier points are no longer its points, and that is said
    changed = {**tiny_scenario, "duration": "3h", "evaluation": {"times": ["1s", "3h"]}}
    report = run_sweep(changed, [parse_grid("controller.policy.params.threshold=0.02")], out,
                       run_fn=_fake_run)  # fmt: skip
    assert list(report.table["run"]) == ["threshold=0.02"]
    assert report.left_out["threshold=0.1"] == "made from another version of the scenario"
    info = json.loads((out / "sweep.json").read_text())
    assert info["table_runs"] == ["threshold=0.02"] and "threshold=0.1" in info["left_out"]


def test_a_point_whose_run_is_not_where_the_client_looks_fails(
    tmp_path: Path, tiny_scenario: dict
) -> None:
    """A point whose run reports success but left no complete run folder where the client
    looks (a worker writing elsewhere) fails, saying the folder must be shared; no table is
    claimed."""

    def elsewhere(scenario, out_dir, twin_address=None, policy_dir=None):
        return _fake_run(scenario, str(tmp_path / "worker" / Path(out_dir).name))

    report = run_sweep(tiny_scenario, [parse_grid("controller.policy.params.threshold=0.05")],
                       tmp_path / "sweep", run_fn=elsewhere)  # fmt: skip
    assert report.ran == [] and "must be shared" in report.failed["threshold=0.05"]
    assert report.written == [] and not (tmp_path / "sweep" / "sweep.csv").exists()


def test_dask_workers_that_do_not_see_the_sweep_folder_are_refused(tmp_path: Path) -> None:
    """Before anything runs on Dask, a worker that does not see the sweep folder (another
    machine's disk) is named in a refusal."""
    from controller.scenario.sweep_workers import SweepFolderNotShared, check_shared_folder

    class Blind:  # what Client.run returns when the worker's file system lacks the probe
        def run(self, fn, path):
            return {"tcp://10.0.0.7:4000": ("node7", False), "tcp://127.0.0.1:4001": fn(path)}

    with pytest.raises(SweepFolderNotShared, match=r"tcp://10.0.0.7:4000 \(host node7\)"):
        check_shared_folder(Blind(), tmp_path)
    assert list(tmp_path.iterdir()) == []  # the probe is removed


@pytest.mark.slow
def test_dask_worker_in_another_directory_writes_where_the_client_says(
    tmp_path: Path, tiny_scenario: dict, monkeypatch
) -> None:
    """A sweep with a relative folder, on a Dask LocalCluster whose worker process runs in
    another directory: every file lands in the client's folder, none in the worker's."""
    import os

    from dask.distributed import Client, LocalCluster

    client_dir, worker_dir = tmp_path / "client", tmp_path / "worker"
    client_dir.mkdir()
    worker_dir.mkdir()
    monkeypatch.chdir(client_dir)
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=True,
                      dashboard_address=None) as cluster, Client(cluster) as client:  # fmt: skip
        client.run(os.chdir, str(worker_dir))
        assert set(client.run(os.getcwd).values()) == {str(worker_dir)}
        report = run_sweep(tiny_scenario, [parse_grid("controller.policy.params.threshold=0.3")],
                           Path("results/tiny-sweep"), dask=client)  # fmt: skip
    assert report.failed == {} and report.ran == ["threshold=0.3"]
    out = client_dir / "results" / "tiny-sweep"
    assert report.out_dir == out and report.written
    assert (out / "runs" / "threshold=0.3" / COMPLETE_MARKER).is_file()
    assert (out / "sweep.csv").is_file() and (out / "front.png").read_bytes()[:8] == PNG
    # nothing of the sweep in the worker's directory (a trained-weights cache may be there:
    # $PCM_TWIN_CACHE_DIR, relative to a process's working directory by default)
    assert {p.name for p in worker_dir.iterdir()} <= {".cache"}


def test_the_points_bar_counts_finished_and_failed_points() -> None:
    """The sweep's progress bar counts the points finished and failed, and prints each
    failure as it happens."""
    import io

    from rich.console import Console

    from controller.scenario.progress import PointsBar

    out = io.StringIO()
    bar = PointsBar(Console(file=out, width=80, force_terminal=True))
    bar.start(3)
    bar.done("threshold=0.02", None)
    bar.done("threshold=0.05", "RuntimeError: the twin went away")
    bar.done("threshold=0.1", None)
    bar.close()
    assert (bar.finished, bar.failed) == (2, 1)
    text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", out.getvalue())  # the terminal's codes
    assert "FAILED threshold=0.05: RuntimeError: the twin went away" in text and "3/3" in text
