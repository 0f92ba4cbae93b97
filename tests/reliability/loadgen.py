"""Mixed-call load on a CrossbarTwin, with a check that no write is ever seen torn.

``run_load(address, LoadConfig(...))`` drives the twin with ``clients`` threads, each with its
own ``TwinClient`` (no retries: every failure counts), for ``duration_s`` seconds of mixed
calls on ``chips`` chips: block writes (program_devices), whole-tile programs, pulses, reads,
probes, MVMs, ledgers, chip info and chip lists. It returns a ``LoadReport`` with calls per
second, latency percentiles (overall and per call), the errors, and the problems found.

How torn writes are detected. Every chip has read noise and programming noise turned off and
every call happens at one device instant (``AT_S``), so a device reads back exactly the
float32 value it was last programmed to (no drift at age 0, no noise). Then:

- tile 0 is cut into blocks of ``block`` devices; a block write sets every device of one
  block (in G+ or G-) to one value that names the write; a read of some blocks must see
  each block uniform, at a value some write to that block set (or the initial one);
- tile 1 is programmed whole, both arrays, to one value per write; a read of a whole array
  of tile 1 must be uniform, at a value some whole-tile write set; and since G+ = G- there,
  an MVM on tile 1 (through a perfect periphery: no noise, no quantisation) must give
  exactly 0: a write seen in one array but not yet in the other would not;
- tile 2 takes SET/RESET pulses (its values are not checked here, only that calls succeed).

Afterwards (``check_final``) every chip's stored state must be block- and tile-uniform the
same way, and its operation counter and energy ledger must count exactly the calls that
were acknowledged: no operation lost, none applied twice.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from controller.rpc.client import TwinClient
from device_twin import Array, ChipConfig, PulseKind
from device_twin.config import DeviceModelConfig, IOConfig, PeripheryConfig, PulseModelConfig
from tests.device_twin.service.conftest import ServerProcess

AT_S = 1000.0
INITIAL_US = 0.5
DEVICE_OPS = ("program", "program_devices", "apply_pulses", "read_devices", "probe", "mvm")
#: Relative weights of the calls in the mix.
MIX = {
    "program_devices": 20, "read_blocks": 15, "read_tile": 8, "program": 4, "apply_pulses": 10,
    "probe": 10, "mvm": 15, "energy_ledger": 6, "chip_info": 6, "list_chips": 6,
}  # fmt: skip


@dataclass
class LoadConfig:
    clients: int = 32
    duration_s: float = 60.0
    chips: int = 4
    rows: int = 32
    cols: int = 32
    block: int = 32  # one row: few blocks, so that writes and reads of a block often meet
    seed: int = 0
    timeout_s: float = 300.0

    def chip_config(self, k: int) -> ChipConfig:
        return ChipConfig(
            n_tiles=3, tile_rows=self.rows, tile_cols=self.cols, seed=self.seed * 100 + k,
            # no noise and every device's bound at g_max: a device holds the value written
            device=DeviceModelConfig(prog_noise_scale=0.0, read_noise_scale=0.0,
                                     pulse=PulseModelConfig.from_aihwkit(w_max_dtod=0.0)),
            periphery=PeripheryConfig(forward=IOConfig(is_perfect=True)),
        )  # fmt: skip

    @property
    def blocks(self) -> int:
        return self.rows * self.cols // self.block


@dataclass
class LoadReport:
    calls: int
    seconds: float
    latencies_s: dict[str, list[float]]
    errors: list[str]
    problems: list[str]
    ops_by_chip: dict[str, Counter] = field(default_factory=dict)
    shared: _Shared | None = field(default=None, repr=False)

    @property
    def calls_per_s(self) -> float:
        return self.calls / self.seconds

    def percentile_ms(self, q: float, kind: str | None = None) -> float:
        lat = self.latencies_s[kind] if kind else [x for v in self.latencies_s.values() for x in v]
        return float(np.percentile(lat, q) * 1e3) if lat else float("nan")

    def summary(self) -> str:
        lines = [
            f"{self.calls} calls in {self.seconds:.1f} s: {self.calls_per_s:.0f} calls/s, "
            f"p50 {self.percentile_ms(50):.1f} ms, p99 {self.percentile_ms(99):.1f} ms, "
            f"errors {len(self.errors)}, torn/inconsistent {len(self.problems)}"
        ]
        for kind in sorted(self.latencies_s):
            lat = self.latencies_s[kind]
            lines.append(f"  {kind:<16} {len(lat):>7} calls  p50 {self.percentile_ms(50, kind):7.1f}"
                         f" ms  p99 {self.percentile_ms(99, kind):7.1f} ms")  # fmt: skip
        return "\n".join(lines)


class TwinProcess(ServerProcess):
    """``pcm-twin twin serve`` in a subprocess on a free loopback port (default options,
    warnings only in its log), serving once constructed."""

    def __init__(self, workdir: Path, *args: str) -> None:
        super().__init__(workdir, "--log-level", "WARNING", *args)
        with TwinClient(self.address) as c:
            c.wait_ready(timeout_s=300)


def write_value(write_id: int) -> np.float32:
    """The conductance (uS) that names write ``write_id``: distinct float32 values in [1, 21)."""
    return np.float32(1.0 + (write_id % 20_000) * 0.001)


class _Shared:
    """What the clients share: write ids and, per block, the values written to it."""

    def __init__(self, cfg: LoadConfig, chip_ids: list[str]) -> None:
        self.ids = itertools.count(1)
        self.lock = threading.Lock()
        # every key exists before the clients start: they only add to sets (atomic in CPython)
        self.block_values: dict[tuple, set] = {
            (c, a, b): {np.float32(INITIAL_US)}
            for c in chip_ids for a in range(2) for b in range(cfg.blocks)
        }  # fmt: skip
        self.tile_values: dict[str, set] = {c: {np.float32(INITIAL_US)} for c in chip_ids}

    def next_value(self) -> np.float32:
        with self.lock:
            return write_value(next(self.ids))


def setup_chips(address: str, cfg: LoadConfig) -> list[str]:
    """Create the chips and program their three tiles (blocks and tile 1 at INITIAL_US)."""
    ids = []
    with TwinClient(address, timeout_s=cfg.timeout_s) as client:
        rng = np.random.default_rng(cfg.seed)
        for k in range(cfg.chips):
            cid = client.create_chip(cfg.chip_config(k), f"load-{k}")
            flat = np.full((cfg.rows, cfg.cols), INITIAL_US, np.float32)
            client.program(cid, 0, flat, flat, AT_S)
            client.program(cid, 1, flat, flat, AT_S)
            g2 = rng.uniform(0, 25, (2, cfg.rows, cfg.cols)).astype(np.float32)
            client.program(cid, 2, g2[0], g2[1], AT_S)
            ids.append(cid)
    return ids


def _client_loop(k: int, address: str, cfg: LoadConfig, chips: list[str], shared: _Shared,
                 stop_at: float, out: dict) -> None:  # fmt: skip
    rng = np.random.default_rng(cfg.seed * 1000 + k)
    kinds = list(MIX)
    p = np.array([MIX[x] for x in kinds], float)
    p /= p.sum()
    lat: dict[str, list[float]] = defaultdict(list)
    errors: list[str] = []
    problems: list[str] = []
    ops: dict[str, Counter] = defaultdict(Counter)
    n_dev = cfg.rows * cfg.cols
    x = rng.uniform(-1, 1, (4, cfg.rows)).astype(np.float32)
    client = TwinClient(address, timeout_s=cfg.timeout_s, retries=0)
    try:
        while time.monotonic() < stop_at:
            kind = kinds[rng.choice(len(kinds), p=p)]
            cid = chips[rng.integers(len(chips))]
            arr = Array(int(rng.integers(2)))
            t0 = time.perf_counter()
            try:
                if kind == "program_devices":
                    b = int(rng.integers(cfg.blocks))
                    v = shared.next_value()
                    shared.block_values[(cid, int(arr), b)].add(v)
                    idx = np.arange(b * cfg.block, (b + 1) * cfg.block)
                    client.program_devices(cid, 0, arr, idx, np.full(cfg.block, v, np.float32),
                                           AT_S)  # fmt: skip
                elif kind == "read_blocks":
                    bs = rng.choice(cfg.blocks, int(rng.integers(1, 5)), replace=False)
                    idx = (bs[:, None] * cfg.block + np.arange(cfg.block)).ravel()
                    g = client.read_devices(cid, 0, arr, idx, AT_S).values.reshape(-1, cfg.block)
                    for b, row in zip(bs, g, strict=True):
                        if not (row == row[0]).all():
                            problems.append(f"torn block write: {cid} G{'+-'[arr]} block {b}: "
                                            f"{sorted(set(row.tolist()))}")  # fmt: skip
                        elif row[0] not in shared.block_values[(cid, int(arr), int(b))]:
                            problems.append(f"{cid} block {b} reads {row[0]}, never written")
                elif kind == "read_tile":
                    g = client.read_devices(cid, 1, arr, None, AT_S).values
                    if not (g == g.flat[0]).all():
                        problems.append(f"torn tile write: {cid} tile 1 holds "
                                        f"{len(np.unique(g))} values")  # fmt: skip
                    elif g.flat[0] not in shared.tile_values[cid]:
                        problems.append(f"{cid} tile 1 reads {g.flat[0]}, never written")
                elif kind == "program":
                    v = shared.next_value()
                    shared.tile_values[cid].add(v)
                    full = np.full((cfg.rows, cfg.cols), v, np.float32)
                    client.program(cid, 1, full, full, AT_S)
                elif kind == "apply_pulses":
                    idx = rng.choice(n_dev, int(rng.integers(1, 33)), replace=False)
                    pk = PulseKind.SET if rng.random() < 0.8 else PulseKind.RESET
                    client.apply_pulses(cid, 2, arr, idx, pk, int(rng.integers(1, 6)), AT_S)
                elif kind == "probe":
                    rows = rng.choice(cfg.rows, int(rng.integers(1, 9)), replace=False)
                    probe_arr = Array(int(rng.integers(3)))
                    client.probe(cid, int(rng.integers(3)), rows, probe_arr, AT_S)
                elif kind == "mvm":
                    tile = int(rng.integers(3))
                    y = client.mvm(cid, tile, x, AT_S).values
                    if not np.isfinite(y).all():
                        problems.append(f"{cid}: MVM output not finite")
                    elif tile == 1 and y.any():
                        problems.append(f"torn tile write: {cid} tile 1 G+ != G- (MVM gives "
                                        f"{np.abs(y).max():.3g}, not 0)")  # fmt: skip
                elif kind == "energy_ledger":
                    client.energy_ledger(cid)
                elif kind == "chip_info":
                    client.chip_info(cid)
                else:
                    client.list_chips()
            except Exception as exc:  # every failure is reported
                errors.append(f"{kind}: {type(exc).__name__}: {exc}")
                continue
            lat[kind].append(time.perf_counter() - t0)
            op = {"read_blocks": "read_devices", "read_tile": "read_devices"}.get(kind, kind)
            if op in DEVICE_OPS:
                ops[cid][op] += 1
    finally:
        client.close()
        out[k] = (lat, errors, problems, ops)


def run_load(address: str, cfg: LoadConfig, chips: list[str]) -> LoadReport:
    """Drive ``cfg.clients`` clients for ``cfg.duration_s`` seconds (see the module docstring)."""
    shared = _Shared(cfg, chips)
    out: dict[int, tuple] = {}
    start = time.monotonic()
    threads = [
        threading.Thread(target=_client_loop, name=f"load-{k}",
                         args=(k, address, cfg, chips, shared, start + cfg.duration_s, out))
        for k in range(cfg.clients)
    ]  # fmt: skip
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    seconds = time.monotonic() - start
    lat: dict[str, list[float]] = defaultdict(list)
    errors: list[str] = []
    problems: list[str] = []
    ops: dict[str, Counter] = defaultdict(Counter)
    for k in sorted(out):
        c_lat, c_err, c_prob, c_ops = out[k]
        for kind, v in c_lat.items():
            lat[kind].extend(v)
        errors += c_err
        problems += c_prob
        for cid, cnt in c_ops.items():
            ops[cid].update(cnt)
    if len(out) != cfg.clients:
        errors.append(f"{cfg.clients - len(out)} client threads died")
    calls = sum(len(v) for v in lat.values())
    return LoadReport(calls, seconds, dict(lat), errors, problems, dict(ops), shared)


def check_final(address: str, cfg: LoadConfig, chips: list[str], report: LoadReport) -> list[str]:
    """Problems in the chips' stored state after the load (see the module docstring)."""
    problems = []
    shared = report.shared
    assert shared is not None
    with TwinClient(address, timeout_s=cfg.timeout_s) as client:
        for cid in chips:
            snap = client.snapshot(cid)
            g0 = snap.g_prog_us[0].reshape(2, -1, cfg.block)
            for a in range(2):
                for b in range(cfg.blocks):
                    vals = g0[a, b]
                    if (
                        not (vals == vals[0]).all()
                        or vals[0] not in shared.block_values[(cid, a, b)]
                    ):
                        problems.append(f"{cid} G{'+-'[a]} block {b} stored {vals.tolist()}")
            g1 = snap.g_prog_us[1]
            if not (g1 == g1.flat[0]).all() or g1.flat[0] not in shared.tile_values[cid]:
                problems.append(f"{cid} tile 1 stored {len(np.unique(g1))} values")
            if not np.isfinite(snap.g_prog_us[2]).all():
                problems.append(f"{cid} tile 2 not finite")
            done = report.ops_by_chip.get(cid, Counter())
            n_ops = sum(done.values())
            info = client.chip_info(cid)
            if info.op_counter != 3 + n_ops:  # 3 programs at set-up
                problems.append(f"{cid}: op_counter {info.op_counter}, acknowledged {3 + n_ops}")
            ledger = client.energy_ledger(cid)
            want = {
                "program": 3 + done["program"] + done["program_devices"],
                "read_devices": done["read_devices"], "probe": done["probe"], "mvm": done["mvm"],
            }  # fmt: skip
            pulses = ledger.get("set_pulse", {}).get("calls", 0) + ledger.get(
                "reset_pulse", {}
            ).get("calls", 0)
            if pulses != done["apply_pulses"]:
                problems.append(f"{cid}: ledger counts {pulses} pulse calls, acknowledged "
                                f"{done['apply_pulses']}")  # fmt: skip
            for kind, n in want.items():
                got = ledger.get(kind, {}).get("calls", 0)
                if got != n:
                    problems.append(f"{cid}: ledger counts {got} {kind} calls, acknowledged {n}")
    return problems
