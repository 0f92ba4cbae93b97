"""The firmware's words for what it measures: event kinds, times, counters, derived energies.

Every table that reports on a chip uses these names with these meanings, and they are derived
only here: ``ChipModel.totals()``, the timeline rows of evaluations, the ledger's events, a
run folder's ``timeline.csv``, ``events.parquet`` and ``summary.json``, and ChipHost's status.
The README's "What the numbers mean" table is the user's copy (a test holds it to the run
folder's columns).

**Event kinds** (:data:`EVENT_KINDS`): one ledger event per action of the firmware.
:data:`UPKEEP_KINDS` are what keeping the weights in place costs: the monitor's probes and the
correction jobs. Programming, calibration, evaluations and inference are the network's own
work, reported by kind but never upkeep.

**Times** (device seconds). ``sim_time_s``: the model's clock now. An action (a ledger event,
an inference, a correction job) runs from ``start_s`` (it got its tiles) to ``end_s`` (the
latency its twin operations reported later). An evaluation row has ``scheduled_s``, the time T
it was scheduled for, and ``measured_s``, the instant its MVMs read the chip: T (later if it
waited for a tile under correction), or for an ``after_correction`` row the time the
corrections of T ended.

**Energies** (pJ; twin plus the controller's digital work unless the name starts with
``twin_`` or ``controller_``): ``energy_<kind>_pj`` per event kind (``energy_correction_pj``
is the correction jobs' energy); ``upkeep_energy_pj`` = probes + correction jobs.
Per-kind names start with ``energy_``; derived ones put their own word first.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

# --- event kinds --------------------------------------------------------------------------
PROGRAM = "program"
CALIBRATION = "calibration"
PROBE = "probe"
CORRECTION = "correction"
INFERENCE = "inference"
EVALUATION = "evaluation"
POLICY = "policy"
POLICY_ERROR = "policy_error"
ERROR = "error"

#: Every kind of ledger event, and what one stands for.
EVENT_KINDS: dict[str, str] = {
    PROGRAM: "a tile programmed from RESET to its targets (the network's load)",
    CALIBRATION: "drift compensation's reference read, right after programming",
    PROBE: "the drift monitor's read of one tile at a wake-up",
    CORRECTION: "a correction job: program-and-verify of some devices of one tile",
    INFERENCE: "a host inference request (its forward pass on the chip)",
    EVALUATION: "a scheduled evaluation (the evaluator's forward passes on the chip)",
    POLICY: "the correction policy was replaced",
    POLICY_ERROR: "a policy raised or returned nonsense: the run stopped",
    ERROR: "the twin or an evaluator failed: the run stopped",
}

#: Event kinds whose energy is upkeep: what keeping the weights in place costs.
UPKEEP_KINDS: tuple[str, ...] = (PROBE, CORRECTION)

# --- evaluation phases ----------------------------------------------------------------------
#: An evaluation at T, before any correction due at T (the worst point of the cycle).
BEFORE_CORRECTION = "before_correction"
#: The same evaluation again, once the corrections of T have ended.
AFTER_CORRECTION = "after_correction"


@dataclass
class JobStats:
    """Running counts of the correction jobs of a chip."""

    jobs: int = 0
    devices: int = 0  # devices the jobs were given
    failed_devices: int = 0  # still outside tolerance when their job ended


def upkeep_energy_pj(energy_by_kind_pj: Mapping[str, float]) -> float:
    """Probes plus correction jobs (twin and controller energy), from energies by kind."""
    return float(sum(e for kind, e in energy_by_kind_pj.items() if kind in UPKEEP_KINDS))


def counters(
    ledger: Any, jobs: JobStats, monitor_wakeups: int, availability: float
) -> dict[str, float]:
    """The chip's cumulative counters, flat (numbers only): the same keys in the model's
    totals, every timeline row, ``summary.json`` and ChipHost's status.

    ``ledger``: the :class:`~controller.firmware.ledger.Ledger`."""
    by_kind = ledger.energy_by_kind_pj()
    corr = ledger.totals.get(CORRECTION)
    out: dict[str, float] = {
        "corrections": jobs.jobs,
        "devices_corrected": jobs.devices,
        "failed_devices": jobs.failed_devices,
        "correction_pulses": corr.pulses if corr else 0,
        "monitor_wakeups": monitor_wakeups,
        "upkeep_energy_pj": upkeep_energy_pj(by_kind),
        "twin_energy_pj": ledger.twin_energy_pj,
        "controller_energy_pj": ledger.controller_energy_pj,
        "availability": availability,
    }
    for kind, e in by_kind.items():
        out[f"energy_{kind}_pj"] = e
    return out


def drift_columns(tile_metrics: Mapping[int, Mapping[str, float]]) -> dict[str, float]:
    """The latest probe's drift metric per tile and its mean over tiles, and when that probe
    began (``drift_probed_s``: the latest over tiles; NaN before any probe). A metric is
    never newer than its probe: in an ``after_correction`` row it is the wake-up's probe,
    read before its corrections."""
    if not tile_metrics:
        return {"drift_metric": math.nan, "drift_probed_s": math.nan}
    out = {
        "drift_metric": float(np.mean([v["drift_metric"] for v in tile_metrics.values()])),
        "drift_probed_s": float(max(v["at_s"] for v in tile_metrics.values())),
    }
    for t, v in sorted(tile_metrics.items()):
        out[f"drift_metric_tile{t}"] = v["drift_metric"]
    return out


def timeline_row(
    *,
    scheduled_s: float,
    measured_s: float,
    label: str,
    phase: str,
    policy: str,
    metrics: Mapping[str, float],
    counts: Mapping[str, float],
    tile_metrics: Mapping[int, Mapping[str, float]],
) -> dict[str, Any]:
    """One evaluation's row: when it was due and when it read the chip, what the evaluator
    measured, the counters at the end of the evaluation (its own MVMs included) and the
    latest drift metrics."""
    return {
        "scheduled_s": float(scheduled_s),
        "measured_s": float(measured_s),
        "label": label,
        "phase": phase,
        "policy": policy,
        **metrics,
        **counts,
        **drift_columns(tile_metrics),
    }
