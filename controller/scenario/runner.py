"""Run a scenario: every variant and device-noise seed, against a twin over gRPC.

For each variant: train the network (or load it from the trained-weights cache), quantise and
map it onto tiles (``controller.workloads.mapping``). For each of its ``seeds``: create a chip
on the twin, build the controller's SimPy :class:`~controller.firmware.ChipModel` with the
variant's policy, program the network, run the model through the duration with evaluations
(test accuracy on the held-out images, every MVM on the twin) at the requested times, and
collect its timeline, events and totals. Then write the run folder
(:mod:`~controller.scenario.results`) and the plots (:mod:`~controller.scenario.plots`).

The twin is embedded (a CrossbarTwin server started in this process on a free loopback port)
unless an address is given; either way the controller reaches it only through
``TwinClient``, whose patient retries (``TWIN_RETRY``) ride out a twin that is killed and
restarted on its state directory (``twin serve --state-dir``): the run then completes with
the same results as an uninterrupted one (tests/reliability/test_faults.py).

Checkpoints and resuming. Each (variant, seed) run's result is written to the run folder's
``checkpoint/`` as soon as it finishes (:class:`~controller.scenario.results.Checkpoint`);
:func:`resume_folder` (``pcm-twin run --resume RUN_DIR``) finishes an interrupted run: it
keeps the checkpointed runs and runs the others. The checkpoint is per (variant, seed), not
inside one: the controller is a set of SimPy generator processes, whose state in the middle
of a simulation cannot be saved and restored, so a run interrupted in the middle of a seed
runs that seed again from its start (the same result: every run is determined by its variant
and seed).

Seeds. Every random draw derives from the scenario's ``seed``: the training recipes' and the
annealing's seeds default to it (:mod:`~controller.scenario.schema`), and device-noise seed
``k`` of a variant is ``chip_seed(seed, k)``. Seed ``k`` is the same for every variant (common
random numbers): variants are compared on the same draws of device noise, so their differences
are the variants', not the dice's.
"""

from __future__ import annotations

import platform
import re
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from controller.scenario.loader import LoadedScenario, ResolvedVariant
from controller.scenario.results import (
    Checkpoint,
    CheckpointError,
    SeedResult,
    clear_complete,
    content_hash,
    is_complete,
    mark_complete,
    summarise,
    write_run_folder,
)

#: Event kinds that are not the cost of keeping weights in place (everything else is:
#: probes and correction jobs). See ``results`` for the definition of correction energy.
NOT_CORRECTION_KINDS = frozenset(
    {"program", "calibration", "evaluation", "inference", "policy", "policy_error", "error"}
)

#: The scenario's client rides out a twin that is down (killed, restarting, restoring its
#: state) for at least 75 s: an UNAVAILABLE call is retried with backoff capped at 2 s
#: (jittered to 1-2 s), up to 80 times within the call's 120 s deadline. A restart of a
#: `twin serve --state-dir` process took 2-3 s on an idle 2-core machine (start-up; restoring
#: a chip from a log of a few hundred records: 0.05 s), several times that on a loaded one.
TWIN_RETRY = {"retries": 80, "backoff_s": 0.05, "backoff_max_s": 2.0, "timeout_s": 120.0}

#: Torch threads while simulating (see ``sim_threads``).
SIM_TORCH_THREADS = 1

#: progress(variant, seed index, simulated time now, duration) — for a progress bar.
ProgressFn = Callable[[str, int, float, float], None]


def chip_seed(scenario_seed: int, k: int) -> int:
    """The device-noise seed of seed index ``k`` (the same for every variant)."""
    state = np.random.SeedSequence([int(scenario_seed), 0x70636D, int(k)]).generate_state(
        1, np.uint64
    )
    return int(state[0]) >> 1  # ChipConfig seeds are < 2**63


# --- the twin --------------------------------------------------------------------------------
@contextmanager
def twin_client(address: str | None = None) -> Iterator[Any]:
    """A ``TwinClient`` to ``address``, or to an embedded twin started on a free loopback
    port (stopped on exit). The bearer token, if any, comes from ``$PCM_TWIN_TOKEN``."""
    from controller.rpc.client import TwinClient
    from device_twin.service.server import ServerOptions, TwinServer, load_token

    server = None
    if address is None:
        server = TwinServer(ServerOptions(address="127.0.0.1:0", max_workers=4))
        server.start()
        address = server.address
        token = None
    else:
        token = load_token(None)
    # a session stream per client (one call's set-up for all the controller's operations);
    # patient retries: a twin restarted on its state dir is waited for, not given up on
    client = TwinClient(address, token=token, session=True, **TWIN_RETRY)
    try:
        client.wait_ready()
        yield client
    finally:
        client.close()
        if server is not None:
            server.stop(0)


# --- one variant -----------------------------------------------------------------------------
@dataclass
class PreparedVariant:
    """A variant's network, trained and mapped, and what it is evaluated on."""

    variant: ResolvedVariant
    mapped: Any  # controller.workloads.mapping.MappedNetwork
    test: Any  # controller.workloads.datasets.DatasetSplit
    chip_config: Any  # device_twin.config.ChipConfig, seed 0
    trained_accuracy: float
    train_seconds: float
    train_cached: bool


def _train(core: Any) -> Any:
    from controller.workloads.training import train_digital, train_hardware_aware

    tr = core.training
    if tr.kind == "hardware_aware":
        return train_hardware_aware(core.workload.network, tr.hardware_aware, tr.digital)
    return train_digital(core.workload.network, tr.digital)


def _chip_config(core: Any, n_tiles: int, seed: int) -> Any:
    from device_twin.config import ChipConfig

    c = core.chip
    return ChipConfig(
        n_tiles=n_tiles, tile_rows=c.tile_rows, tile_cols=c.tile_cols, g_max_us=c.g_max_us,
        device=c.device, program_verify=c.program_verify, pulse=c.pulse,
        periphery=c.periphery, energy=c.energy, seed=seed,
    )  # fmt: skip


def prepare_variant(v: ResolvedVariant, cache: dict[str, Any]) -> PreparedVariant:
    """Train (cached on disk) and map (cached in ``cache`` for variants that share it)."""
    from controller.workloads.datasets import load_dataset
    from controller.workloads.mapping import map_network, tiles_needed
    from controller.workloads.zoo import get_workload

    core = v.core
    trained = _train(core)
    desc = trained.description
    need = tiles_needed(desc, core.chip.tile_rows, core.chip.tile_cols)
    n_tiles = need if core.chip.n_tiles == "auto" else int(core.chip.n_tiles)
    chip_config = _chip_config(core, n_tiles, 0)
    key = content_hash(
        [trained.key, core.mapping.model_dump(mode="json"), chip_config.model_dump(mode="json")]
    )
    if key not in cache:
        cache[key] = map_network(desc, core.mapping.quantiser, chip_config)
    wl = get_workload(core.workload.network)
    test = load_dataset(wl.dataset, core.training.digital.split_seed).test
    if core.workload.test_images is not None:
        test = test.head(core.workload.test_images)
    return PreparedVariant(v, cache[key], test, chip_config, trained.test_accuracy,
                           trained.train_seconds, trained.cached)  # fmt: skip


def _chip_id(variant: str, k: int) -> str:
    # unique on a shared twin; the id never influences results (the seed does)
    base = re.sub(r"[^A-Za-z0-9_.-]", "_", variant)[:40] or "v"
    return f"{base}-s{k}-{uuid.uuid4().hex[:8]}"


def _timeline_row(row: dict[str, Any]) -> dict[str, Any]:
    """The controller's timeline row in the run folder's terms."""
    drop = ("t_s", "scheduled_s", "label", "age_s", "correction_pulses")
    out = {k: v for k, v in row.items() if k not in drop}
    out["t_s"] = float(row["scheduled_s"])
    out["t_end_s"] = float(row["t_s"])
    energy = {
        k[len("energy_") : -len("_pj")]: v
        for k, v in row.items()
        if k.startswith("energy_") and k.endswith("_pj") and k != "energy_total_pj"
    }
    out["correction_energy_pj"] = float(
        sum(e for kind, e in energy.items() if kind not in NOT_CORRECTION_KINDS)
    )
    out["correction_job_energy_pj"] = float(row.get("correction_energy_pj", 0.0))
    out["pulses"] = int(row.get("correction_pulses", 0))
    return out


def _totals(totals: dict[str, Any]) -> dict[str, float]:
    """End-of-run counters (numbers only) from ``ChipModel.totals()``."""
    ledger = totals.get("ledger", {})
    maint = {k: t for k, t in ledger.items() if k not in NOT_CORRECTION_KINDS}
    out = {
        "correction_energy_pj": float(
            sum(t["energy_pj"] + t["controller_energy_pj"] for t in maint.values())
        ),
        "correction_job_energy_pj": float(totals.get("correction_energy_pj", 0.0)),
        "corrections": float(totals.get("corrections", 0)),
        "pulses": float(sum(t["pulses"] for t in maint.values())),
        "devices_corrected": float(totals.get("devices_corrected", 0)),
        "failed_devices": float(totals.get("failed_devices", 0)),
        "monitor_wakeups": float(totals.get("monitor_wakeups", 0)),
        "availability": float(totals.get("availability", 1.0)),
        "twin_energy_pj": float(totals.get("twin_energy_pj", 0.0)),
        "controller_energy_pj": float(totals.get("controller_energy_pj", 0.0)),
    }
    for kind, e in totals.get("energy_by_kind_pj", {}).items():
        out[f"energy_{kind}_pj"] = float(e)
    return out


def run_seed(
    client: Any, prep: PreparedVariant, k: int, scenario_seed: int,
    progress: ProgressFn | None = None,
) -> SeedResult:  # fmt: skip
    """One variant on one device-noise seed: program, run the duration, evaluate."""
    from controller.firmware import ChipModel, make_environment
    from controller.firmware.policies import load_policy
    from controller.workloads.mapping import evaluate

    v = prep.variant
    core = v.core
    seed = chip_seed(scenario_seed, k)
    chip_config = prep.chip_config.model_copy(update={"seed": seed})
    chip_id = client.create_chip(chip_config, chip_id=_chip_id(v.name, k))
    started = time.perf_counter()
    try:
        mapped, test = prep.mapped, prep.test

        def evaluator(mvm: Any, compensation: Any) -> dict[str, float]:
            return {"accuracy": evaluate(mapped, mvm, test, compensation)}

        env = make_environment()
        model = ChipModel(
            env, client, chip_id, mapped,
            load_policy(core.controller.policy.name, v.policy_params),
            config=core.controller.controller_config(), evaluator=evaluator,
            chip_config=chip_config,  # GDC: the model's default, one factor per tile
        )  # fmt: skip
        evals = model.schedule_evaluations(list(v.eval_times_s))
        model.start()
        report = None if progress is None else (lambda now, _end: progress(v.name, k, now, _end))
        model.run(until_s=core.duration, progress=report)
        # an evaluation at the very end takes the MVMs' latency: let it finish, and the
        # wake-up due then too (its corrections and the evaluation after them)
        model.run_until_event(env.all_of([e.done for e in evals]))
        model.finish_cycle()
        res = model.results()
    finally:
        client.delete_chip(chip_id)
        # a worker process may exit next: its embedded twin must not be left serving a session
        getattr(client, "close_session", lambda: None)()
    return SeedResult(
        variant=v.name,
        seed_index=k,
        chip_seed=seed,
        timeline=[_timeline_row(r) for r in res.timeline],
        totals=_totals(res.totals),
        events=[e.to_dict() for e in res.events],
        info={"wall_s": time.perf_counter() - started, "error": res.totals.get("error")},
    )


# --- the whole scenario ----------------------------------------------------------------------
def describe_variant(prep: PreparedVariant) -> dict[str, Any]:
    """What a variant is, for the summary (all determined by the scenario)."""
    from controller.firmware.policies import load_policy

    core = prep.variant.core
    return {
        "network": core.workload.network,
        "training": core.training.kind,
        "quantiser": core.mapping.quantiser.kind,
        "policy": core.controller.policy.name,
        "policy_params": prep.variant.policy_params,
        "compensation": getattr(
            load_policy(core.controller.policy.name, prep.variant.policy_params),
            "compensation",
            None,
        ),
        "tiles": prep.chip_config.n_tiles,
        "weights_on_chip": int(prep.mapped.n_weights_on_chip()),
        "test_images": len(prep.test),
        "digital_accuracy": prep.trained_accuracy,
        "duration_s": core.duration,
    }


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


@dataclass
class RunOutput:
    out_dir: Path
    summary: dict[str, Any]
    results: list[SeedResult]
    wall_s: float


@contextmanager
def sim_threads(n: int = SIM_TORCH_THREADS) -> Iterator[None]:
    """Torch intra-op threads and numpy's BLAS threads while simulating: the MVMs and reads
    are small, and on a busy machine a second thread costs far more in waking up than it saves
    (measured: a 72-row probe takes 2 ms with one thread and 47 ms with two on 2 loaded cores;
    a spare BLAS thread spinning after the energy model's small dot products doubled the CPU
    time of a wake-up at the same wall time, bench/README.md)."""
    import torch
    from threadpoolctl import threadpool_limits

    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        with threadpool_limits(limits=n, user_api="blas"):
            yield
    finally:
        torch.set_num_threads(before)


# --- worker processes --------------------------------------------------------------------------
# Each worker process runs seed-runs with a twin of its own (embedded, or the given address)
# and reports progress through a queue. Results do not depend on which worker ran what: every
# run has its own chip and seed.
_worker: dict[str, Any] = {}


def _worker_init(twin_address: str | None, queue: Any) -> None:
    from multiprocessing.util import Finalize

    import torch
    from threadpoolctl import threadpool_limits

    torch.set_num_threads(SIM_TORCH_THREADS)
    threadpool_limits(limits=SIM_TORCH_THREADS, user_api="blas")  # for the worker's life
    ctx = twin_client(twin_address)
    _worker["client"] = ctx.__enter__()
    _worker["queue"] = queue
    # Close the client (and stop the embedded twin) when the worker's work loop ends, BEFORE
    # the interpreter joins non-daemon threads: an open session stream holds one of the
    # embedded twin's server threads, and joining it first (``atexit`` runs after that join)
    # hangs the worker, and the pool's shutdown with it, until the stream times out.
    Finalize(None, ctx.__exit__, args=(None, None, None), exitpriority=10)


def _worker_run(prep: PreparedVariant, k: int, scenario_seed: int) -> SeedResult:
    queue = _worker["queue"]
    last = [0.0]

    def report(variant: str, kk: int, now_s: float, end_s: float) -> None:
        # a few updates per second are plenty for a progress bar
        if time.monotonic() - last[0] > 0.25 or now_s >= end_s:
            last[0] = time.monotonic()
            queue.put((variant, kk, now_s, end_s))

    return run_seed(_worker["client"], prep, k, scenario_seed, report if queue else None)


def _expected_wakeups(prep: PreparedVariant) -> float:
    """Monitor wake-ups a variant's policy will have, roughly (its cost drivers)."""
    from controller.firmware.policies import load_policy

    policy = load_policy(prep.variant.core.controller.policy.name, prep.variant.policy_params)
    interval = getattr(policy, "interval_s", None) or getattr(policy, "base_interval_s", None)
    return prep.variant.core.duration / interval if interval else 0.0


#: One (variant, seed) run to do: its index in the run's task list, its variant, its seed.
Task = tuple[int, PreparedVariant, int]


def _run_all(
    tasks: list[Task], twin_address: str | None, workers: int, report: ProgressFn | None,
    on_result: Callable[[int, SeedResult], None],
) -> None:  # fmt: skip
    """Run ``tasks``; ``on_result(index, result)`` is called (in this process) as each one
    finishes. If a run fails, the runs not yet started are dropped, those running are
    finished (and reported), then the first error is raised."""
    if workers <= 1 or len(tasks) <= 1:
        if not tasks:
            return
        with twin_client(twin_address) as client, sim_threads():
            for i, p, k in tasks:
                on_result(i, run_seed(client, p, k, p.variant.core.seed, report))
        return
    import multiprocessing as mp
    import queue as queue_mod
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

    ctx = mp.get_context("spawn")  # torch and gRPC do not survive fork()
    manager = ctx.Manager() if report is not None else None
    q = manager.Queue() if manager is not None else None
    error: BaseException | None = None
    try:
        n = min(workers, len(tasks))
        init = (twin_address, q)
        with ProcessPoolExecutor(n, ctx, initializer=_worker_init, initargs=init) as pool:
            # longest first: the makespan is set by the runs with the most wake-ups
            order = sorted(tasks, key=lambda t: -_expected_wakeups(t[1]))
            futures = {pool.submit(_worker_run, p, k, p.variant.core.seed): i
                       for i, p, k in order}  # fmt: skip
            pending = set(futures)
            while pending:
                # progress twice a second is plenty; the workers need the CPU
                done, pending = wait(pending, timeout=0.5, return_when=FIRST_COMPLETED)
                while q is not None:
                    try:
                        update = q.get_nowait()
                    except queue_mod.Empty:
                        break
                    if report is not None:
                        report(*update)
                for f in done:
                    if f.cancelled():
                        continue
                    try:
                        result = f.result()
                    except BaseException as exc:  # noqa: BLE001 - re-raised below
                        if error is None:
                            error = exc
                            for other in pending:
                                other.cancel()  # not started yet: dropped
                        continue
                    on_result(futures[f], result)
    finally:
        if manager is not None:
            manager.shutdown()
    if error is not None:
        raise error


def _tasks_of(loaded: LoadedScenario) -> list[tuple[str, int]]:
    """Every (variant, seed index) of the run, in run-folder order."""
    return [(v.name, k) for v in loaded.variants for k in range(v.core.seeds)]


def _scenario_text(loaded: LoadedScenario) -> str:
    try:
        return Path(loaded.source).read_text(encoding="utf-8")
    except OSError:
        import yaml

        return yaml.safe_dump(loaded.raw, sort_keys=False)


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
            tasks=_tasks_of(loaded), complete_key=complete_key or content_hash(loaded.raw),
        )  # fmt: skip
        return _run_checkpointed(loaded, ckpt, {}, twin_address=twin_address,
                                 progress=progress, on_prepared=on_prepared, workers=workers,
                                 resumed=False)  # fmt: skip
    finally:
        ckpt.unlock()


class AlreadyComplete(CheckpointError):
    """``--resume`` of a run folder whose run finished (``COMPLETE`` is there)."""


@dataclass
class ResumePlan:
    """What resuming a run folder will do: the scenario as the run started it, the runs
    already checkpointed (kept) and those left (run from their seed's start)."""

    loaded: LoadedScenario
    checkpoint: Checkpoint
    done: dict[int, SeedResult]
    tasks: list[tuple[str, int]]

    @property
    def todo(self) -> list[tuple[str, int]]:
        return [t for i, t in enumerate(self.tasks) if i not in self.done]


def _refuse_unresumable(run_dir: Path) -> None:
    if is_complete(run_dir):
        raise AlreadyComplete(
            f"{run_dir}: the run is already complete (COMPLETE is there): nothing to resume; "
            "to run it again, `pcm-twin run FILE --out RUN_DIR`"
        )
    if not Checkpoint(run_dir).exists():
        Checkpoint(run_dir).load()  # raises, saying what is missing


def plan_resume(run_dir: Path, checkpoint: Checkpoint | None = None) -> ResumePlan:
    """Read ``run_dir``'s checkpoint. Raises :class:`AlreadyComplete` for a finished run,
    :class:`CheckpointError` without (usable) checkpoint, and ``ScenarioInvalid`` if the
    recorded scenario no longer validates."""
    from controller.scenario.loader import ScenarioInvalid, check_text, sort_issues

    run_dir = Path(run_dir)
    _refuse_unresumable(run_dir)
    ckpt = checkpoint if checkpoint is not None else Checkpoint(run_dir)
    meta = ckpt.load()
    name = f"{meta['source']} (as checkpointed in {run_dir})"
    loaded, issues = check_text(meta["scenario_text"])
    if loaded is None or issues:
        raise ScenarioInvalid(sort_issues(issues), name)
    loaded.source = meta["source"]
    chosen = set(meta["variants"])
    loaded.variants = [v for v in loaded.variants if v.name in chosen]
    tasks = _tasks_of(loaded)
    if [list(t) for t in tasks] != meta["tasks"]:
        raise CheckpointError(
            f"{run_dir}: the checkpointed scenario no longer gives the runs it recorded "
            f"({len(tasks)} now, {len(meta['tasks'])} then): start it again with "
            "`pcm-twin run FILE --out RUN_DIR`"
        )
    return ResumePlan(loaded, ckpt, ckpt.saved(), tasks)


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
    _refuse_unresumable(run_dir)  # before taking the folder's lock (which creates files)
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
    """Run the tasks of ``ckpt`` not in ``done``, checkpointing each, then write the folder."""
    from controller.scenario.plots import plot_run

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

    bar = _ProgressBar(loaded) if progress is True else None
    report: ProgressFn | None = bar.update if bar is not None else (progress or None)
    if report is not None:
        for i in done:
            p, k = tasks[i]
            report(p.variant.name, k, p.variant.core.duration, p.variant.core.duration)
    sim_started = time.perf_counter()
    try:
        _run_all(todo, twin_address, workers, report, finished)
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
    plot_run(out_dir, ordered, summary, NOT_CORRECTION_KINDS)
    mark_complete(out_dir, meta["complete_key"])
    ckpt.remove()
    return RunOutput(out_dir, summary, ordered, wall)


class _ProgressBar:
    """A rich progress bar over simulated time, summed over every variant and seed (runs in
    parallel workers advance it together)."""

    def __init__(self, loaded: LoadedScenario) -> None:
        from rich.progress import (
            BarColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self.runs = sum(v.core.seeds for v in loaded.variants)
        total = sum(v.core.duration * v.core.seeds for v in loaded.variants)
        self.progress = Progress(
            TextColumn("{task.description}"), BarColumn(), TextColumn("{task.fields[sim]}"),
            TimeElapsedColumn(), TimeRemainingColumn(), refresh_per_second=2,
        )  # fmt: skip
        self.task = self.progress.add_task("simulated time", total=total, sim="")
        self.now: dict[tuple[str, int], float] = {}
        self.finished: set[tuple[str, int]] = set()
        self.progress.start()

    def update(self, variant: str, k: int, now_s: float, end_s: float) -> None:
        from controller.scenario.durations import format_duration

        now = min(now_s, end_s)
        self.now[(variant, k)] = now
        if now >= end_s:
            self.finished.add((variant, k))
        self.progress.update(
            self.task, completed=sum(self.now.values()),
            description=f"{len(self.finished)}/{self.runs} runs, {variant} seed {k}",
            sim=f"{format_duration(now) if now > 0 else '0s'} / {format_duration(end_s)}",
        )  # fmt: skip

    def close(self) -> None:
        self.progress.stop()


def default_out_dir(loaded: LoadedScenario) -> Path:
    return Path("results") / loaded.name
