"""Run checkpoints and `pcm-twin run --resume`: what is kept, what is refused (the SIGKILL
tests are in tests/reliability/test_faults.py)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from controller.cli import app
from controller.scenario import pool, runner
from controller.scenario.checkpoint import (
    Checkpoint,
    CheckpointError,
    seed_result_from_json,
    seed_result_to_json,
)
from controller.scenario.loader import load_scenario
from controller.scenario.results import SeedResult
from tests.controller.scenario.conftest import SMOKE


def test_checkpointed_results_round_trip_exactly() -> None:
    """A seed result read back from its checkpoint JSON is the one written: every float bit
    for bit (NaN and infinities included), numpy scalars as Python numbers."""
    r = SeedResult(
        variant="v", seed_index=1, chip_seed=2**62 + 3,
        timeline=[{"scheduled_s": 0.1 + 0.2, "accuracy": np.float64(1 / 3), "drift_metric": math.nan,
                   "corrections": np.int64(7), "phase": "before_correction", "x": None}],
        totals={"a": 1e-300, "b": -math.inf},
        events=[{"kind": "probe", "detail": {"rows": (1, 2), "tolerance": np.float32(0.05)}}],
        info={"wall_s": 1.5, "error": None},
    )  # fmt: skip
    back = seed_result_from_json(json.loads(json.dumps(seed_result_to_json(r))))
    row = back.timeline[0]
    assert (
        row["scheduled_s"] == 0.1 + 0.2
        and row["accuracy"] == 1 / 3
        and math.isnan(row["drift_metric"])
    )
    assert type(row["corrections"]) is int and row["corrections"] == 7 and row["x"] is None
    assert back.totals == {"a": 1e-300, "b": -math.inf} and back.chip_seed == 2**62 + 3
    assert back.events[0]["detail"] == {"rows": [1, 2], "tolerance": float(np.float32(0.05))}
    assert (back.variant, back.seed_index, back.info) == ("v", 1, r.info)


def test_a_run_folder_has_one_writer(tmp_path: Path) -> None:
    """While a run holds a run folder, another run (or resume) of it is refused."""
    first = Checkpoint(tmp_path / "run")
    first.lock()
    try:
        with pytest.raises(CheckpointError, match="another pcm-twin run is writing"):
            Checkpoint(tmp_path / "run").lock()
        res = CliRunner().invoke(app, ["run", str(SMOKE), "--out", str(tmp_path / "run"),
                                       "--no-progress"])  # fmt: skip
        assert res.exit_code == 1 and "another pcm-twin run is writing" in res.output
    finally:
        first.unlock()
    second = Checkpoint(tmp_path / "run")
    second.lock()  # free again
    second.unlock()


@pytest.mark.parametrize(
    "args, message",
    [
        ([], "give a scenario FILE (or --resume RUN_DIR)"),
        (["FILE", "--resume", "DIR"], "give no FILE, --out or --variant"),
        (["--resume", "DIR", "--variant", "mult_gdc"], "give no FILE, --out or --variant"),
        (["--resume", "DIR", "--out", "elsewhere"], "give no FILE, --out or --variant"),
        (["--resume", "DIR"], "no checkpoint to resume from (checkpoint/run.json is missing)"),
    ],
)  # fmt: skip
def test_resume_refusals(tmp_path: Path, args: list[str], message: str) -> None:
    """`pcm-twin run` needs a FILE or --resume RUN_DIR, not both; --resume takes variants and
    folder from the checkpoint, and a folder without one is refused (exit 1, nothing written)."""
    run_dir = tmp_path / "DIR"
    run_dir.mkdir()
    args = [str(SMOKE) if a == "FILE" else str(run_dir) if a == "DIR" else a for a in args]
    res = CliRunner().invoke(app, ["run", *args, "--no-progress"])
    assert res.exit_code == 1, res.output
    assert message in res.output.replace("\n", " ")
    assert list(run_dir.iterdir()) == []


def test_a_failed_run_resumes_in_process(
    tmp_path: Path, tiny_scenario: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run that fails in its second seed keeps the first seed's checkpoint and says how to
    finish; `--resume` runs only the second seed and gives the uninterrupted run's summary."""
    scenario = {**tiny_scenario, "seeds": 2}
    f = tmp_path / "tiny.yaml"
    f.write_text(json.dumps(scenario))  # JSON is YAML
    real = pool.run_seed
    ran: list[int] = []

    def second_seed_fails(client, prep, k, *args, **kw):
        if k == 1:
            raise RuntimeError("the controller's machine went away")
        ran.append(k)
        return real(client, prep, k, *args, **kw)

    out = tmp_path / "run"
    with monkeypatch.context() as m:
        m.setattr(pool, "run_seed", second_seed_fails)
        res = CliRunner().invoke(app, ["run", str(f), "--out", str(out), "--workers", "1",
                                       "--no-progress"])  # fmt: skip
    assert res.exit_code == 2, res.output
    assert f"finish it with: pcm-twin run --resume {out}" in res.output.replace("\n", " ")
    assert ran == [0] and [p.name for p in (out / "checkpoint" / "seeds").iterdir()] == [
        "0000.json"
    ]

    def count(client, prep, k, *args, **kw):
        ran.append(k)
        return real(client, prep, k, *args, **kw)

    monkeypatch.setattr(pool, "run_seed", count)
    res = CliRunner().invoke(app, ["run", "--resume", str(out), "--workers", "1", "--no-progress"])
    assert res.exit_code == 0, res.output
    assert ran == [0, 1]  # the resume ran seed 1 only
    ref = runner.run_to_folder(load_scenario(f), tmp_path / "ref", progress=False)
    assert (out / "summary.json").read_bytes() == (ref.out_dir / "summary.json").read_bytes()
    assert (out / "events.parquet").read_bytes() == (ref.out_dir / "events.parquet").read_bytes()
