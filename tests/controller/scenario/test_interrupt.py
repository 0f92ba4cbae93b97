"""Ctrl-C on `pcm-twin run`: the whole process group gets SIGINT (as from a terminal); the run
stops without tracebacks, keeps what finished and says how to resume."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tests.controller.scenario.conftest import REPO

PCM_TWIN = Path(sys.executable).with_name("pcm-twin")


def _wait_for(proc: subprocess.Popen, lines: list[str], text: str, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    assert proc.stdout is not None
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            raise AssertionError(f"exited before {text!r}: {''.join(lines)}")
        lines.append(line)
        if text in line:
            return
    raise AssertionError(f"no {text!r} within {timeout_s} s: {''.join(lines)}")


@pytest.mark.slow
def test_ctrl_c_while_workers_start_prints_the_resume_hint(tmp_path: Path, tiny_scenario) -> None:
    """SIGINT to the process group while two workers start (importing torch): exit code
    130, no traceback from any process, the --resume command printed, no process left."""
    scenario = tmp_path / "tiny.yaml"
    scenario.write_text(yaml.safe_dump({**tiny_scenario, "seeds": 2}))
    out = tmp_path / "run"
    proc = subprocess.Popen(
        [str(PCM_TWIN), "run", str(scenario), "--out", str(out), "--workers", "2",
         "--no-progress"],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        start_new_session=True,  # its own process group, as a terminal's foreground job
        env={**os.environ, "COLUMNS": "80"},
    )  # fmt: skip
    lines: list[str] = []
    try:
        _wait_for(proc, lines, "trained and mapped", 300)
        time.sleep(0.5)  # the workers are being spawned / importing torch
        os.killpg(proc.pid, signal.SIGINT)
        rest, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    text = "".join(lines) + rest
    assert proc.returncode == 130, text
    assert "Traceback" not in text and "KeyboardInterrupt" not in text, text
    assert f"finish it with: pcm-twin run --resume {out}" in text
    assert (out / "checkpoint" / "run.json").is_file()
    _assert_group_gone(proc.pid)


@pytest.mark.slow
def test_ctrl_c_on_a_sweep_stops_its_workers_and_says_how_to_go_on(
    tmp_path: Path, tiny_scenario
) -> None:
    """SIGINT to the process group of a sweep on two workers: exit code 130, no traceback,
    the message says the complete points are kept, no process left."""
    scenario = tmp_path / "tiny.yaml"
    scenario.write_text(yaml.safe_dump(tiny_scenario))
    proc = subprocess.Popen(
        [str(PCM_TWIN), "sweep", str(scenario), "--out", str(tmp_path / "sweep"), "--workers",
         "2", "--grid", "controller.policy.params.threshold=0.02,0.03,0.04,0.05"],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        start_new_session=True, env={**os.environ, "COLUMNS": "80"},
    )  # fmt: skip
    lines: list[str] = []
    try:
        _wait_for(proc, lines, "sweep of 4 point(s)", 300)
        time.sleep(1.0)  # the points are being planned and the workers spawned
        os.killpg(proc.pid, signal.SIGINT)
        rest, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    text = "".join(lines) + rest
    assert proc.returncode == 130, text
    assert "Traceback" not in text and "KeyboardInterrupt" not in text, text
    assert "run the same command again" in text.replace("\n", " ")
    _assert_group_gone(proc.pid)


def _assert_group_gone(pgid: int) -> None:
    for _ in range(50):  # the resource tracker leaves when its pipe closes
        out = subprocess.run(["ps", "-o", "pid=", "-g", str(pgid)], capture_output=True,
                             text=True).stdout.split()  # fmt: skip
        if not out:
            return
        time.sleep(0.1)
    raise AssertionError(f"processes of the run are left: {out}")
