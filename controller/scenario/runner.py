"""Run a scenario: every variant and device-noise seed, against a twin over gRPC.

The orchestration only; each step has a module of its own:

- :mod:`~controller.scenario.prepare`: train the network of each variant (or load it from the
  trained-weights cache), quantise and map it onto its chip;
- :mod:`~controller.scenario.seed_run`: one variant on one device-noise seed (program, run
  the firmware model through the duration, evaluate at the requested times);
- :mod:`~controller.scenario.pool`: the (variant, seed) runs in this process or in worker
  processes, each with a twin (:mod:`~controller.scenario.twin`: embedded or at an address);
- :mod:`~controller.scenario.resume`: what the checkpoint of an interrupted run holds;
- :mod:`~controller.scenario.progress`: the progress bar over simulated time.

Then the run folder is written (:mod:`~controller.scenario.results`) with its plots
(:mod:`~controller.scenario.plots`) and its ``report.html`` (:mod:`~controller.scenario.report`).

Checkpoints and resuming. Each (variant, seed) run's result is written to the run folder's
``checkpoint/`` as soon as it finishes (:class:`~controller.scenario.checkpoint.Checkpoint`);
:func:`resume_folder` (``pcm-twin run --resume RUN_DIR``) finishes an interrupted run: it
keeps the checkpointed runs and runs the others (a run cut off in the middle of a seed runs
that seed again from its start, see :mod:`~controller.scenario.resume`).

Seeds. Every random draw derives from the scenario's ``seed``: the training recipes' and the
annealing's seeds default to it (:mod:`~controller.scenario.schema`), and device-noise seed
``k`` of a variant is ``chip_seed(seed, k)`` (:mod:`~controller.scenario.seed_run`), the same
for every variant.
"""

from __future__ import annotations

import platform
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from controller.scenario.checkpoint import Checkpoint
from controller.scenario.loader import LoadedScenario
from controller.scenario.plots import plot_run
from controller.scenario.pool import run_all
from controller.scenario.prepare import PreparedVariant, describe_variant, prepare_variant
from controller.scenario.progress import ProgressBar, ProgressFn
from controller.scenario.report import write_or_warn
from controller.scenario.results import (
    SeedResult,
    clear_complete,
    content_hash,
    mark_complete,
    summarise,
    write_run_folder,
)
from controller.scenario.resume import ResumePlan, plan_resume, refuse_unresumable, tasks_of
from controller.scenario.seed_run import chip_seed
from controller.scenario.yamlio import dump_yaml


@dataclass
class RunOutput:
    """A finished run: its folder, its summary, every (variant, seed) result, wall seconds."""

    out_dir: Path
    summary: dict[str, Any]
    results: list[SeedResult]
    wall_s: float


def resolved_scenario(loaded: LoadedScenario) -> dict[str, Any]:
    """Every variant fully resolved (defaults, overrides, seeds), for the run folder."""
    s = loaded.scenario
    return {
        "name": s.name,
        "description": s.description,
        "source": loaded.source,
        "seed": s.seed,
        "variants": {
            v.name: {
                **v.core.model_dump(mode="json"),
                "resolved": {
                    "policy_params": v.policy_params,
                    "eval_times_s": list(v.eval_times_s),
                    "chip_seeds": [chip_seed(v.core.seed, k) for k in range(v.core.seeds)],
                },
            }
            for v in loaded.variants
        },
    }


def _scenario_text(loaded: LoadedScenario) -> str:
    try:
        return Path(loaded.source).read_text(encoding="utf-8")
    except OSError:
        return dump_yaml(loaded.raw)


def run_to_folder(
    loaded: LoadedScenario,
    out_dir: Path,
    *,
    twin_address: str | None = None,
    scenario_text: str | None = None,
    progress: bool | ProgressFn = True,
    complete_key: str | None = None,
    on_prepared: Callable[[str, float], None] | None = None,
    workers: int = 1,
) -> RunOutput:
    """Run every variant and seed of ``loaded`` and write the run folder ``out_dir``.

    ``progress``: True for a progress bar over simulated time on the terminal, False for
    none, or a function. ``complete_key`` goes into the ``COMPLETE`` marker (sweeps).
    ``workers`` > 1 runs the (variant, seed) runs in that many processes, each with its own
    embedded twin (or all on ``twin_address``); the results are the same either way.

    The run starts from scratch (an earlier checkpoint in ``out_dir`` is dropped) and
    checkpoints each (variant, seed) run's result in ``out_dir/checkpoint/`` as soon as it
    finishes, so that an interrupted run can be finished by :func:`resume_folder`."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    ckpt = Checkpoint(out_dir)
    ckpt.lock()
    try:
        clear_complete(out_dir)
        ckpt.start(
            scenario_text=scenario_text if scenario_text is not None else _scenario_text(loaded),
            source=loaded.source, variants=[v.name for v in loaded.variants],
            tasks=tasks_of(loaded), complete_key=complete_key or content_hash(loaded.raw),
        )  # fmt: skip
        return _run_checkpointed(loaded, ckpt, {}, twin_address=twin_address,
                                 progress=progress, on_prepared=on_prepared, workers=workers,
                                 resumed=False)  # fmt: skip
    finally:
        ckpt.unlock()


def resume_folder(
    run_dir: Path,
    *,
    twin_address: str | None = None,
    progress: bool | ProgressFn = True,
    on_plan: Callable[[ResumePlan], None] | None = None,
    on_prepared: Callable[[str, float], None] | None = None,
    workers: int = 1,
) -> RunOutput:
    """Finish an interrupted run in ``run_dir`` from its checkpoint (``pcm-twin run --resume``).

    The scenario, its source and the variants come from the checkpoint; every (variant, seed)
    run already checkpointed is kept as it is, the others run from the start of their seed
    (results are deterministic per variant and seed, so they are what the interrupted run
    would have given); then the whole run folder is written, the same as an uninterrupted
    run's. A (variant, seed) run cut off in the middle restarts from its seed's start: the
    controller is a set of SimPy generator processes, whose state in the middle of a run
    cannot be saved. ``on_plan`` is called with the :class:`ResumePlan` before anything runs.
    The twin is ``twin_address``, else an embedded one (the twin the run started with does
    not matter: results do not depend on it)."""
    run_dir = Path(run_dir)
    refuse_unresumable(run_dir)  # before taking the folder's lock (which creates files)
    ckpt = Checkpoint(run_dir)
    ckpt.lock()
    try:
        plan = plan_resume(run_dir, ckpt)  # again, now that no other run can write the folder
        if on_plan is not None:
            on_plan(plan)
        return _run_checkpointed(plan.loaded, ckpt, plan.done, twin_address=twin_address,
                                 progress=progress, on_prepared=on_prepared, workers=workers,
                                 resumed=True)  # fmt: skip
    finally:
        ckpt.unlock()


def _run_checkpointed(
    loaded: LoadedScenario, ckpt: Checkpoint, done: dict[int, SeedResult], *,
    twin_address: str | None, progress: bool | ProgressFn,
    on_prepared: Callable[[str, float], None] | None, workers: int, resumed: bool,
) -> RunOutput:  # fmt: skip
    """Run the tasks of ``ckpt`` not in ``done``, checkpointing each, then write the folder
    (with its plots and ``report.html``)."""
    out_dir = ckpt.out_dir
    meta = ckpt.meta
    started = time.perf_counter()
    cache: dict[str, Any] = {}
    preps: list[PreparedVariant] = []
    prep_wall: dict[str, float] = {}
    for v in loaded.variants:
        t0 = time.perf_counter()
        preps.append(prepare_variant(v, cache))
        prep_wall[v.name] = time.perf_counter() - t0
        if on_prepared is not None:
            on_prepared(v.name, prep_wall[v.name])
    by_name = {p.variant.name: p for p in preps}
    tasks = [(by_name[v], int(k)) for v, k in meta["tasks"]]
    results: dict[int, SeedResult] = dict(done)
    todo = [(i, p, k) for i, (p, k) in enumerate(tasks) if i not in done]

    def finished(i: int, result: SeedResult) -> None:
        ckpt.save(i, result)
        results[i] = result

    bar = ProgressBar(loaded) if progress is True else None
    report: ProgressFn | None = bar.update if bar is not None else (progress or None)
    if report is not None:
        for i in done:
            p, k = tasks[i]
            report(p.variant.name, k, p.variant.core.duration, p.variant.core.duration)
    sim_started = time.perf_counter()
    try:
        run_all(todo, twin_address, workers, report, finished)
    finally:
        if bar is not None:
            bar.close()
    sim_wall = time.perf_counter() - sim_started
    ordered = [results[i] for i in range(len(tasks))]
    summary = summarise(
        loaded.name, loaded.scenario.seed,
        [(p.variant.name, describe_variant(p)) for p in preps], ordered,
    )  # fmt: skip
    wall = time.perf_counter() - started
    info = {
        "wall_s": wall,
        "prepare_wall_s": prep_wall,
        "simulate_wall_s": sim_wall,
        "workers": workers,
        "train": {p.variant.name: {"seconds": p.train_seconds, "cached": p.train_cached}
                  for p in preps},
        "seed_runs": [{"variant": r.variant, "seed": r.seed_index, **r.info,
                       "from_checkpoint": i in done} for i, r in enumerate(ordered)],
        "resumed": resumed,
        "twin": twin_address or "embedded",
        "python": platform.python_version(),
        "machine": platform.machine(),
    }  # fmt: skip
    write_run_folder(out_dir, scenario_text=meta["scenario_text"],
                     resolved=resolved_scenario(loaded), results=ordered, summary=summary,
                     run_info=info)  # fmt: skip
    plot_run(out_dir, ordered, summary)
    write_or_warn(out_dir)
    mark_complete(out_dir, meta["complete_key"])
    ckpt.remove()
    return RunOutput(out_dir, summary, ordered, wall)


def default_out_dir(loaded: LoadedScenario) -> Path:
    return Path("results") / loaded.name
