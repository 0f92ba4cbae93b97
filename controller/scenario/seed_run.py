"""One variant on one device-noise seed: create its chip, run the firmware model, collect.

:func:`run_seed` creates the seed's chip on the twin, builds the controller's SimPy
:class:`~controller.firmware.ChipModel` with the variant's policy, programs the network, runs
the model through the duration with evaluations (test accuracy on the held-out images, every
MVM on the twin) at the requested times, and returns its timeline, events and totals in the
run folder's terms (:class:`~controller.scenario.results.SeedResult`).

Seeds. Device-noise seed ``k`` of a variant is ``chip_seed(seed, k)``, from the scenario's
``seed``. Seed ``k`` is the same for every variant (common random numbers): variants are
compared on the same draws of device noise, so their differences are the variants', not the
dice's.
"""

from __future__ import annotations

import re
import time
import uuid
from typing import Any

import numpy as np

from controller.firmware import ChipModel, make_environment
from controller.firmware.policies import load_policy
from controller.scenario.prepare import PreparedVariant
from controller.scenario.progress import ProgressFn
from controller.scenario.results import SeedResult
from controller.workloads.mapping import evaluate

#: Event kinds that are not the cost of keeping weights in place (everything else is:
#: probes and correction jobs). See ``results`` for the definition of correction energy.
NOT_CORRECTION_KINDS = frozenset(
    {"program", "calibration", "evaluation", "inference", "policy", "policy_error", "error"}
)


def chip_seed(scenario_seed: int, k: int) -> int:
    """The device-noise seed of seed index ``k`` (the same for every variant)."""
    state = np.random.SeedSequence([int(scenario_seed), 0x70636D, int(k)]).generate_state(
        1, np.uint64
    )
    return int(state[0]) >> 1  # ChipConfig seeds are < 2**63


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
            # this run's own policy
            load_policy(core.controller.policy.name, v.policy_params, v.policy_dir),
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
