"""Sweeps: every combination of a grid of scenario values, each in its own run folder.

``pcm-twin sweep FILE --grid controller.policy.params.interval_s=1h,6h,1d --grid ...`` sets
each dotted key in the scenario (values are read as YAML scalars: ``0.05`` is a number,
``1h`` a string, ``true`` a boolean) and runs every combination as a full scenario run in
``<out>/runs/<point>/``. A run is complete when its ``COMPLETE`` marker (written last,
atomically, holding a hash of the run's scenario) is present and current; a sweep run again
skips complete runs and re-runs the others, so an interrupted sweep resumes where it stopped.

Runs execute locally in worker processes (``--workers N``, spawned, so each has its own torch
and embedded twin) or on a Dask distributed cluster (``--dask ADDRESS``, or a
``dask.distributed.Client`` passed in). When all are done the sweep writes one combined table
(``sweep.csv`` and ``sweep.parquet``: one row per run and variant) and ``front.png``
(correction energy versus accuracy loss, the Pareto front marked).
"""

from __future__ import annotations

import itertools
import json
import re
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import pandas as pd

from controller.scenario.loader import ScenarioInvalid, ScenarioIssue, load_scenario
from controller.scenario.plots import plot_front
from controller.scenario.results import atomic_write_text, content_hash, dumps_json, is_complete
from controller.scenario.runner import run_to_folder
from controller.scenario.yamlio import dump_yaml, load_yaml

#: A run function: (scenario mapping, run folder, twin address or None) -> run folder.
RunFn = Callable[[dict[str, Any], str, "str | None"], str]


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
    """What a sweep did: every run, which ones ran now, which were already complete."""

    out_dir: Path
    runs: list[SweepRun]
    ran: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    table: pd.DataFrame | None = None
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


def run_point(scenario: dict[str, Any], out_dir: str, twin_address: str | None = None) -> str:
    """Run one grid point's scenario into ``out_dir`` (in a worker process or on Dask)."""
    run_to_folder(load_scenario(scenario), Path(out_dir), twin_address=twin_address,
                  scenario_text=dump_yaml(scenario), progress=False,
                  complete_key=content_hash(scenario))  # fmt: skip
    return out_dir


def _execute(
    todo: list[SweepRun], run_fn: RunFn, workers: int, dask: Any, twin_address: str | None,
    report: SweepReport, on_done: Callable[[str], None] | None,
) -> None:  # fmt: skip
    def finished(name: str, error: BaseException | None) -> None:
        if error is None:
            report.ran.append(name)
        else:
            report.failed[name] = f"{type(error).__name__}: {error}"
        if on_done is not None:
            on_done(name)

    args = [(r.scenario, str(r.out_dir), twin_address) for r in todo]
    if dask is not None:
        # dask is optional (only ``--dask``) and slow to import: here, not at the top
        from dask.distributed import Client
        from dask.distributed import as_completed as dask_completed

        client = dask if isinstance(dask, Client) else Client(dask)
        try:
            futures = {
                client.submit(run_fn, *a, key=f"pcm-twin-{r.name}-{r.key}", pure=False): r.name
                for r, a in zip(todo, args, strict=True)
            }
            for fut in dask_completed(futures):
                exc = fut.exception()
                finished(futures[fut], exc)
        finally:
            if client is not dask:
                client.close()
        return
    if workers <= 1:
        for r, a in zip(todo, args, strict=True):
            try:
                run_fn(*a)
            except Exception as exc:  # one failed point must not lose the others
                finished(r.name, exc)
            else:
                finished(r.name, None)
        return
    # spawned workers: torch and gRPC do not survive fork() of a process that used them
    with ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn")) as pool:
        futs = {pool.submit(run_fn, *a): r.name for r, a in zip(todo, args, strict=True)}
        for fut in as_completed(futs):
            finished(futs[fut], fut.exception())


def combined_table(runs: Sequence[SweepRun]) -> pd.DataFrame:
    """One row per run and variant: the grid values, then the variant's summary figures."""
    rows: list[dict[str, Any]] = []
    for r in runs:
        path = r.out_dir / "summary.json"
        if not path.is_file():
            continue
        summary = json.loads(path.read_text())
        for vname, v in summary["variants"].items():
            row: dict[str, Any] = {"run": r.name, **r.point, "variant": vname}
            row["label"] = r.name if len(summary["variants"]) == 1 else f"{r.name}/{vname}"
            row["accuracy_first_mean"] = v["accuracy_mean"][0]
            row["accuracy_final_mean"] = v["accuracy_mean"][-1]
            row["accuracy_final_std"] = v["accuracy_std"][-1]
            for key in ("accuracy_loss", "upkeep_energy_pj", "upkeep_energy_pj_std",
                        "corrections", "correction_pulses", "availability"):  # fmt: skip
                row[key] = v.get(key)
            rows.append(row)
    return pd.DataFrame(rows)


def run_sweep(
    source: str | Path | dict[str, Any],
    axes: Sequence[GridAxis],
    out_dir: Path | None = None,
    *,
    workers: int = 1,
    dask: Any = None,
    twin_address: str | None = None,
    run_fn: RunFn = run_point,
    on_done: Callable[[str], None] | None = None,
) -> SweepReport:
    """Run (or resume) a sweep; see the module docstring. ``dask``: a scheduler address or a
    ``dask.distributed.Client``; ``run_fn`` runs one point (default: a real scenario run)."""
    if isinstance(source, dict):
        raw = source
    else:
        raw = load_yaml(Path(source).read_text(encoding="utf-8"))
        load_scenario(source)  # the file itself, with its line numbers, first
    name = str(raw.get("name", "sweep"))
    out = Path(out_dir) if out_dir is not None else Path("results") / f"{name}-sweep"
    started = time.perf_counter()
    runs = plan_sweep(raw, axes, out)
    report = SweepReport(out, runs)
    todo = []
    for r in runs:
        if is_complete(r.out_dir, r.key):
            report.skipped.append(r.name)
        else:
            todo.append(r)
    out.mkdir(parents=True, exist_ok=True)
    _execute(todo, run_fn, workers, dask, twin_address, report, on_done)
    table = combined_table(runs)
    report.table = table
    if not table.empty:
        table.to_csv(out / "sweep.csv", index=False)
        table.to_parquet(out / "sweep.parquet", index=False)
        plot_front(table, out / "front.png",
                   f"{name}: correction energy vs accuracy loss ({len(table)} points)")  # fmt: skip
    report.wall_s = time.perf_counter() - started
    atomic_write_text(
        out / "sweep.json",
        dumps_json({
            "scenario": name,
            "grid": {a.key: list(a.values) for a in axes},
            "runs": [{"name": r.name, "point": r.point, "key": r.key} for r in runs],
            "ran": report.ran, "skipped": report.skipped, "failed": report.failed,
        }),
    )  # fmt: skip
    return report
