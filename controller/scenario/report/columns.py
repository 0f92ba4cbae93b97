"""The names the report reads from a run folder, in one place, and the older names they had.

Every column, summary field and event field the report and the loading API
(:mod:`controller.scenario.report.data`) use is named here; the run folder's vocabulary is the
firmware's (:mod:`controller.firmware.quantities`). Folders written before it (``summary.json``
version 1: ``t_s``, ``correction_energy_pj``, ``pulses``, phase ``scheduled`` ...) are renamed
on reading, so that a report, a comparison or a notebook reads runs of either version alike.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from controller.firmware import quantities as q

# --- timeline (timeline.parquet / .csv) ------------------------------------------------------
VARIANT = "variant"
SEED = "seed"
SCHEDULED_S = "scheduled_s"  # the evaluation time T the scenario asked for
MEASURED_S = "measured_s"  # when the evaluation read the chip
LABEL = "label"
PHASE = "phase"
ACCURACY = "accuracy"
AVAILABILITY = "availability"
BEFORE_CORRECTION = q.BEFORE_CORRECTION
AFTER_CORRECTION = q.AFTER_CORRECTION

# --- counters (timeline, summary totals) -----------------------------------------------------
UPKEEP_ENERGY_PJ = "upkeep_energy_pj"  # probes + correction jobs
CORRECTIONS = "corrections"
CORRECTION_PULSES = "correction_pulses"
DEVICES_CORRECTED = "devices_corrected"
ENERGY_PREFIX, ENERGY_SUFFIX = "energy_", "_pj"  # energy_<kind>_pj

# --- events (events.parquet) -----------------------------------------------------------------
KIND = "kind"
TILE = "tile"
START_S = "start_s"
END_S = "end_s"
DEVICES = "devices"
PULSES = "pulses"
ENERGY_PJ = "energy_pj"
CONTROLLER_ENERGY_PJ = "controller_energy_pj"
DRIFT_METRIC = "detail.drift_metric"  # a probe's mean |y_t - y_0| on its tile
PROBE, CORRECTION = q.PROBE, q.CORRECTION
#: What keeping the weights in place costs (the summary's ``upkeep_energy_kinds``).
UPKEEP_KINDS: tuple[str, ...] = q.UPKEEP_KINDS
#: Kinds spent once, at the start (not a rate per year).
ONE_TIME_KINDS: tuple[str, ...] = (q.PROGRAM, q.CALIBRATION)

# --- older names (summary.json version 1) -----------------------------------------------------
_V1_TIMELINE = {"t_s": SCHEDULED_S, "t_end_s": MEASURED_S, "t_label": LABEL,
                "correction_energy_pj": UPKEEP_ENERGY_PJ, "pulses": CORRECTION_PULSES}  # fmt: skip
_V1_TIMELINE_DROPPED = ("end_s", "correction_job_energy_pj")
_V1_PHASES = {"scheduled": BEFORE_CORRECTION}
_V1_COUNTERS = {"correction_energy_pj": UPKEEP_ENERGY_PJ, "pulses": CORRECTION_PULSES}
_V1_EVENTS = {"t_s": END_S}


def energy_column(kind: str) -> str:
    return f"{ENERGY_PREFIX}{kind}{ENERGY_SUFFIX}"


def energy_kinds(columns: Any) -> list[str]:
    """The event kinds of the ``energy_<kind>_pj`` columns among ``columns``."""
    out = []
    for c in columns:
        if c.startswith(ENERGY_PREFIX) and c.endswith(ENERGY_SUFFIX):
            kind = c[len(ENERGY_PREFIX) : -len(ENERGY_SUFFIX)]
            if kind and kind != "total":
                out.append(kind)
    return out


def timeline(frame: pd.DataFrame) -> pd.DataFrame:
    """A timeline frame in today's names."""
    if SCHEDULED_S in frame.columns or "t_s" not in frame.columns:
        return frame
    frame = frame.drop(columns=[c for c in _V1_TIMELINE_DROPPED if c in frame.columns])
    frame = frame.rename(columns=_V1_TIMELINE)
    if PHASE in frame.columns:
        frame[PHASE] = frame[PHASE].replace(_V1_PHASES)
    return frame


def events(frame: pd.DataFrame) -> pd.DataFrame:
    """An events frame in today's names."""
    if END_S in frame.columns or "t_s" not in frame.columns:
        return frame
    return frame.rename(columns=_V1_EVENTS)


def event_columns(names: list[str]) -> list[str]:
    """The names to ask an events file for: today's and their older names (a file has one
    or the other; :func:`events` renames)."""
    older = {new: old for old, new in _V1_EVENTS.items()}
    return [*names, *(older[n] for n in names if n in older)]


def summary(doc: dict[str, Any]) -> dict[str, Any]:
    """A ``summary.json`` in today's names (version 1 renamed; a copy, never in place)."""
    if doc.get("version", 1) >= 2:
        return doc
    out = {k: v for k, v in doc.items() if k != "correction_energy_counts"}
    out["upkeep_energy_kinds"] = doc.get("correction_energy_counts", list(UPKEEP_KINDS))
    out["variants"] = {}
    for name, v in doc.get("variants", {}).items():
        entry = {}
        for key, value in v.items():
            base, std = (key[:-4], "_std") if key.endswith("_std") else (key, "")
            entry[_V1_COUNTERS.get(base, base) + std] = value
        entry["totals"] = {_V1_COUNTERS.get(k, k): t for k, t in v.get("totals", {}).items()}
        out["variants"][name] = entry
    return out
