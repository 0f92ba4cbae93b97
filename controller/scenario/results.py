"""The run folder: resolved scenario, timeline table, events, summary, completion marker.

A run folder (``results/<scenario name>/`` by default) holds:

=========================== ==================================================================
``scenario.yaml``           the scenario as given (a copy of the file, or the sweep's point)
``scenario.resolved.yaml``  every variant fully resolved: defaults, overrides, recipes, seeds
``timeline.csv/.parquet``   one row per variant, seed and evaluation time (see ``SeedResult``)
``events.parquet``          every controller event, tagged with its variant and seed
                            (:mod:`controller.scenario.eventlog`: columnar, compressed)
``summary.json``            per variant, mean and std over seeds (see :func:`summarise`)
``run_info.json``           wall times, versions: what differs between two identical runs
``*.png``                   the plots (:mod:`controller.scenario.plots`)
``COMPLETE``                written last, atomically: the run finished (sweeps resume on it)
``checkpoint/``             while the run is unfinished: what ``pcm-twin run --resume`` needs
=========================== ==================================================================

``summary.json`` holds only what the scenario's seed determines, so the same scenario and seed
give a byte-identical file; anything wall-clock goes to ``run_info.json``. Standard deviations
are over device-noise seeds, with Bessel's correction (0 for a single seed).

Every column and field is named and derived in the firmware layer
(:mod:`controller.firmware.quantities`; the README's table says what each means). "Upkeep
energy" is what keeping the weights in place costs: the monitor's probes and the correction
jobs (twin pulses, reads and programming, plus the controller's digital work); the initial
programming, evaluations and inference are reported by kind but are not upkeep.
Checkpoints: :mod:`controller.scenario.checkpoint`.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from controller.firmware.quantities import BEFORE_CORRECTION, UPKEEP_KINDS
from controller.scenario.durations import format_duration
from controller.scenario.eventlog import EVENTS_FILE, write_events
from controller.scenario.stats import accuracy_uncertainty, compare_to_best, over_seeds

COMPLETE_MARKER = "COMPLETE"
#: 2: the firmware's vocabulary (upkeep_energy_pj, correction_pulses, upkeep_energy_kinds)
SUMMARY_VERSION = 2


@dataclass
class SeedResult:
    """What one variant did on one device-noise seed.

    ``timeline``: the model's rows, one per evaluation (``scheduled_s``, ``measured_s``,
    ``label``, ``phase``: ``before_correction`` or ``after_correction``, ``accuracy``, and
    the cumulative counters then: ``upkeep_energy_pj``, ``corrections``, ``correction_pulses``,
    ``availability``, ``energy_<kind>_pj`` ...). ``totals``: the same counters at the end of
    the duration. ``events``: the controller's ledger events as dicts.
    """

    variant: str
    seed_index: int
    chip_seed: int
    timeline: list[dict[str, Any]]
    totals: dict[str, float]
    events: list[dict[str, Any]] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)


# --- small helpers -------------------------------------------------------------------------------
def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` so that a reader sees the old file or the whole new one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes it 0600; results are for everyone
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _clean(value: Any) -> Any:
    """JSON-safe values: numpy scalars to Python, NaN/inf to None."""
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def dumps_json(obj: Any) -> str:
    return json.dumps(_clean(obj), indent=2, sort_keys=False, allow_nan=False) + "\n"


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for one value), ignoring NaN."""
    a = np.asarray([v for v in values if v is not None], dtype=np.float64)
    a = a[np.isfinite(a)]
    if a.size == 0:
        return math.nan, math.nan
    return float(a.mean()), float(a.std(ddof=1)) if a.size > 1 else 0.0


def content_hash(obj: Any) -> str:
    """A stable hash of JSON-able ``obj`` (sweeps use it to know a finished run is current)."""
    blob = json.dumps(_clean(obj), sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def _phase(r: SeedResult, phase: str) -> list[dict[str, Any]]:
    return [row for row in r.timeline if row["phase"] == phase]


# --- tables --------------------------------------------------------------------------------------
def timeline_frame(results: Iterable[SeedResult]) -> pd.DataFrame:
    """One row per variant, seed and evaluation time; counters are cumulative from t = 0."""
    rows: list[dict[str, Any]] = []
    for r in results:
        for row in r.timeline:
            rows.append({"variant": r.variant, "seed": r.seed_index, "chip_seed": r.chip_seed,
                         **row})  # fmt: skip
    frame = pd.DataFrame(rows)
    if frame.empty:
        return frame
    # an event kind that never happened in one run cost nothing there
    energy = [c for c in frame.columns if c.startswith("energy_") and c.endswith("_pj")]
    frame[energy] = frame[energy].fillna(0.0)
    first = ["variant", "seed", "chip_seed", "scheduled_s", "label", "phase", "accuracy"]
    first = [c for c in first if c in frame.columns]
    rest = sorted(c for c in frame.columns if c not in first)
    return frame[first + rest]


def summarise(
    scenario_name: str, seed: int, variants: Sequence[tuple[str, dict[str, Any]]],
    results: Sequence[SeedResult],
) -> dict[str, Any]:  # fmt: skip
    """The study's summary: per variant (in scenario order), mean and std over seeds of the
    accuracy at each evaluation time (the ``before_correction`` phase: the chip before any
    correction due at that instant, the worst point of the cycle; the accuracy once those
    corrections are done is ``accuracy_after_correction_mean``, None where there were none),
    the accuracy loss (first minus last evaluation), and of the end-of-run totals.

    ``variants``: (name, description) pairs, the description a small dict saying what the
    variant is (quantiser, training, policy ...).
    """
    out: dict[str, Any] = {
        "version": SUMMARY_VERSION,
        "scenario": scenario_name,
        "seed": seed,
        "upkeep_energy_kinds": list(UPKEEP_KINDS),
        "variants": {},
    }
    for name, described in variants:
        mine = sorted((r for r in results if r.variant == name), key=lambda r: r.seed_index)
        if not mine:
            continue
        times = [row["scheduled_s"] for row in _phase(mine[0], BEFORE_CORRECTION)]
        acc = [[row["accuracy"] for row in _phase(r, BEFORE_CORRECTION)] for r in mine]
        stats = [mean_std([a[i] for a in acc]) for i in range(len(times))]
        after = [
            mean_std([row["accuracy"] for r in mine for row in _phase(r, "after_correction")
                      if row["scheduled_s"] == t])[0]
            for t in times
        ]  # fmt: skip
        totals_keys = sorted({k for r in mine for k in r.totals})
        totals = {k: mean_std([r.totals.get(k, math.nan) for r in mine]) for k in totals_keys}
        entry: dict[str, Any] = {
            **described,
            "seeds": len(mine),
            "chip_seeds": [r.chip_seed for r in mine],
            "eval_times_s": times,
            "eval_labels": [format_duration(t) for t in times],
            "accuracy_mean": [s[0] for s in stats],
            "accuracy_std": [s[1] for s in stats],
            "accuracy_per_seed": acc,
            "accuracy_loss": (stats[0][0] - stats[-1][0]) if stats else math.nan,
            "accuracy_after_correction_mean": after,
        }
        for key in ("upkeep_energy_pj", "corrections", "correction_pulses", "availability"):
            m, s = totals.get(key, (math.nan, math.nan))
            entry[key] = m
            entry[f"{key}_std"] = s
        entry["totals"] = {k: {"mean": m, "std": s} for k, (m, s) in totals.items()}
        # how sure: 95 % intervals over seeds and over the test images (stats.py)
        entry.update(accuracy_uncertainty(acc, described.get("test_images")))
        # one figure for the whole run: each seed's mean over its evaluation times
        over_time = [float(np.mean(a)) if len(a) else math.nan for a in acc]
        est = over_seeds(over_time)
        entry["accuracy_time_mean"] = est.mean
        entry["accuracy_time_mean_ci95"] = [est.ci_low, est.ci_high]
        entry["accuracy_time_mean_per_seed"] = over_time
        upkeep = over_seeds([r.totals.get("upkeep_energy_pj") for r in mine])
        entry["upkeep_energy_pj_ci95"] = [upkeep.ci_low, upkeep.ci_high]
        out["variants"][name] = entry
    out["final_vs_best"] = final_vs_best(out["variants"])
    return out


def final_vs_best(variants: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """Each variant's accuracy at its last evaluation against the best one's (the highest
    mean; variants whose last evaluation is at another time are left out), seed by seed
    (:func:`~controller.scenario.stats.compare_to_best`)."""
    if not variants:
        return []
    last = {n: v["eval_times_s"][-1] if v["eval_times_s"] else None for n, v in variants.items()}
    best_at = max(variants, key=lambda n: _final_mean(variants[n]))
    same = {n: [s[-1] if s else None for s in v["accuracy_per_seed"]]
            for n, v in variants.items() if last[n] == last[best_at]}  # fmt: skip
    images = {v.get("test_images") for n, v in variants.items() if n in same}
    n_images = images.pop() if len(images) == 1 else None
    out = []
    for c in compare_to_best(same, n_images):
        out.append({**c.as_dict(), "at_s": last[best_at]})
    return out


def _final_mean(v: dict[str, Any]) -> float:
    m = v["accuracy_mean"][-1] if v["accuracy_mean"] else None
    return m if m is not None and math.isfinite(m) else -math.inf


# --- the folder ----------------------------------------------------------------------------------
def write_run_folder(
    out_dir: Path,
    *,
    scenario_text: str,
    resolved: dict[str, Any],
    results: Sequence[SeedResult],
    summary: dict[str, Any],
    run_info: dict[str, Any],
) -> None:
    """Write everything but the plots and the completion marker."""
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out_dir / "scenario.yaml", scenario_text)
    atomic_write_text(
        out_dir / "scenario.resolved.yaml",
        yaml.safe_dump(_clean(resolved), sort_keys=False, allow_unicode=True),
    )
    frame = timeline_frame(results)
    frame.to_csv(out_dir / "timeline.csv", index=False)
    if not frame.empty:
        frame.to_parquet(out_dir / "timeline.parquet", index=False)
    write_events(out_dir / EVENTS_FILE, ((r.variant, r.seed_index, ev) for r in results
                                         for ev in r.events))  # fmt: skip
    atomic_write_text(out_dir / "summary.json", dumps_json(summary))
    atomic_write_text(out_dir / "run_info.json", dumps_json(run_info))


def mark_complete(out_dir: Path, key: str) -> None:
    """Write the completion marker (last, atomically) holding the run's content ``key``."""
    atomic_write_text(out_dir / COMPLETE_MARKER, json.dumps({"key": key}) + "\n")


def is_complete(out_dir: Path, key: str | None = None) -> bool:
    """Whether ``out_dir`` holds a finished run (of the scenario with content ``key``)."""
    marker = out_dir / COMPLETE_MARKER
    if not marker.is_file() or not (out_dir / "summary.json").is_file():
        return False
    if key is None:
        return True
    try:
        return json.loads(marker.read_text()).get("key") == key
    except (OSError, ValueError):
        return False


def clear_complete(out_dir: Path) -> None:
    """Remove the marker before a run starts, so a crash never leaves a stale one."""
    (out_dir / COMPLETE_MARKER).unlink(missing_ok=True)


# --- the terminal table --------------------------------------------------------------------------
def shared_times(variants: dict[str, dict[str, Any]]) -> list[tuple[float, str]]:
    """The evaluation times every variant has, in order, with their labels (variants may
    evaluate at times of their own; a table shows the common ones)."""
    if not variants:
        return []
    first = next(iter(variants.values()))
    common = set.intersection(*(set(v["eval_times_s"]) for v in variants.values()))
    return [(t, lab) for t, lab in zip(first["eval_times_s"], first["eval_labels"], strict=True)
            if t in common]  # fmt: skip


def time_index(v: dict[str, Any], t: float) -> int | None:
    """Where evaluation time ``t`` sits in a variant's lists (None: not evaluated then)."""
    try:
        return list(v["eval_times_s"]).index(t)
    except ValueError:
        return None


def summary_table_rows(summary: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """Header and rows of the paper-style table: accuracy (mean ± std, %) per evaluation time,
    then the upkeep energy, corrections, correction pulses, and the time a tile was unavailable to
    inference ((1 - availability) x duration: availability itself is 99.99999... %)."""
    variants = summary["variants"]
    if not variants:
        return ["variant"], []
    times = shared_times(variants)
    header = ["variant", *(lab for _, lab in times), "upkeep energy", "corrections", "pulses",
              "tile downtime"]  # fmt: skip
    rows = []
    for name, v in variants.items():
        at = [time_index(v, t) for t, _ in times]
        pairs = [(v["accuracy_mean"][i], v["accuracy_std"][i]) for i in at if i is not None]
        accs = [
            f"{100 * m:.1f} ± {100 * s:.1f}" if m is not None and math.isfinite(m) else "-"
            for m, s in pairs
        ]
        rows.append(
            [
                name,
                *accs,
                format_energy_pj(v["upkeep_energy_pj"]),
                f"{v['corrections']:.0f}",
                format_count(v["correction_pulses"]),
                format_downtime(v["availability"], v.get("duration_s")),
            ]
        )
    return header, rows


def format_count(n: float | None) -> str:
    """``812``, ``45.7 k``, ``276 M``."""
    if n is None or not math.isfinite(n):
        return "-"
    for unit, scale in ((" G", 1e9), (" M", 1e6), (" k", 1e4)):
        if abs(n) >= scale:
            return f"{n / (scale if unit != ' k' else 1e3):.3g}{unit}"
    return f"{n:.0f}"


def format_downtime(availability: float | None, duration_s: float | None) -> str:
    """Unavailable time per tile over the run: ``0.34 s``, ``12 ms``."""
    if availability is None or duration_s is None or not math.isfinite(availability):
        return "-"
    down_s = max(0.0, 1.0 - availability) * duration_s
    if down_s >= 1:
        return f"{down_s:.3g} s"
    if down_s >= 1e-3:
        return f"{down_s * 1e3:.3g} ms"
    return f"{down_s * 1e6:.3g} us"


def format_energy_pj(pj: float | None) -> str:
    """``1.23 uJ`` style: pJ, nJ, uJ, mJ, J."""
    if pj is None or not math.isfinite(pj):
        return "-"
    if pj == 0:
        return "0"
    for unit, scale in (("J", 1e12), ("mJ", 1e9), ("uJ", 1e6), ("nJ", 1e3)):
        if abs(pj) >= scale:
            return f"{pj / scale:.3g} {unit}"
    return f"{pj:.3g} pJ"


def markdown_table(summary: dict[str, Any]) -> str:
    """The summary table in Markdown (for the README)."""
    header, rows = summary_table_rows(summary)
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines) + "\n"
