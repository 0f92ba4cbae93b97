"""Load a run folder or a sweep folder as pandas frames: the Python API for notebooks.

>>> from controller.scenario.report import load_run
>>> run = load_run("results/smoke")
>>> run.summary_frame            # one row per variant: accuracy at each time, energy, ...
>>> run.timeline                 # one row per variant, seed, evaluation time and phase
>>> run.events(kinds=["probe"])  # ledger events (only the columns and kinds asked for)

:func:`load_run` reads ``summary.json``, the scenario files and ``run_info.json`` at once and
the timeline and events when first asked (the events of a year of hourly wake-ups are
hundreds of thousands of rows: ask for the columns and kinds you need). :func:`load_sweep`
reads a sweep folder: its table (one row per grid point and variant) and each point's run.
:func:`load` takes either. Folders of older versions are read in today's names
(:mod:`~controller.scenario.report.columns`).

Frames:

- ``RunData.summary_frame``: one row per variant, index ``variant``: what the variant is
  (network, quantiser, policy, ...), ``seeds``, ``accuracy_loss``, ``upkeep_energy_pj``,
  ``corrections``, ``correction_pulses``, ``availability`` (and their ``_std`` over seeds),
  ``accuracy_<label>`` / ``accuracy_<label>_std`` per evaluation time.
- ``RunData.timeline``: ``timeline.parquet`` (README, "What the numbers mean").
- ``RunData.events(columns=None, kinds=None)``: ``events.parquet``, one row per ledger
  event, ``detail.<key>`` columns for the events' details.
- ``RunData.accuracy``: long form, one row per variant, seed, evaluation time and phase:
  ``variant, seed, scheduled_s, label, phase, accuracy`` (for seaborn-style plotting).
- ``SweepData.table``: ``sweep.parquet``, with a ``run`` column naming the point's folder
  (``SweepData.run(name)`` loads it).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from controller.scenario.eventlog import events_path, read_events
from controller.scenario.report import columns as col

#: Summary fields that are one number per variant (their ``_std`` too, where there is one).
_SCALARS = ("seeds", "accuracy_loss", col.UPKEEP_ENERGY_PJ, col.CORRECTIONS,
            col.CORRECTION_PULSES, col.AVAILABILITY, "digital_accuracy", "duration_s",
            "weights_on_chip", "tiles", "test_images")  # fmt: skip
_DESCRIPTION = ("network", "training", "quantiser", "policy", "compensation")


class NotARunFolder(ValueError):
    """A folder that holds no finished run (or sweep)."""


@dataclass
class RunData:
    """One run folder (see the module docstring)."""

    path: Path
    summary: dict[str, Any]
    scenario_text: str = ""
    resolved: dict[str, Any] = field(default_factory=dict)
    run_info: dict[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return str(self.summary.get("scenario", self.path.name))

    @property
    def variants(self) -> list[str]:
        """Variant names in the scenario's order."""
        return list(self.summary.get("variants", {}))

    @property
    def description(self) -> str:
        return str(self.resolved.get("description") or "")

    @cached_property
    def summary_frame(self) -> pd.DataFrame:
        rows = []
        for name, v in self.summary.get("variants", {}).items():
            row: dict[str, Any] = {"variant": name}
            row.update({k: v.get(k) for k in _DESCRIPTION})
            for key in _SCALARS:
                row[key] = v.get(key)
                if f"{key}_std" in v:
                    row[f"{key}_std"] = v[f"{key}_std"]
            for label, m, s in zip(v.get("eval_labels", []), v.get("accuracy_mean", []),
                                   v.get("accuracy_std", []), strict=False):  # fmt: skip
                row[f"accuracy_{label}"] = m
                row[f"accuracy_{label}_std"] = s
            rows.append(row)
        return pd.DataFrame(rows).set_index("variant") if rows else pd.DataFrame()

    @cached_property
    def timeline(self) -> pd.DataFrame:
        for name, read in (("timeline.parquet", pd.read_parquet), ("timeline.csv", pd.read_csv)):
            if (self.path / name).is_file():
                return col.timeline(read(self.path / name))
        return pd.DataFrame()

    @property
    def accuracy(self) -> pd.DataFrame:
        keep = [col.VARIANT, col.SEED, col.SCHEDULED_S, col.LABEL, col.PHASE, col.ACCURACY]
        t = self.timeline
        return t[[c for c in keep if c in t.columns]].copy()

    @cached_property
    def events_file(self) -> Path | None:
        return events_path(self.path)

    def events(
        self, columns: Sequence[str] | None = None, kinds: Sequence[str] | None = None
    ) -> pd.DataFrame:
        """Ledger events (``columns``: only these, ``kinds``: only these event kinds)."""
        path = self.events_file
        if path is None:
            return pd.DataFrame(columns=list(columns or []))
        if columns is not None:
            columns = col.event_columns(list(columns))
        return col.events(read_events(path, columns, kinds))

    @cached_property
    def tile_layers(self) -> dict[str, dict[int, str]]:
        """Per variant, the layer each tile holds (empty for folders that did not record it)."""
        out = {}
        for name, v in self.summary.get("variants", {}).items():
            out[name] = {int(t): str(layer) for t, layer in (v.get("tile_layers") or {}).items()}
        return out


@dataclass
class SweepData:
    """A sweep folder: its combined table and its runs."""

    path: Path
    table: pd.DataFrame
    meta: dict[str, Any]

    @property
    def name(self) -> str:
        return str(self.meta.get("scenario", self.path.name))

    @property
    def runs(self) -> list[str]:
        return [r["name"] for r in self.meta.get("runs", [])]

    def run_dir(self, name: str) -> Path:
        return self.path / "runs" / name

    def run(self, name: str) -> RunData:
        return load_run(self.run_dir(name))


def _read_yaml(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    return data if isinstance(data, dict) else {}


def load_run(path: str | Path) -> RunData:
    """A run folder (raises :class:`NotARunFolder` if it has no ``summary.json``)."""
    path = Path(path)
    summary_file = path / "summary.json"
    if not summary_file.is_file():
        raise NotARunFolder(f"{path}: not a run folder (no summary.json)")
    info = path / "run_info.json"
    scenario = path / "scenario.yaml"
    return RunData(
        path=path,
        summary=col.summary(json.loads(summary_file.read_text(encoding="utf-8"))),
        scenario_text=scenario.read_text(encoding="utf-8") if scenario.is_file() else "",
        resolved=_read_yaml(path / "scenario.resolved.yaml"),
        run_info=json.loads(info.read_text(encoding="utf-8")) if info.is_file() else {},
    )


def _sweep_table(path: Path) -> pd.DataFrame:
    for name, read in (("sweep.parquet", pd.read_parquet), ("sweep.csv", pd.read_csv)):
        if (path / name).is_file():
            return read(path / name).rename(columns={"correction_energy_pj": col.UPKEEP_ENERGY_PJ,
                                                     "correction_energy_pj_std":
                                                     f"{col.UPKEEP_ENERGY_PJ}_std",
                                                     "pulses": col.CORRECTION_PULSES})  # fmt: skip
    return pd.DataFrame()


def load_sweep(path: str | Path) -> SweepData:
    """A sweep folder (raises :class:`NotARunFolder` if it has no ``sweep.json``)."""
    path = Path(path)
    meta_file = path / "sweep.json"
    if not meta_file.is_file():
        raise NotARunFolder(f"{path}: not a sweep folder (no sweep.json)")
    return SweepData(path, _sweep_table(path), json.loads(meta_file.read_text(encoding="utf-8")))


def is_sweep(path: str | Path) -> bool:
    return (Path(path) / "sweep.json").is_file()


def load(path: str | Path) -> RunData | SweepData:
    """A run folder or a sweep folder, whichever ``path`` is."""
    return load_sweep(path) if is_sweep(path) else load_run(path)
