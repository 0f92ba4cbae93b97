"""Soak: 32 clients drive a twin server process for 5 minutes of mixed calls.

The long variant of ``tests/reliability/test_load.py`` (same driver, ``tests/reliability/
loadgen.py``): a ``pcm-twin twin serve --state-dir`` process with its shipped worker and
concurrency settings, 4 chips, 32 client threads with their own channels and no retries.
Records calls per second, p50/p99 latency, failed calls, torn or miscounted writes (from the
load's own checks and the final state), and the server's resident memory: after a 30 s
warm-up and at the end (growth = end - warm-up), sampled every 5 s.

``PCM_TWIN_SOAK_S`` (default 300) and ``PCM_TWIN_SOAK_CLIENTS`` (default 32) change the run;
``python -m bench soak`` runs it alone. The state directory is on the real disk (fsync
included), unlike the test's.
"""

from __future__ import annotations

import os
import tempfile
import threading
import time
from pathlib import Path

import psutil

from tests.reliability.loadgen import LoadConfig, TwinProcess, check_final, run_load, setup_chips

DURATION_S = float(os.environ.get("PCM_TWIN_SOAK_S", "300"))
CLIENTS = int(os.environ.get("PCM_TWIN_SOAK_CLIENTS", "32"))
WARMUP_S = 30.0
SAMPLE_S = 5.0


def _sample_rss(pid: int, stop: threading.Event, out: list[tuple[float, int]]) -> None:
    proc = psutil.Process(pid)
    t0 = time.monotonic()
    while not stop.wait(SAMPLE_S if out else 0.0):
        try:
            out.append((time.monotonic() - t0, proc.memory_info().rss))
        except psutil.Error:
            return


def run() -> list[dict]:
    cfg = LoadConfig(clients=CLIENTS, duration_s=DURATION_S)
    with tempfile.TemporaryDirectory(prefix="bench-soak-") as tmp:
        server = TwinProcess(Path(tmp), "--state-dir", os.path.join(tmp, "state"))
        try:
            chips = setup_chips(server.address, cfg)
            samples: list[tuple[float, int]] = []
            stop = threading.Event()
            sampler = threading.Thread(target=_sample_rss, args=(server.proc.pid, stop, samples))
            sampler.start()
            try:
                report = run_load(server.address, cfg, chips)
            finally:
                stop.set()
                sampler.join()
            final = check_final(server.address, cfg, chips, report)
        finally:
            server.stop()
    warm = [rss for t, rss in samples if t >= min(WARMUP_S, DURATION_S / 2)] or [samples[-1][1]]
    mb = 1024**2
    common = {"target": None, "baseline_name": None, "baseline_value": None, "ratio": None,
              "clients": cfg.clients, "duration_s": round(report.seconds, 1),
              "load_avg_1min": os.getloadavg()[0]}  # fmt: skip
    print(report.summary())
    return [
        {"name": "soak_calls_per_s", "value": report.calls_per_s, "unit": "calls/s", **common,
         "calls": report.calls},
        {"name": "soak_latency_p50", "value": report.percentile_ms(50), "unit": "ms", **common},
        {"name": "soak_latency_p99", "value": report.percentile_ms(99), "unit": "ms", **common},
        {"name": "soak_failed_calls", "value": len(report.errors), "unit": "calls", **common,
         "target": 0, "examples": report.errors[:5]},
        {"name": "soak_torn_or_miscounted", "value": len(report.problems) + len(final),
         "unit": "findings", **common, "target": 0,
         "examples": (report.problems + final)[:5]},
        {"name": "soak_server_rss_after_warmup", "value": warm[0] / mb, "unit": "MiB", **common},
        {"name": "soak_server_rss_end", "value": samples[-1][1] / mb, "unit": "MiB", **common},
        {"name": "soak_server_rss_growth", "value": (samples[-1][1] - warm[0]) / mb,
         "unit": "MiB", **common},
    ]  # fmt: skip


if __name__ == "__main__":
    for record in run():
        print(record)
