"""What ``pcm-twin schema``, ``validate``, ``run`` and ``sweep`` do (the typer wrappers in
``controller/cli.py`` only parse options and call these).

Exit codes: 0 success, 1 an invalid scenario or grid (every problem printed with its field
path and line) or a run folder that cannot be resumed, 2 a run that failed (a policy error,
an unreachable twin), 130 interrupted (Ctrl-C; the ``--resume`` command is printed).
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from controller.scenario.loader import ScenarioInvalid, load_scenario
from controller.scenario.progress import PointsBar
from controller.scenario.yamlio import load_yaml

# The schema, runner, resume, results and sweep modules are imported inside the commands that
# use them: they bring torch, aihwkit, gRPC and pandas (seconds of start-up), which ``pcm-twin
# --help``, ``validate`` and the twin's own commands do not need.

EXIT_INVALID = 1
EXIT_FAILED = 2
EXIT_INTERRUPTED = 130


def make_console() -> Console:
    """A console for the tables: the terminal's width (or ``$COLUMNS``; 80 when piped). The
    tables fit 80 columns (:mod:`~controller.scenario.tables`)."""
    return Console()


def schema_command(out: Path | None = None) -> int:
    from controller.scenario.schema import scenario_json_schema

    text = json.dumps(scenario_json_schema(), indent=2) + "\n"
    if out is None:
        sys.stdout.write(text)
    else:
        out.write_text(text, encoding="utf-8")
    return 0


def policies_command(names: Sequence[str], as_json: bool, console: Console) -> int:
    """``pcm-twin policies [NAME]...``: the built-in policies and every parameter's type,
    unit, default and meaning (``--json``: the same as data, as a server would send it)."""
    from controller.firmware.policies import policy_catalogue

    catalogue = policy_catalogue()
    known = [p["name"] for p in catalogue]
    unknown = [n for n in names if n not in known]
    if unknown:
        console.print(f"no built-in policy {', '.join(unknown)}; built-ins: {', '.join(known)}",
                      markup=False, soft_wrap=True)  # fmt: skip
        return EXIT_INVALID
    chosen = [p for p in catalogue if not names or p["name"] in names]
    if as_json:
        sys.stdout.write(json.dumps(chosen, indent=2) + "\n")
        return 0
    for policy in chosen:
        table = Table(box=None, pad_edge=False, title_justify="left", header_style="bold",
                      title=f"{policy['name']}: {policy['summary'].replace('``', '')}")  # fmt: skip
        table.add_column("parameter", no_wrap=True)
        table.add_column("type (unit)", max_width=16)
        table.add_column("default", no_wrap=True)
        table.add_column("meaning", ratio=1)
        for q in policy["parameters"]:
            kind = f"{q['type']} ({q['unit']})" if q["unit"] else q["type"]
            table.add_row(q["name"], kind, q["default_text"], q["description"])
        console.print(table)
        console.print()
    console.print("Durations (duration) take a number of seconds or 6h, 1d, 90min ...; g_max: "
                  "weight units, a fraction of the largest conductance.", markup=False)  # fmt: skip
    return 0


def policies_markdown() -> str:
    """The README's tables of the built-in policies' parameters: each parameter's default per
    policy (blank: the policy does not take it), then what each parameter is."""
    from controller.firmware.policies import policy_catalogue

    catalogue = policy_catalogue()
    params: dict[str, dict[str, Any]] = {}
    for policy in catalogue:
        for q in policy["parameters"]:
            params.setdefault(q["name"], q)
    defaults = {
        (p["name"], q["name"]): q["default_text"] for p in catalogue for q in p["parameters"]
    }
    names = [p["name"] for p in catalogue]
    lines = ["| parameter | " + " | ".join(f"`{n}`" for n in names) + " |",
             "|---|" + "---|" * len(names)]  # fmt: skip
    for q in params:
        cells = [defaults.get((n, q), "") for n in names]
        lines.append(f"| `{q}` | " + " | ".join(cells) + " |")
    lines += ["", "| parameter | type | unit | meaning |", "|---|---|---|---|"]
    for name, q in params.items():
        kind = q["type"].replace("|", "\\|")
        text = q["description"].replace("|", "\\|")
        lines.append(f"| `{name}` | {kind} | {q['unit'] or '-'} | {text} |")
    return "\n".join(lines) + "\n"


def validate_command(files: Sequence[Path], console: Console) -> int:
    """Check each file; print every problem, or what each valid file will run."""
    status = 0
    for f in files:
        try:
            loaded = load_scenario(f)
        except ScenarioInvalid as exc:
            console.print(str(exc), markup=False, highlight=False, soft_wrap=True)
            status = EXIT_INVALID
            continue
        names = ", ".join(v.name for v in loaded.variants)
        runs = sum(v.core.seeds for v in loaded.variants)
        console.print(
            f"{f}: ok — scenario {loaded.name!r}, {len(loaded.variants)} variant(s) "
            f"({names}), {runs} run(s)",
            markup=False, highlight=False, soft_wrap=True,
        )  # fmt: skip
    return status


def print_summary(summary: dict[str, Any], console: Console) -> None:
    """The run's tables (accuracy with its intervals; final accuracy against the best, and
    costs) and their footnotes."""
    from controller.scenario.tables import run_tables

    tables, notes = run_tables(summary, console.width)
    for table in tables:
        console.print(table)
    for note in notes:
        console.print(f"  {note}", markup=False, highlight=False)


def default_workers() -> int:
    """One worker per CPU this process may use."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def print_sweep(name: str, report: Any, console: Console) -> None:
    """The sweep's table (every point of its folder) and what it holds, what it leaves out,
    what failed and what was written."""
    from controller.scenario.tables import sweep_table

    table = report.table
    notes: list[str] = []
    if table is not None and not table.empty:
        keys = list(table.columns[1 : table.columns.get_loc("variant")])
        title = (f"{name}: sweep ({len(report.ran)} ran, {len(report.skipped)} already "
                 "complete)")  # fmt: skip
        rendered, notes = sweep_table(table, keys, title)
        console.print(rendered)
    say = [f"  {line}" for line in notes + sweep_coverage(report)]
    say += [f"  FAILED {point}: {err}" for point, err in report.failed.items()]
    files = ", ".join([*report.written, "runs/"])
    if not report.written:
        files += "; no table: no point is complete"
    say.append(f"wrote {report.out_dir}/ ({files}) in {report.wall_s:.1f} s")
    for line in say:  # wrapped at the console's width, the last (a path) left whole
        console.print(line, markup=False, highlight=False, soft_wrap=line is say[-1])


def sweep_coverage(report: Any) -> list[str]:
    """What the sweep table holds beyond this grid, and the run folders it leaves out."""
    lines = []
    if report.earlier:
        lines.append(f"the table also holds {len(report.earlier)} point(s) of earlier grids in "
                     f"this folder (in_grid = False): {', '.join(report.earlier)}")  # fmt: skip
    if report.left_out:
        lines.append(f"not in the table: {len(report.left_out)} run folder(s) of runs/: " +
                     "; ".join(f"{d} ({why})" for d, why in report.left_out.items()))  # fmt: skip
    return lines


def interrupted(name: str, run_dir: Path, console: Console) -> int:
    """Ctrl-C: say what is kept and how to finish (exit 130, as a shell does for SIGINT)."""
    from controller.scenario.checkpoint import Checkpoint, CheckpointError

    ckpt = Checkpoint(run_dir)
    try:
        meta = ckpt.load()
        kept = f"{len(ckpt.saved())} of {len(meta['tasks'])} (variant, seed) run(s) kept"
    except CheckpointError:
        console.print(f"{name}: interrupted before anything was kept", markup=False)
        return EXIT_INTERRUPTED
    console.print(f"{name}: interrupted; {kept} in {run_dir}/checkpoint/\n"
                  f"  finish it with: pcm-twin run --resume {run_dir}",
                  markup=False, soft_wrap=True)  # fmt: skip
    return EXIT_INTERRUPTED


def run_command(
    file: Path | None, out: Path | None, twin: str | None, variants: Sequence[str] | None,
    console: Console, progress: bool = True, workers: int | None = None,
    resume: Path | None = None,
) -> int:  # fmt: skip
    from controller.scenario.checkpoint import CheckpointError
    from controller.scenario.runner import default_out_dir, run_to_folder

    if resume is not None:
        if file is not None or out is not None or variants:
            console.print("--resume RUN_DIR takes the scenario, its variants and the folder from "
                          "RUN_DIR's checkpoint: give no FILE, --out or --variant",
                          markup=False, soft_wrap=True)  # fmt: skip
            return EXIT_INVALID
        return resume_command(resume, twin, console, progress, workers)
    if file is None:
        console.print("give a scenario FILE (or --resume RUN_DIR)", markup=False, soft_wrap=True)
        return EXIT_INVALID
    try:
        loaded = load_scenario(file)
        if variants:
            unknown = [n for n in variants if n not in {v.name for v in loaded.variants}]
            if unknown:
                known = ", ".join(v.name for v in loaded.variants)
                console.print(f"{file}: no variant {', '.join(unknown)}; variants: {known}",
                              markup=False, soft_wrap=True)  # fmt: skip
                return EXIT_INVALID
            loaded.variants = [v for v in loaded.variants if v.name in variants]
    except ScenarioInvalid as exc:
        console.print(str(exc), markup=False, highlight=False, soft_wrap=True)
        return EXIT_INVALID
    out_dir = out if out is not None else default_out_dir(loaded)
    runs = sum(v.core.seeds for v in loaded.variants)
    workers = min(workers or default_workers(), runs)
    console.print(f"{loaded.name}: {len(loaded.variants)} variant(s), {runs} run(s) on "
                  f"{workers} worker(s), twin {'at ' + twin if twin else 'embedded'}; "
                  f"results in {out_dir}/",
                  markup=False, soft_wrap=True)  # fmt: skip

    def prepared(name: str, seconds: float) -> None:
        console.print(
            f"  {name}: trained and mapped ({seconds:.1f} s)", markup=False, soft_wrap=True
        )

    try:
        result = run_to_folder(loaded, out_dir, twin_address=twin, progress=progress,
                               on_prepared=prepared, workers=workers)  # fmt: skip
    except CheckpointError as exc:  # the folder is being written by another run
        console.print(str(exc), markup=False, soft_wrap=True)
        return EXIT_INVALID
    except KeyboardInterrupt:
        return interrupted(loaded.name, out_dir, console)
    except Exception as exc:  # a policy error, the twin gone: say what, keep the traceback out
        console.print(
            f"{loaded.name}: run failed: {type(exc).__name__}: {exc}", markup=False, soft_wrap=True
        )
        if (out_dir / "checkpoint" / "run.json").is_file():
            console.print(f"  finish it with: pcm-twin run --resume {out_dir}",
                          markup=False, soft_wrap=True)  # fmt: skip
        return EXIT_FAILED
    print_summary(result.summary, console)
    console.print(f"wrote {out_dir}/ (summary.json, timeline, events, plots) in "
                  f"{result.wall_s:.1f} s", markup=False, soft_wrap=True)  # fmt: skip
    return 0


def resume_command(
    run_dir: Path, twin: str | None, console: Console, progress: bool = True,
    workers: int | None = None,
) -> int:  # fmt: skip
    """``pcm-twin run --resume RUN_DIR``: finish an interrupted run from its checkpoint.

    A run folder without a checkpoint exits 1 saying so; an already complete one exits 0
    with its summary table (nothing to do)."""
    from controller.scenario.checkpoint import CheckpointError
    from controller.scenario.resume import AlreadyComplete, ResumePlan
    from controller.scenario.runner import resume_folder

    name = str(run_dir)

    def planned(plan: ResumePlan) -> None:
        nonlocal name
        name = plan.loaded.name
        done = [plan.tasks[i] for i in sorted(plan.done)]
        n = min(workers or default_workers(), max(1, len(plan.todo)))
        console.print(
            f"{name}: resuming {run_dir}/: {len(done)} of {len(plan.tasks)} run(s) "
            f"checkpointed, {len(plan.todo)} to run on {n} worker(s), twin "
            f"{'at ' + twin if twin else 'embedded'}", markup=False, soft_wrap=True,
        )  # fmt: skip
        if done:
            kept = ", ".join(f"{v} seed {k}" for v, k in done)
            console.print(f"  kept from the checkpoint: {kept}", markup=False, soft_wrap=True)

    def prepared(variant: str, seconds: float) -> None:
        console.print(
            f"  {variant}: trained and mapped ({seconds:.1f} s)", markup=False, soft_wrap=True
        )

    try:
        result = resume_folder(run_dir, twin_address=twin, progress=progress, on_plan=planned,
                               on_prepared=prepared,
                               workers=workers or default_workers())  # fmt: skip
    except AlreadyComplete as exc:
        console.print(str(exc), markup=False, soft_wrap=True)
        with contextlib.suppress(OSError, ValueError, KeyError):
            print_summary(json.loads((run_dir / "summary.json").read_text()), console)
        return 0
    except CheckpointError as exc:
        console.print(str(exc), markup=False, soft_wrap=True)
        return EXIT_INVALID
    except ScenarioInvalid as exc:
        console.print(str(exc), markup=False, highlight=False, soft_wrap=True)
        return EXIT_INVALID
    except KeyboardInterrupt:
        return interrupted(name, run_dir, console)
    except Exception as exc:  # a policy error, the twin gone: say what, keep the traceback out
        console.print(f"{name}: run failed: {type(exc).__name__}: {exc}\n"
                      f"  finish it with: pcm-twin run --resume {run_dir}",
                      markup=False, soft_wrap=True)  # fmt: skip
        return EXIT_FAILED
    print_summary(result.summary, console)
    console.print(f"wrote {run_dir}/ (summary.json, timeline, events, plots) in "
                  f"{result.wall_s:.1f} s", markup=False, soft_wrap=True)  # fmt: skip
    return 0


def sweep_command(
    file: Path, grid: Sequence[str], out: Path | None, workers: int | None, dask: str | None,
    twin: str | None, console: Console,
) -> int:  # fmt: skip
    """``pcm-twin sweep``: every grid point a run (``workers`` at once, default the CPUs, or
    on Dask), then the combined table and front."""
    from controller.scenario.sweep import GridAxis, parse_grid, run_sweep

    try:
        loaded = load_scenario(file)
        raw = load_yaml(file.read_text(encoding="utf-8"))
        axes: dict[str, GridAxis] = {}
        if loaded.scenario.sweep is not None:
            for key, values in loaded.scenario.sweep.grid.items():
                axes[key] = GridAxis(key, tuple(values))
        for spec in grid:
            a = parse_grid(spec)
            axes[a.key] = a
        raw.pop("sweep", None)
    except ScenarioInvalid as exc:
        console.print(str(exc), markup=False, highlight=False, soft_wrap=True)
        return EXIT_INVALID
    except ValueError as exc:
        console.print(f"{file}: {exc}", markup=False, soft_wrap=True)
        return EXIT_INVALID
    points = 1
    for a in axes.values():
        points *= len(a.values)
    workers = min(workers or default_workers(), max(points, 1))
    where = f"Dask at {dask}" if dask else f"{workers} local worker(s)"
    over = ", ".join(axes) or "(no grid)"
    console.print(f"{loaded.name}: sweep of {points} point(s) over {over} on {where}",
                  markup=False)  # fmt: skip

    bar = PointsBar(console)
    try:
        report = run_sweep(raw, list(axes.values()), out, workers=workers, dask=dask,
                           twin_address=twin, on_start=bar.start, on_done=bar.done,
                           policy_dir=str(file.resolve().parent))  # fmt: skip
    except ScenarioInvalid as exc:
        console.print(str(exc), markup=False, highlight=False, soft_wrap=True)
        return EXIT_INVALID
    except ValueError as exc:  # a bad grid; a sweep folder the Dask workers do not see
        console.print(f"{file}: {exc}", markup=False, soft_wrap=True)
        return EXIT_INVALID
    except KeyboardInterrupt:
        console.print(f"{loaded.name}: sweep interrupted; {bar.finished} point(s) finished "
                      "now are kept (with those complete before): run the same command again "
                      "to run the others", markup=False, soft_wrap=True)  # fmt: skip
        return EXIT_INTERRUPTED
    finally:
        bar.close()
    print_sweep(loaded.name, report, console)
    return EXIT_FAILED if report.failed else 0
