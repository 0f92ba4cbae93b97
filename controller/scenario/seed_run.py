"""One variant on one device-noise seed: create its chip, run the firmware model, collect.

:func:`run_seed` creates the seed's chip on the twin, builds the controller's SimPy
:class:`~controller.firmware.ChipModel` with the variant's policy, programs the network, runs
the model through the duration with evaluations (test accuracy on the held-out images, every
MVM on the twin) at the requested times, and returns its timeline, events and counters
(:class:`~controller.scenario.results.SeedResult`), in the firmware's own terms
(:mod:`controller.firmware.quantities`).

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
from controller.scenario.durations import format_duration
from controller.scenario.prepare import PreparedVariant
from controller.scenario.progress import ProgressFn
from controller.scenario.results import SeedResult
from controller.workloads.adabs import make_compensation
from controller.workloads.mapping import evaluate


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

        model = ChipModel(
            make_environment(), client, chip_id, mapped,
            # this run's own policy
            load_policy(core.controller.policy.name, v.policy_params, v.policy_dir),
            config=core.controller.controller_config(), evaluator=evaluator,
            compensation_factory=lambda kind, m: make_compensation(kind, m, prep.calibration_x),
            chip_config=chip_config,
        )  # fmt: skip
        times = list(v.eval_times_s)
        model.schedule_evaluations(times, [format_duration(t) for t in times])
        report = None if progress is None else (lambda now, _end: progress(v.name, k, now, _end))
        # start, advance through the duration, finish the work begun at its end (an
        # evaluation there, and the wake-up due then: its corrections, the evaluation after)
        res = model.simulate(core.duration, progress=report)
    finally:
        client.delete_chip(chip_id)
        # a worker process may exit next: its embedded twin must not be left serving a session
        getattr(client, "close_session", lambda: None)()
    return SeedResult(
        variant=v.name,
        seed_index=k,
        chip_seed=seed,
        timeline=res.timeline,
        totals=res.counters,
        events=[e.to_dict() for e in res.events],
        info={"wall_s": time.perf_counter() - started, "error": res.totals.get("error")},
    )
