"""Load: 32 concurrent clients drive a twin server process for 60 s of mixed calls.

The test reports calls per second and p50/p99 latency (printed, and in the JUnit properties)
and checks correctness only, never speed: no call failed, no write was ever seen torn (a
block or a tile holds the values of exactly one write, see tests/reliability/loadgen.py), the
operation counters and ledgers count exactly the acknowledged calls, and, after a SIGKILL, the
server restored from its state directory holds exactly the state it had.
``PCM_TWIN_LOAD_S`` changes the duration (default 60 s).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest

from controller.rpc.client import TwinClient
from tests.reliability.loadgen import LoadConfig, TwinProcess, check_final, run_load, setup_chips

DURATION_S = float(os.environ.get("PCM_TWIN_LOAD_S", "60"))


def _state(address: str, chips: list[str]) -> dict:
    with TwinClient(address, timeout_s=300) as client:
        out = {}
        for cid in chips:
            s = client.snapshot(cid)
            out[cid] = (s.now_s, s.op_counter, s.programmed_tiles,
                        {t: (s.g_prog_us[t], s.nu[t], s.t_write_s[t]) for t in s.g_prog_us})  # fmt: skip
        return out


@pytest.fixture
def state_dir(tmp_path):
    """A state directory in memory (/dev/shm) where there is one: this test is about
    concurrency, and a shared machine's disk can stall fsync for seconds (fsync-ed durability
    is test_persistence.py's subject)."""
    if not Path("/dev/shm").is_dir():
        yield tmp_path / "state"
        return
    d = Path(tempfile.mkdtemp(prefix="pcm-twin-load-", dir="/dev/shm"))
    yield d / "state"
    shutil.rmtree(d, ignore_errors=True)


def test_32_clients_for_a_minute_of_mixed_calls(tmp_path, state_dir, record_property):
    """32 clients, 4 chips, 60 s of mixed calls on loopback: no call fails, no write is seen
    torn, every acknowledged operation is counted once, and a SIGKILL-ed server restores
    exactly the state it had."""
    cfg = LoadConfig(clients=32, duration_s=DURATION_S)
    server = TwinProcess(tmp_path, "--state-dir", str(state_dir))
    try:
        chips = setup_chips(server.address, cfg)
        report = run_load(server.address, cfg, chips)
        print("\n" + report.summary())
        record_property("load_calls", report.calls)
        record_property("load_calls_per_s", round(report.calls_per_s, 1))
        record_property("load_p50_ms", round(report.percentile_ms(50), 2))
        record_property("load_p99_ms", round(report.percentile_ms(99), 2))
        record_property("load_errors", len(report.errors))
        assert not report.errors, report.errors[:10]
        assert not report.problems, report.problems[:10]
        assert report.calls > cfg.clients  # every client got calls through
        assert set(report.latencies_s) >= {"program_devices", "read_blocks", "read_tile",
                                           "program", "apply_pulses", "mvm", "probe"}  # fmt: skip
        final = check_final(server.address, cfg, chips, report)
        assert not final, final[:10]
        before = _state(server.address, chips)
        server.kill()
        server = TwinProcess(tmp_path, "--state-dir", str(state_dir))
        after = _state(server.address, chips)
        for cid, (now, ops, tiles, arrays) in before.items():
            assert after[cid][:3] == (now, ops, tiles), cid
            for t, (g, nu, tw) in arrays.items():
                g2, nu2, tw2 = after[cid][3][t]
                assert np.array_equal(g, g2) and np.array_equal(nu, nu2)
                assert np.array_equal(tw, tw2)
    finally:
        server.stop()
