"""Resuming an interrupted run from its run folder's checkpoint (``pcm-twin run --resume``).

Each (variant, seed) run's result is written to the run folder's ``checkpoint/`` as soon as
it finishes (:class:`~controller.scenario.checkpoint.Checkpoint`). :func:`plan_resume` reads that
checkpoint back: the scenario as the run started it, the runs already done (kept) and those
left; the runner then runs the others (:func:`~controller.scenario.runner.resume_folder`).
The checkpoint is per (variant, seed), not inside one: the controller is a set of SimPy
generator processes, whose state in the middle of a simulation cannot be saved and restored,
so a run interrupted in the middle of a seed runs that seed again from its start (the same
result: every run is determined by its variant and seed).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from controller.scenario.checkpoint import Checkpoint, CheckpointError
from controller.scenario.loader import LoadedScenario, ScenarioInvalid, check_text, sort_issues
from controller.scenario.results import SeedResult, is_complete


class AlreadyComplete(CheckpointError):
    """``--resume`` of a run folder whose run finished (``COMPLETE`` is there)."""


def tasks_of(loaded: LoadedScenario) -> list[tuple[str, int]]:
    """Every (variant, seed index) of the run, in run-folder order."""
    return [(v.name, k) for v in loaded.variants for k in range(v.core.seeds)]


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


def refuse_unresumable(run_dir: Path) -> None:
    """Raise :class:`AlreadyComplete` for a finished run, :class:`CheckpointError` for a
    folder without a checkpoint (saying what is missing)."""
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
    run_dir = Path(run_dir)
    refuse_unresumable(run_dir)
    ckpt = checkpoint if checkpoint is not None else Checkpoint(run_dir)
    meta = ckpt.load()
    name = f"{meta['source']} (as checkpointed in {run_dir})"
    source = meta["source"]
    base_dir = None if source.startswith("<") else str(Path(source).resolve().parent)
    loaded, issues = check_text(meta["scenario_text"], base_dir)
    if loaded is None or issues:
        raise ScenarioInvalid(sort_issues(issues), name)
    loaded.source = meta["source"]
    chosen = set(meta["variants"])
    loaded.variants = [v for v in loaded.variants if v.name in chosen]
    tasks = tasks_of(loaded)
    if [list(t) for t in tasks] != meta["tasks"]:
        raise CheckpointError(
            f"{run_dir}: the checkpointed scenario no longer gives the runs it recorded "
            f"({len(tasks)} now, {len(meta['tasks'])} then): start it again with "
            "`pcm-twin run FILE --out RUN_DIR`"
        )
    return ResumePlan(loaded, ckpt, ckpt.saved(), tasks)
