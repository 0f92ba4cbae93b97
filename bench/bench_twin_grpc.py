"""The twin over gRPC: MVM cost against aihwkit in-process, and small-call round trips.

MVM: one 512x512 tile, batch 128, float32, through ``TwinClient`` to a ``pcm-twin twin serve``
process on loopback, against aihwkit's ``TorchInferenceTile`` called in this process with
the *same* effective weights (the twin's own read-noise realisation at that instant) and
the same inputs. Both run at the same ``at_s`` every call, so the twin reuses its loaded
weights as the in-process tile does; the two are timed alternately in one run (median per
call), so that load from other processes on the machine hits both alike. Both sides use one
torch thread (``TORCH_THREADS``): on a small shared machine, multi-threaded torch regions
stall whenever another process holds a core, which swamps what is measured here (the cost
of the service around the same computation). The in-process ``Chip.mvm`` is timed too, to
split the gRPC cost from the twin's own bookkeeping (input checks, energy). On a loaded
machine the wall-clock ratio mostly measures how long the two processes wait for a core at
each hand-off, so the CPU time of client + server per call is reported too, against the
in-process tile's CPU time.

Round trips: calls per second of one client, one call at a time: ``ListChips`` (no device
work), a 4-device ``ReadDevices`` (server without and with ``--state-dir``: a read record is
appended to the log, no fsync) and an 8-device ``ProgramDevices`` with ``--state-dir``
(logged and fsync-ed before the reply).
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import psutil
import torch

from controller.rpc.client import TwinClient
from device_twin import Array, Chip, ChipConfig
from device_twin.periphery import make_rpu_config

REPO = Path(__file__).resolve().parent.parent
ROWS = COLS = 512
BATCH = 128
AT_S = 3600.0
TORCH_THREADS = 1


class _Server:
    """A ``pcm-twin twin serve`` process on a free loopback port."""

    def __init__(self, durable: bool = False) -> None:
        self._tmp = tempfile.TemporaryDirectory(prefix="bench-twin-")
        port_file = Path(self._tmp.name) / "port"
        args = ["--state-dir", os.path.join(self._tmp.name, "state")] if durable else []
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "controller.cli", "twin", "serve", "--address",
             "127.0.0.1:0", "--port-file", str(port_file), "--log-level", "WARNING", *args],
            cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            env={**os.environ, "OMP_NUM_THREADS": str(TORCH_THREADS)},
        )  # fmt: skip
        deadline = time.monotonic() + 120
        while not port_file.exists():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("twin server did not start")
            time.sleep(0.05)
        self.address = f"127.0.0.1:{int(port_file.read_text())}"

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:  # a loaded machine: its graceful stop took longer
            self.proc.kill()
            self.proc.wait()
        self._tmp.cleanup()


def _per_call_s(fn: Callable[[], object], n: int) -> float:
    t0 = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - t0) / n


def _programmed(cfg: ChipConfig) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    g = rng.uniform(0.0, cfg.g_max_us, (2, cfg.tile_rows, cfg.tile_cols)).astype(np.float32)
    # sparse-ish weights like a trained layer: most pairs have one device near 0
    mask = rng.random((cfg.tile_rows, cfg.tile_cols)) < 0.5
    return np.where(mask, g[0], 0.0).astype(np.float32), np.where(mask, 0.0, g[1]).astype(
        np.float32
    )


def mvm_records(rounds: int = 7, calls: int = 10) -> list[dict]:
    from aihwkit.simulator.tiles.inference_torch import TorchInferenceTile

    cfg = ChipConfig(tile_rows=ROWS, tile_cols=COLS, seed=0)
    g_pos, g_neg = _programmed(cfg)
    x = np.random.default_rng(1).uniform(-1, 1, (BATCH, ROWS)).astype(np.float32)

    # in-process core, the same calls the server will see
    local = Chip(cfg)
    local.program(0, g_pos, g_neg, at_s=0.0)
    w_eff, _ = local.effective_weights(0, AT_S)  # the realisation every MVM at AT_S uses

    tile = TorchInferenceTile(COLS, ROWS, rpu_config=make_rpu_config(cfg.periphery.forward))
    tile.eval()
    tile.set_weights(w_eff)
    xt = torch.from_numpy(x)

    def aihwkit_tile() -> None:
        with torch.no_grad():
            tile(xt)

    server = _Server()
    try:
        with TwinClient(server.address) as client:
            client.wait_ready(120)
            chip_id = client.create_chip(cfg)
            client.program(chip_id, 0, g_pos, g_neg, at_s=0.0)
            # same weight draw, same op index: the first MVMs must agree bit for bit
            remote = client.mvm(chip_id, 0, x, AT_S)
            same_output = remote.values.tobytes() == local.mvm(0, x, AT_S).values.tobytes()

            def grpc_mvm() -> None:
                client.mvm(chip_id, 0, x, AT_S)

            def core_mvm() -> None:
                local.mvm(0, x, AT_S)

            for fn in (aihwkit_tile, grpc_mvm, core_mvm):  # warm-up
                _per_call_s(fn, 3)
            server_proc = psutil.Process(server.proc.pid)
            wall: dict[str, list[float]] = {"tile": [], "grpc": [], "core": []}
            cpu: dict[str, list[float]] = {"tile": [], "grpc": []}
            for _ in range(rounds):
                c0 = time.process_time()
                wall["tile"].append(_per_call_s(aihwkit_tile, calls))
                cpu["tile"].append((time.process_time() - c0) / calls)
                c0, s0 = time.process_time(), _cpu_s(server_proc)
                wall["grpc"].append(_per_call_s(grpc_mvm, calls))
                cpu["grpc"].append((time.process_time() - c0 + _cpu_s(server_proc) - s0) / calls)
                wall["core"].append(_per_call_s(core_mvm, calls))
    finally:
        server.stop()
    tile_s, grpc_s, core_s = (statistics.median(wall[k]) for k in ("tile", "grpc", "core"))
    tile_cpu_s, grpc_cpu_s = (statistics.median(cpu[k]) for k in ("tile", "grpc"))
    common = {"unit": "s/call", "baseline_name": "aihwkit_TorchInferenceTile",
              "baseline_value": tile_s, "rows": ROWS, "cols": COLS, "batch": BATCH,
              "rounds": rounds, "calls_per_round": calls,
              "twin_output_matches_core": same_output, "torch_threads": TORCH_THREADS,
              "load_avg_1min": os.getloadavg()[0]}  # fmt: skip
    return [
        {"name": "twin_grpc_mvm_512x512_b128", "value": grpc_s, "target": 1.5,
         "target_on": "ratio", "ratio": grpc_s / tile_s, **common},
        {"name": "twin_core_mvm_512x512_b128", "value": core_s, "target": None,
         "ratio": core_s / tile_s, **common},
        # CPU seconds of client + server per call: what the service costs, whatever the load
        {"name": "twin_grpc_mvm_512x512_b128_cpu", "value": grpc_cpu_s, "target": 1.5,
         "target_on": "ratio", "ratio": grpc_cpu_s / tile_cpu_s,
         **common, "unit": "cpu s/call", "baseline_value": tile_cpu_s},
    ]  # fmt: skip


def _cpu_s(proc: psutil.Process) -> float:
    t = proc.cpu_times()
    return t.user + t.system


def _rate(fn: Callable[[int], object], seconds: float) -> float:
    """Calls per second of ``fn(i)`` called back to back (after a warm-up)."""
    for i in range(20):
        fn(i)
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        fn(20 + n)
        n += 1
    return n / (time.perf_counter() - t0)


def _round_trips(durable: bool, seconds: float) -> list[dict]:
    cfg = ChipConfig(tile_rows=64, tile_cols=64, seed=0)
    g_pos, g_neg = _programmed(cfg)
    dev4 = np.array([1, 70, 300, 4000])
    dev8 = np.arange(0, 4096, 512)
    targets = np.full(8, 5.0, np.float32)
    server = _Server(durable)
    try:
        with TwinClient(server.address) as client:
            client.wait_ready(120)
            chip_id = client.create_chip(cfg)
            client.program(chip_id, 0, g_pos, g_neg, at_s=0.0)
            calls: dict[str, Callable[[int], object]] = {
                "read_4_devices": lambda i: client.read_devices(
                    chip_id, 0, Array.POS, dev4, 10.0 + i
                ),
            }
            if durable:
                calls["program_8_devices"] = lambda i: client.program_devices(
                    chip_id, 0, Array.NEG, dev8, targets, 1e6 + i
                )
            else:
                calls["list_chips"] = lambda i: client.list_chips()
            suffix = "_state_dir" if durable else ""
            return [
                {"name": f"twin_grpc_{name}{suffix}_calls_per_s", "value": _rate(fn, seconds),
                 "unit": "calls/s", "target": None, "baseline_name": None,
                 "baseline_value": None, "ratio": None}
                for name, fn in calls.items()
            ]  # fmt: skip
    finally:
        server.stop()


def round_trip_records(seconds: float = 2.0) -> list[dict]:
    return _round_trips(False, seconds) + _round_trips(True, seconds)


def run() -> list[dict]:
    threads = torch.get_num_threads()
    torch.set_num_threads(TORCH_THREADS)
    try:
        return mvm_records() + round_trip_records()
    finally:
        torch.set_num_threads(threads)


if __name__ == "__main__":
    for record in run():
        print(record)
