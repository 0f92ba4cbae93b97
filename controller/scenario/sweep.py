"""Sweeps: every combination of a grid of scenario values, each in its own run folder.

``pcm-twin sweep FILE --grid controller.policy.params.interval_s=1h,6h,1d --grid ...`` sets
each dotted key in the scenario (values are read as YAML scalars: ``0.05`` is a number,
``1h`` a string, ``true`` a boolean) and runs every combination as a full scenario run in
``<out>/runs/<point>/``. A run is complete when its ``COMPLETE`` marker (written last,
atomically, holding a hash of the run's scenario) is present and current; a sweep run again
skips complete runs and re-runs the others, so an interrupted sweep resumes where it stopped.

Runs execute locally in worker processes (``--workers N``, spawned, so each has its own torch
and embedded twin) or on a Dask distributed cluster (``--dask ADDRESS``, or a
``dask.distributed.Client`` passed in): :mod:`~controller.scenario.sweep_workers`. The sweep
folder is made absolute here, in the client; on Dask it must be on a file system the client
and every worker share (checked before anything runs), and a point counts as done only when
the client sees its complete run.

When all are done the sweep writes one combined table (``sweep.csv`` and ``sweep.parquet``:
one row per run and variant), ``front.png`` (upkeep energy versus accuracy loss, the
Pareto front marked) and ``report.html`` (the same, each point linked to its run's report).
The table covers every point of the folder: this grid's, and the complete points of earlier
grids that the scenario as it is now still gives (each point's grid values are in its
``point.json``; ``in_grid`` tells them apart); a run folder left out (made from another
version of the scenario, incomplete, unknown values) is named in ``sweep.json`` and by
``pcm-twin sweep``.
"""

from __future__ import annotations

import itertools
import json
import re
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from controller.scenario.loader import ScenarioInvalid, ScenarioIssue, load_scenario
from controller.scenario.plots import plot_front
from controller.scenario.report import write_or_warn
from controller.scenario.results import atomic_write_text, content_hash, dumps_json, is_complete
from controller.scenario.runner import run_to_folder
from controller.scenario.stats import compare_to_best
from controller.scenario.sweep_workers import PointJob, RunFn, execute
from controller.scenario.yamlio import dump_yaml, load_yaml


@dataclass(frozen=True)
class GridAxis:
    """One ``--grid KEY=V1,V2,...``: a dotted key into the scenario and its values."""

    key: str
    values: tuple[Any, ...]


def parse_grid(spec: str) -> GridAxis:
    """``'controller.policy.params.threshold=0.02,0.05'`` -> GridAxis."""
    key, sep, rest = spec.partition("=")
    key = key.strip()
    if not sep or not key or not rest.strip():
        raise ValueError(f"--grid {spec!r}: expected KEY=V1,V2,... (e.g. duration=1d,1w)")
    if not re.fullmatch(r"[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*", key):
        raise ValueError(f"--grid {spec!r}: KEY must be a dotted path such as seeds or a.b.c")
    values = tuple(load_yaml(v.strip()) if v.strip() else "" for v in rest.split(","))
    return GridAxis(key, values)


def set_dotted(data: dict[str, Any], key: str, value: Any) -> dict[str, Any]:
    """A copy of ``data`` with ``key`` (``a.b.c``) set to ``value``; missing sections are
    created, and a key that goes through a value that is not a mapping is an error."""
    out = json.loads(json.dumps(data))  # a deep copy of plain YAML data
    cur = out
    parts = key.split(".")
    for i, part in enumerate(parts[:-1]):
        nxt = cur.get(part)
        if nxt is None:
            nxt = cur[part] = {}
        if not isinstance(nxt, dict):
            raise ValueError(f"grid key {key!r}: {'.'.join(parts[: i + 1])} is not a mapping")
        cur = nxt
    cur[parts[-1]] = value
    return out


def _label(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value)
    return re.sub(r"[^A-Za-z0-9_.+-]", "_", text)


def point_name(point: dict[str, Any]) -> str:
    """A folder name for a grid point: ``interval_s=1h__threshold=0.05`` (the keys' last
    parts, or whole keys when last parts collide)."""
    last = [k.rsplit(".", 1)[-1] for k in point]
    names = last if len(set(last)) == len(last) else [k.replace(".", "-") for k in point]
    return "__".join(f"{n}={_label(v)}" for n, v in zip(names, point.values(), strict=True))


@dataclass
class SweepRun:
    """One grid point: its values, its scenario mapping, its folder and content key."""

    name: str
    point: dict[str, Any]
    scenario: dict[str, Any]
    out_dir: Path
    key: str


@dataclass
class SweepReport:
    """What a sweep did: every point of its grid, which ran now, which were already
    complete, which failed; the points of earlier grids in its table and the run folders
    left out of it, with the reason; the files written."""

    out_dir: Path
    runs: list[SweepRun]
    ran: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    earlier: list[str] = field(default_factory=list)  # complete points of earlier grids
    left_out: dict[str, str] = field(default_factory=dict)  # run folders not in the table
    table: pd.DataFrame | None = None
    written: list[str] = field(default_factory=list)  # the files of the table, if any
    wall_s: float = 0.0


def plan_sweep(raw: dict[str, Any], axes: Sequence[GridAxis], out_dir: Path) -> list[SweepRun]:
    """Every grid point as a validated scenario; raises :class:`ScenarioInvalid` with every
    problem of every point (prefixed by the point) before anything runs."""
    if not axes:
        raise ValueError("a sweep needs at least one --grid KEY=V1,V2,...")
    keys = [a.key for a in axes]
    if len(set(keys)) != len(keys):
        raise ValueError(f"a grid key appears twice: {keys}")
    variants = raw.get("variants") or {}
    for key in keys:
        for vname, override in variants.items() if isinstance(variants, dict) else ():
            cur: Any = override
            for part in key.split("."):
                cur = cur.get(part) if isinstance(cur, dict) else None
            if cur is not None:
                raise ValueError(
                    f"variant {vname!r} sets {key}, so the grid would not change it there; "
                    "remove it from the variant or sweep variants.<name>.<key> instead"
                )
    runs: list[SweepRun] = []
    issues: list[ScenarioIssue] = []
    for combo in itertools.product(*(a.values for a in axes)):
        point = dict(zip(keys, combo, strict=True))
        scenario = raw
        for k, v in point.items():
            scenario = set_dotted(scenario, k, v)
        name = point_name(point)
        try:
            load_scenario(scenario)
        except ScenarioInvalid as exc:
            issues += [ScenarioIssue(i.path, f"[{name}] {i.message}") for i in exc.issues]
            continue
        runs.append(SweepRun(name, point, scenario, out_dir / "runs" / name,
                             content_hash(scenario)))  # fmt: skip
    if issues:
        raise ScenarioInvalid(issues, "sweep")
    return runs


def run_point(
    scenario: dict[str, Any], out_dir: str, twin_address: str | None = None,
    policy_dir: str | None = None,
) -> dict[str, str]:  # fmt: skip
    """Run one grid point's scenario into ``out_dir`` (in a worker process or on Dask; a
    user policy's relative path is ``policy_dir``'s); says where it ran."""
    run_to_folder(load_scenario(scenario, base_dir=policy_dir), Path(out_dir),
                  twin_address=twin_address, scenario_text=dump_yaml(scenario), progress=False,
                  complete_key=content_hash(scenario))  # fmt: skip
    return {"out_dir": out_dir, "host": socket.gethostname()}


def get_dotted(data: dict[str, Any], key: str) -> Any:
    """The value at dotted ``key`` of ``data`` (None where a part is missing)."""
    cur: Any = data
    for part in key.split("."):
        cur = cur.get(part) if isinstance(cur, dict) else None
    return cur


def _summary_rows(name: str, point: dict[str, Any], summary: dict[str, Any]) -> list[dict]:
    rows = []
    for vname, v in summary["variants"].items():
        row: dict[str, Any] = {"run": name, **point, "variant": vname}
        row["label"] = name if len(summary["variants"]) == 1 else f"{name}/{vname}"
        row["accuracy_first_mean"] = v["accuracy_mean"][0]
        row["accuracy_final_mean"] = v["accuracy_mean"][-1]
        row["accuracy_final_std"] = v["accuracy_std"][-1]
        # the final accuracy's 95 % interval: over seeds, or with one seed the test images'
        key = "accuracy_ci95" if v.get("seeds", 1) > 1 else "accuracy_wilson95"
        low, high = (v.get(key) or [[None, None]])[-1]
        row["accuracy_final_ci_low"], row["accuracy_final_ci_high"] = low, high
        low, high = v.get("accuracy_loss_ci95") or [None, None]
        row["accuracy_loss_ci_low"], row["accuracy_loss_ci_high"] = low, high
        low, high = v.get("upkeep_energy_pj_ci95") or [None, None]
        row["upkeep_energy_pj_ci_low"], row["upkeep_energy_pj_ci_high"] = low, high
        row["accuracy_time_mean"] = v.get("accuracy_time_mean")
        low, high = v.get("accuracy_time_mean_ci95") or [None, None]
        row["accuracy_time_mean_ci_low"], row["accuracy_time_mean_ci_high"] = low, high
        for key in ("accuracy_loss", "upkeep_energy_pj", "upkeep_energy_pj_std",
                    "corrections", "correction_pulses", "availability", "seeds",
                    "test_images"):  # fmt: skip
            row[key] = v.get(key)
        row["accuracy_final_per_seed"] = json.dumps(
            [s[-1] if s else None for s in v.get("accuracy_per_seed", [])]
        )
        row["chip_seeds"] = json.dumps(v.get("chip_seeds", []))
        rows.append(row)
    return rows


def versus_best(table: pd.DataFrame) -> pd.DataFrame:
    """``table`` with each row's final accuracy against the best row's (the highest mean):
    ``vs_best_of``, ``vs_best_diff``, ``vs_best_p``, ``vs_best_significant``, ``vs_best_test``
    (paired over seeds when every row has the same chip seeds, Welch's t-test otherwise; with
    one seed, the test images: :func:`~controller.scenario.stats.compare`)."""
    if table.empty:
        return table
    seeds = zip(table["label"], table["accuracy_final_per_seed"], strict=True)
    per_seed = {lab: json.loads(s) for lab, s in seeds}
    paired = table["chip_seeds"].nunique() == 1
    images = table["test_images"].dropna().unique()
    n_images = int(images[0]) if len(images) == 1 else None
    found = {c.a: c for c in compare_to_best(per_seed, n_images, paired=paired)}
    out = table.copy()
    out["vs_best_of"] = [found[lab].b if lab in found else None for lab in out["label"]]
    named = (("vs_best_diff", "diff"), ("vs_best_p", "p_value"),
             ("vs_best_significant", "significant"), ("vs_best_test", "test"))  # fmt: skip
    for col, attr in named:
        out[col] = [getattr(found[lab], attr) if lab in found else None
                    for lab in out["label"]]  # fmt: skip
    return out


POINT_FILE = "point.json"


@dataclass
class FolderPoints:
    """The points of a sweep folder: those of this grid, the complete ones of earlier grids
    that the study (the scenario as it is now) still gives, and the run folders left out."""

    runs: list[SweepRun]
    earlier: list[SweepRun] = field(default_factory=list)
    left_out: dict[str, str] = field(default_factory=dict)  # folder name -> why


def folder_points(raw: dict[str, Any], runs: Sequence[SweepRun], out_dir: Path) -> FolderPoints:
    """Every point of ``out_dir/runs/``: this grid's ``runs``; a run folder of an earlier
    grid counts when it is complete with the key the scenario ``raw`` gives its point now
    (its ``point.json``); the others are left out, each with the reason."""
    found = FolderPoints(list(runs))
    mine = {r.out_dir.name for r in runs}
    folder = out_dir / "runs"
    for d in sorted(folder.iterdir() if folder.is_dir() else []):
        if not d.is_dir() or d.name in mine:
            continue
        try:
            point = json.loads((d / POINT_FILE).read_text(encoding="utf-8"))["point"]
        except (OSError, ValueError, KeyError, TypeError):
            found.left_out[d.name] = f"no {POINT_FILE}: its grid values are not known"
            continue
        scenario = raw
        try:
            for k, v in point.items():
                scenario = set_dotted(scenario, k, v)
        except ValueError as exc:
            found.left_out[d.name] = str(exc)
            continue
        key = content_hash(scenario)
        if is_complete(d, key):
            found.earlier.append(SweepRun(d.name, dict(point), scenario, d, key))
        elif is_complete(d):
            found.left_out[d.name] = "made from another version of the scenario"
        else:
            found.left_out[d.name] = "not complete"
    return found


def folder_table(raw: dict[str, Any], points: FolderPoints) -> pd.DataFrame:
    """The sweep table of every point in the folder (:func:`folder_points`): a point of an
    earlier grid gets, for a key it did not vary, the scenario's own value (what it ran with);
    ``in_grid`` says whether the point is in this grid."""
    keys: list[str] = []
    for r in [*points.runs, *points.earlier]:
        keys += [k for k in r.point if k not in keys]
    rows: list[dict[str, Any]] = []
    for r, in_grid in [(r, True) for r in points.runs] + [(r, False) for r in points.earlier]:
        path = r.out_dir / "summary.json"
        if not path.is_file():
            continue
        point = {k: r.point[k] if k in r.point else get_dotted(raw, k) for k in keys}
        for row in _summary_rows(r.name, point, json.loads(path.read_text())):
            rows.append({**row, "in_grid": in_grid})
    return versus_best(pd.DataFrame(rows))


def run_sweep(
    source: str | Path | dict[str, Any],
    axes: Sequence[GridAxis],
    out_dir: Path | None = None,
    *,
    workers: int = 1,
    dask: Any = None,
    twin_address: str | None = None,
    run_fn: RunFn = run_point,
    on_start: Callable[[int], None] | None = None,
    on_done: Callable[[str, str | None], None] | None = None,
    policy_dir: str | None = None,
) -> SweepReport:
    """Run (or resume) a sweep; see the module docstring. ``dask``: a scheduler address or a
    ``dask.distributed.Client``; ``run_fn`` runs one point (default: a real scenario run);
    ``on_start(points to run)`` and ``on_done(point, error or None)`` follow it. A user
    policy's relative path is the scenario file's folder's (``policy_dir`` for a mapping)."""
    if isinstance(source, dict):
        raw = dict(source)
    else:
        raw = load_yaml(Path(source).read_text(encoding="utf-8"))
        load_scenario(source)  # the file itself, with its line numbers, first
        policy_dir = policy_dir or str(Path(source).resolve().parent)
    raw.pop("sweep", None)  # the grid is the axes; the points' scenarios do not hold it
    name = str(raw.get("name", "sweep"))
    out = Path(out_dir) if out_dir is not None else Path("results") / f"{name}-sweep"
    out = out.resolve()  # the client's folder, wherever a worker's working directory is
    started = time.perf_counter()
    runs = plan_sweep(raw, axes, out)
    report = SweepReport(out, runs)
    todo = []
    for r in runs:
        if is_complete(r.out_dir, r.key):
            report.skipped.append(r.name)
        else:
            todo.append(r)
        r.out_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(r.out_dir / POINT_FILE, dumps_json({"point": r.point}))

    def finished(point: str, error: str | None) -> None:
        if error is None:
            report.ran.append(point)
        else:
            report.failed[point] = error
        if on_done is not None:
            on_done(point, error)

    if on_start is not None:
        on_start(len(todo))
    jobs = [PointJob(r.name, r.scenario, r.out_dir, r.key) for r in todo]
    execute(jobs, run_fn, sweep_dir=out, workers=workers, dask=dask, twin_address=twin_address,
            policy_dir=policy_dir, on_done=finished)  # fmt: skip
    points = folder_points(raw, runs, out)
    report.earlier = [r.name for r in points.earlier]
    report.left_out = points.left_out
    table = folder_table(raw, points)
    report.table = table
    for stale in ("sweep.csv", "sweep.parquet", "front.png"):
        (out / stale).unlink(missing_ok=True)  # never a table of another grid left behind
    if not table.empty:
        table.to_csv(out / "sweep.csv", index=False)
        table.to_parquet(out / "sweep.parquet", index=False)
        plot_front(table, out / "front.png",
                   f"{name}: upkeep energy vs accuracy loss ({len(table)} points)")  # fmt: skip
        report.written = ["sweep.csv", "sweep.parquet", "front.png"]
    report.wall_s = time.perf_counter() - started
    atomic_write_text(
        out / "sweep.json",
        dumps_json({
            "scenario": name,
            "grid": {a.key: list(a.values) for a in axes},
            "runs": [{"name": r.name, "point": r.point, "key": r.key} for r in runs],
            "ran": report.ran, "skipped": report.skipped, "failed": report.failed,
            "earlier": report.earlier, "left_out": report.left_out,
            "table_runs": sorted(set(table["run"])) if not table.empty else [],
        }),
    )  # fmt: skip
    write_or_warn(out)  # report.html: the table and front, each point linked to its run's
    return report
