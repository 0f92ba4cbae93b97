"""Faults during a scenario run: the twin SIGKILL-ed and restarted on its state directory, and
the controller SIGKILL-ed and resumed with `pcm-twin run --resume`; both end with the same
summary.json (and timeline and events) as an uninterrupted run with the same seed."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from controller.cli import app
from controller.rpc.client import TwinClient
from controller.scenario.loader import load_scenario
from controller.scenario.runner import run_to_folder
from device_twin.errors import NotFound
from tests.device_twin.service.conftest import REPO, ServerProcess, free_port

#: Two variants x two seeds: `gdc` runs are quick (no monitoring), `threshold` runs check
#: every hour for three days (a few seconds each), so a fault lands in the middle of one.
SCENARIO = {
    "name": "faults",
    "seed": 11,
    "seeds": 2,
    "duration": "3d",
    "evaluation": {"times": ["1s", "1h", "1d", "3d"]},
    "workload": {"network": "digits_mlp", "test_images": 200},
    "training": {"kind": "digital", "digital": {"epochs": 15}},
    "mapping": {"quantiser": {"kind": "multiplicative", "n_levels": 8, "annealing": {"n_steps": 60}}},
    "chip": {"tile_rows": 64, "tile_cols": 64},
    "controller": {"policy": {"name": "gdc"}},
    "variants": {
        "gdc": {},
        "threshold": {"controller": {"policy": {
            "name": "threshold", "params": {"interval_s": "1h", "threshold": 0.05}}}},
    },
}  # fmt: skip
#: Files of the run folder that the scenario and its seed determine, byte for byte.
SAME_FILES = ("summary.json", "timeline.csv", "events.parquet", "scenario.yaml",
              "scenario.resolved.yaml")  # fmt: skip
WAIT_S = 300.0  # generous: a loaded 2-core machine


@pytest.fixture(scope="module")
def scenario_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    f = tmp_path_factory.mktemp("faults") / "faults.yaml"
    f.write_text(yaml.safe_dump(SCENARIO, sort_keys=False))
    return f


@pytest.fixture(scope="module")
def reference(scenario_file: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The uninterrupted run (embedded twin, one process)."""
    out = tmp_path_factory.mktemp("reference") / "run"
    run_to_folder(load_scenario(scenario_file), out, progress=False, workers=1)
    return out


def start_run(*args: str, log: Path) -> subprocess.Popen:
    """`pcm-twin run ...` in a subprocess (killable with SIGKILL)."""
    cmd = [sys.executable, "-m", "controller.cli", "run", *args, "--no-progress"]
    with open(log, "wb") as f:
        return subprocess.Popen(cmd, cwd=REPO, stdout=f, stderr=subprocess.STDOUT)


def wait_for(what: str, check, proc: subprocess.Popen, log: Path, timeout_s: float = WAIT_S):
    """Poll ``check()`` until it returns something true; fail if the run ends first."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        got = check()
        if got:
            return got
        if proc.poll() is not None:
            pytest.fail(f"the run ended (exit {proc.returncode}) before {what}:\n"
                        f"{log.read_text()[-3000:]}")  # fmt: skip
        time.sleep(0.02)
    pytest.fail(f"timed out waiting for {what}")


def assert_same_results(run: Path, reference: Path) -> None:
    for name in SAME_FILES:
        assert (run / name).read_bytes() == (reference / name).read_bytes(), name


def test_a_twin_killed_mid_run_and_restarted_gives_the_same_results(
    tmp_path: Path, scenario_file: Path, reference: Path
) -> None:
    """A twin (--state-dir) SIGKILL-ed twice in the middle of a `threshold` run and restarted
    on its port and state directory: the controller reconnects and the run completes with
    the uninterrupted run's summary.json, timeline and events, and no chip left behind."""
    port, state = free_port(), tmp_path / "state"
    twin = ServerProcess(tmp_path, "--state-dir", str(state), port=port)
    address = twin.address
    log = tmp_path / "run.log"
    run = start_run(str(scenario_file), "--twin", address, "--out", str(tmp_path / "run"),
                    "--workers", "1", log=log)  # fmt: skip
    probe = TwinClient(address, retries=0, timeout_s=5.0)

    def threshold_chip_at_work(after: tuple[str, int] | None):
        """A threshold run's chip that did work: 40 operations, or 40 more than ``after``
        (the chip and its operations when the twin was last killed)."""

        def check():
            for chip in probe.list_chips():
                if not chip.startswith("threshold-"):
                    continue
                try:
                    ops = probe.chip_info(chip).op_counter
                except NotFound:  # its run just ended
                    continue
                if ops >= 40 + (after[1] if after is not None and chip == after[0] else 0):
                    return chip, ops
            return None

        return check

    kills: list[tuple[str, int]] = []
    gaps: list[float] = []
    try:
        for _ in range(2):
            # mid-run; the second time also shows the run went on with the restarted twin
            last = kills[-1] if kills else None
            kills.append(wait_for("a threshold run at work", threshold_chip_at_work(last),
                                  run, log))  # fmt: skip
            assert run.poll() is None, "the run ended before the twin was killed"
            twin.kill()
            t_kill = time.monotonic()
            time.sleep(1.0)  # the controller finds the twin gone
            twin = ServerProcess(tmp_path, "--state-dir", str(state), port=port)
            probe.wait_ready(timeout_s=WAIT_S)
            gaps.append(time.monotonic() - t_kill)
        assert run.wait(WAIT_S) == 0, log.read_text()[-3000:]
        assert probe.list_chips() == []  # every run deleted its chip, restarts or not
    finally:
        probe.close()
        if run.poll() is None:
            run.kill()
            run.wait(10)
        twin.stop()
    # both restarts restored the chip of the threshold run that was in progress
    restored = [int(n) for n in re.findall(r"restored (\d+) chips", twin.log_path.read_text())]
    assert restored[0] == 0 and len(restored) == 3 and all(n >= 1 for n in restored[1:])
    assert_same_results(tmp_path / "run", reference)
    info = json.loads((tmp_path / "run" / "run_info.json").read_text())
    assert info["twin"] == address and not info["resumed"]
    print(
        f"twin down (kill to SERVING): {[round(g, 1) for g in gaps]} s; killed at "
        f"(chip, operation) {kills}"
    )


def test_a_killed_run_resumes_from_its_checkpoint_with_the_same_results(
    tmp_path: Path, scenario_file: Path, reference: Path
) -> None:
    """`pcm-twin run` SIGKILL-ed after three of its four (variant, seed) runs were
    checkpointed: `pcm-twin run --resume RUN_DIR` runs only the fourth (from its start) and
    writes the uninterrupted run's summary.json, timeline and events; resuming a complete
    run does nothing."""
    out, log = tmp_path / "run", tmp_path / "run.log"
    run = start_run(str(scenario_file), "--out", str(out), "--workers", "1", log=log)
    seeds = out / "checkpoint" / "seeds"
    try:
        # tasks in order: gdc 0, gdc 1, threshold 0, threshold 1 (the last takes seconds)
        wait_for("three checkpoints", lambda: (seeds / "0002.json").is_file(), run, log)
        assert run.poll() is None
        run.kill()
        assert run.wait(10) == -9
    finally:
        if run.poll() is None:
            run.kill()
            run.wait(10)
    kept = sorted(p.name for p in seeds.glob("*.json"))
    assert kept == ["0000.json", "0001.json", "0002.json"]
    assert not (out / "COMPLETE").exists() and not (out / "summary.json").exists()

    res = CliRunner().invoke(app, ["run", "--resume", str(out), "--workers", "1",
                                   "--no-progress"])  # fmt: skip
    assert res.exit_code == 0, res.output
    assert "3 of 4 run(s) checkpointed, 1 to run" in res.output
    assert "kept from the checkpoint: gdc seed 0, gdc seed 1, threshold seed 0" in res.output
    assert_same_results(out, reference)
    assert (out / "COMPLETE").is_file() and not (out / "checkpoint").exists()
    info = json.loads((out / "run_info.json").read_text())
    assert info["resumed"] is True
    assert [(r["variant"], r["seed"], r["from_checkpoint"]) for r in info["seed_runs"]] == [
        ("gdc", 0, True), ("gdc", 1, True), ("threshold", 0, True), ("threshold", 1, False)]  # fmt: skip

    again = CliRunner().invoke(app, ["run", "--resume", str(out), "--no-progress"])
    assert again.exit_code == 0 and "already complete" in again.output
    assert_same_results(out, reference)
