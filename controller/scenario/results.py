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

Checkpoints (``checkpoint/``, see :class:`Checkpoint`): ``run.json``, written when the run
starts, holds the scenario text, its source, the variants chosen and the run's content key;
``seeds/NNNN.json`` holds one (variant, seed) run's :class:`SeedResult`, written as soon as
that run finishes. Every file is JSON written atomically (temp file, fsync, rename), never a
pickle; floats round-trip exactly (Python's ``json``; NaN is written as ``NaN``), so a resumed
run writes the same files as an uninterrupted one. The folder is removed once ``COMPLETE`` is
written.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import math
import os
import shutil
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
CHECKPOINT_DIR = "checkpoint"
CHECKPOINT_VERSION = 1


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


# --- checkpoints ---------------------------------------------------------------------------------
class CheckpointError(ValueError):
    """A run folder that cannot be resumed (no checkpoint, an unreadable one, in use)."""


def _plain(value: Any) -> Any:
    """JSON-able values for a checkpoint: numpy scalars to Python, tuples to lists; floats
    (NaN and infinities included) are kept exactly as they are."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


def seed_result_to_json(r: SeedResult) -> dict[str, Any]:
    return _plain({"variant": r.variant, "seed_index": r.seed_index, "chip_seed": r.chip_seed,
                   "timeline": r.timeline, "totals": r.totals, "events": r.events,
                   "info": r.info})  # fmt: skip


def seed_result_from_json(d: dict[str, Any]) -> SeedResult:
    return SeedResult(
        variant=str(d["variant"]), seed_index=int(d["seed_index"]), chip_seed=int(d["chip_seed"]),
        timeline=list(d["timeline"]), totals=dict(d["totals"]), events=list(d["events"]),
        info=dict(d.get("info") or {}),
    )  # fmt: skip


class Checkpoint:
    """The ``checkpoint/`` folder of a run folder: what an interrupted run needs to resume.

    ``run.json`` (written by :meth:`start`): ``scenario_text``, ``source``, ``variants`` (the
    ones chosen), ``tasks`` ([variant, seed index] in the order the run folder lists them),
    ``complete_key`` (for ``COMPLETE``) and ``key`` (a hash of all of it, also in every seed
    file, so a seed file of another run is never taken). ``seeds/NNNN.json``: task NNNN's
    :class:`SeedResult` (:meth:`save`). A run holds ``LOCK`` (``flock``) while it runs, so two
    runs never write one folder at once.
    """

    def __init__(self, out_dir: Path) -> None:
        self.out_dir = Path(out_dir)
        self.dir = self.out_dir / CHECKPOINT_DIR
        self._lock_fd: int | None = None
        self.meta: dict[str, Any] = {}

    @property
    def meta_path(self) -> Path:
        return self.dir / "run.json"

    def exists(self) -> bool:
        return self.meta_path.is_file()

    def lock(self) -> None:
        """Own the run folder (released by :meth:`unlock`, or when the process dies)."""
        self.dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.dir / "LOCK", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise CheckpointError(
                f"{self.out_dir}: another pcm-twin run is writing this run folder"
            ) from None
        self._lock_fd = fd

    def unlock(self) -> None:
        if self._lock_fd is not None:
            with contextlib.suppress(OSError):
                fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
            os.close(self._lock_fd)
            self._lock_fd = None

    def start(
        self, *, scenario_text: str, source: str, variants: Sequence[str],
        tasks: Sequence[tuple[str, int]], complete_key: str,
    ) -> None:  # fmt: skip
        """A fresh run: forget any earlier checkpoint, record what this run is."""
        shutil.rmtree(self.dir / "seeds", ignore_errors=True)
        self.meta_path.unlink(missing_ok=True)
        meta = {
            "version": CHECKPOINT_VERSION,
            "scenario_text": scenario_text,
            "source": source,
            "variants": list(variants),
            "tasks": [[v, int(k)] for v, k in tasks],
            "complete_key": complete_key,
        }
        meta["key"] = content_hash(meta)
        atomic_write_text(self.meta_path, json.dumps(meta, indent=2) + "\n")
        self.meta = meta

    def load(self) -> dict[str, Any]:
        """``run.json`` (raises :class:`CheckpointError` if absent or unreadable)."""
        if not self.exists():
            raise CheckpointError(
                f"{self.out_dir}: no checkpoint to resume from ({CHECKPOINT_DIR}/run.json is "
                "missing): start the run with `pcm-twin run FILE --out RUN_DIR`"
            )
        try:
            meta = json.loads(self.meta_path.read_text(encoding="utf-8"))
            if meta.get("version") != CHECKPOINT_VERSION:
                raise ValueError(f"version {meta.get('version')!r}, expected {CHECKPOINT_VERSION}")
            for name in ("scenario_text", "source", "variants", "tasks", "complete_key", "key"):
                if name not in meta:
                    raise ValueError(f"no {name!r}")
        except (OSError, ValueError) as exc:
            raise CheckpointError(f"{self.meta_path}: unreadable checkpoint: {exc}") from None
        self.meta = meta
        return meta

    def _seed_path(self, index: int) -> Path:
        return self.dir / "seeds" / f"{index:04d}.json"

    def save(self, index: int, result: SeedResult) -> None:
        """Task ``index``'s result, atomically."""
        task = self.meta["tasks"][index]
        if [result.variant, result.seed_index] != task:
            raise ValueError(f"task {index} is {task}, not {[result.variant, result.seed_index]}")
        doc = {"key": self.meta["key"], "task": index, "result": seed_result_to_json(result)}
        atomic_write_text(self._seed_path(index), json.dumps(doc, separators=(",", ":")) + "\n")

    def saved(self) -> dict[int, SeedResult]:
        """Every task with a result in the checkpoint (files of another run are ignored)."""
        out: dict[int, SeedResult] = {}
        for i, task in enumerate(self.meta["tasks"]):
            path = self._seed_path(i)
            if not path.is_file():
                continue
            try:
                doc = json.loads(path.read_text(encoding="utf-8"))
                r = seed_result_from_json(doc["result"])
            except (OSError, ValueError, KeyError, TypeError):
                continue  # never written whole (the rename is atomic) or damaged: run again
            if doc.get("key") == self.meta["key"] and [r.variant, r.seed_index] == task:
                out[i] = r
        return out

    def remove(self) -> None:
        """The run is complete: drop the checkpoint (its results are in the run folder)."""
        shutil.rmtree(self.dir, ignore_errors=True)


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
