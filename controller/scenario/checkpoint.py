"""Checkpoints of a run folder: what ``pcm-twin run --resume`` needs after an interruption.

The ``checkpoint/`` folder (:class:`Checkpoint`): ``run.json``, written when the run
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
import json
import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from controller.scenario.results import SeedResult, atomic_write_text, content_hash

CHECKPOINT_DIR = "checkpoint"
CHECKPOINT_VERSION = 1


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
