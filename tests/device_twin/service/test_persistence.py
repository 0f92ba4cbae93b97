"""Durability: the write-ahead log and snapshots restore chips exactly, retries act once, and a
server killed with SIGKILL loses no acknowledged write."""

from __future__ import annotations

import os
import threading
import time

import numpy as np
import pytest

from controller.rpc.client import TwinRpcError
from device_twin import Array, Chip, PulseKind
from device_twin.service.persistence import DurableRegistry, StateDirBusy, StateStore
from device_twin.unroll import ConvGeometry
from tests.device_twin.service.conftest import assert_same_result, random_targets, small_config

CFG = small_config()
ROWS, COLS = CFG.tile_rows, CFG.tile_cols


def _ops(seed: int, n: int) -> list[tuple[str, tuple]]:
    """A reproducible stream of chip operations (writes and reads), time always advancing."""
    rng = np.random.default_rng(seed)
    ops: list[tuple[str, tuple]] = [
        ("program", (0, random_targets(rng, (ROWS, COLS)), random_targets(rng, (ROWS, COLS)), 1.0)),
        ("program", (1, random_targets(rng, (ROWS, COLS)), random_targets(rng, (ROWS, COLS)), 2.0)),
    ]  # fmt: skip
    t_s = 10.0
    for i in range(n):
        t_s += float(rng.uniform(0.5, 50.0))
        tile, arr = int(rng.integers(2)), Array(int(rng.integers(2)))
        dev = rng.choice(ROWS * COLS, int(rng.integers(1, 12)), replace=False)
        kind = i % 6
        if kind == 0:
            ops.append(("program_devices", (tile, arr, dev, random_targets(rng, dev.size), t_s)))
        elif kind == 1:
            counts = rng.integers(1, 4, dev.size)
            ops.append(("apply_pulses", (tile, arr, dev, PulseKind.SET, counts, t_s)))
        elif kind == 2:
            ops.append(("apply_pulses", (tile, arr, dev, PulseKind.RESET, 1, t_s)))
        elif kind == 3:
            ops.append(("read_devices", (tile, arr, dev, t_s)))
        elif kind == 4:
            ops.append(("probe", (tile, np.arange(int(rng.integers(1, ROWS))), Array.DIFF, t_s)))
        else:
            x = rng.standard_normal((3, ROWS)).astype(np.float32)
            act = rng.standard_normal((2, 2, 4, 4)).astype(np.float32)
            ops.append(("mvm", (tile, x, t_s)))
            # a convolution's 32 unrolled rows in 3 MVMs, then an MVM at the same instant: it
            # reuses the weight draw and is the instant's 5th periphery call
            ops.append(("conv_mvm", (tile, act, t_s, ConvGeometry((3, 3), padding=(1, 1)), 0, 18,
                                     2, 1, None, 12)))  # fmt: skip
            ops.append(("mvm", (tile, x[:1], t_s)))
    return ops


def _chip_state(chip: Chip) -> dict:
    """Every piece of public state of a chip (caches excluded)."""
    out = {}
    for name, value in vars(chip).items():
        if name.startswith("_"):
            continue
        if isinstance(value, np.ndarray):
            out[name] = (value.dtype, value.shape, value.tobytes())
        elif isinstance(value, int | float | str):
            out[name] = value
    out["ledger"] = chip.ledger.to_dict()
    out["config"] = chip.config
    # periphery calls number from 0 at each instant: only the current instant's are state
    out["periphery_calls"] = {k: v for k, v in chip.periphery_calls.items() if v[0] == chip.now_s}
    return out


def _crash(registry: DurableRegistry) -> None:
    """Drop a registry as a crash would: no final snapshot, just release the directory."""
    registry._stop.set()
    registry.store.close()


def test_restore_after_a_crash_is_exact_and_continues_identically(tmp_path):
    """A registry restored from its log (no snapshot) has every chip exactly as before, and
    continues -- including MVMs at the same instant -- exactly like one that never stopped."""
    ops = _ops(1, 40)
    split = next(i for i, (n, a) in enumerate(ops) if n == "conv_mvm" and i > 20) + 1
    registry = DurableRegistry(store=StateStore(tmp_path))
    registry.restore()
    registry.create_chip(CFG, "c")
    reference = DurableRegistry()
    reference.create_chip(CFG, "c")
    for name, args in ops[:split]:
        assert_same_result(
            getattr(registry, name)("c", *args), getattr(reference, name)("c", *args)
        )
    _crash(registry)

    restored = DurableRegistry(store=StateStore(tmp_path))
    report = restored.restore()
    assert report.chips == 1 and report.records_replayed == split + 1 and not report.snapshot
    assert _chip_state(restored._chips["c"]) == _chip_state(reference._chips["c"])
    for name, args in ops[split:]:  # the first one is an MVM at the instant of a convolution
        assert_same_result(
            getattr(restored, name)("c", *args), getattr(reference, name)("c", *args)
        )
    assert _chip_state(restored._chips["c"]) == _chip_state(reference._chips["c"])
    restored.close()


def test_a_chip_with_several_pairs_restores_exactly(tmp_path):
    """Writes to every pair of a two-pair chip are logged and restored exactly."""
    cfg = small_config(pairs_per_weight=2)
    rng = np.random.default_rng(3)
    registry = DurableRegistry(store=StateStore(tmp_path))
    registry.restore()
    registry.create_chip(cfg, "p")
    for pair in (0, 1):
        g = random_targets(rng, (ROWS, COLS), 12.0)
        registry.program("p", 0, g, g[::-1].copy(), 1.0 + pair, pair=pair)
    dev = np.arange(5)
    registry.apply_pulses("p", 0, Array.NEG, dev, PulseKind.SET, 2, 10.0, pair=1)
    before = _chip_state(registry._chips["p"])
    _crash(registry)
    restored = DurableRegistry(store=StateStore(tmp_path))
    restored.restore()
    assert _chip_state(restored._chips["p"]) == before
    restored.close()


def test_snapshots_compact_the_log_and_restore_exactly(tmp_path):
    """A snapshot replaces the log segments it covers; snapshot plus newer log restore exactly."""
    ops = _ops(2, 30)
    registry = DurableRegistry(store=StateStore(tmp_path))
    registry.restore()
    registry.create_chip(CFG, "c")
    registry.create_chip(small_config(seed=3), "gone")
    reference = Chip(CFG)
    for name, args in ops[:20]:
        getattr(registry, name)("c", *args)
        getattr(reference, name)(*args)
    registry.snapshot()
    segments = sorted(p.name for p in tmp_path.glob("wal-*.log"))
    assert len(segments) == 1 and os.path.getsize(tmp_path / segments[0]) == 0
    registry.delete_chip("gone")
    for name, args in ops[20:]:
        getattr(registry, name)("c", *args)
        getattr(reference, name)(*args)
    _crash(registry)

    restored = DurableRegistry(store=StateStore(tmp_path))
    report = restored.restore()
    assert report.snapshot and report.records_replayed == 1 + len(ops) - 20
    assert restored.list_chips() == ["c"]
    assert _chip_state(restored._chips["c"]) == _chip_state(reference)
    restored.close()
    again = DurableRegistry(store=StateStore(tmp_path))  # from the final snapshot alone
    assert again.restore().records_replayed == 0
    assert _chip_state(again._chips["c"]) == _chip_state(reference)
    again.close()


def test_a_torn_last_record_is_cut_off(tmp_path):
    """A record cut short by a crash (never acknowledged) is dropped; the rest restores."""
    registry = DurableRegistry(store=StateStore(tmp_path))
    registry.restore()
    registry.create_chip(CFG, "c")
    reference = Chip(CFG)
    for name, args in _ops(3, 6):
        getattr(registry, name)("c", *args)
        getattr(reference, name)(*args)
    segment = registry.store.segment_path(registry.store.segment_index)
    good_size = os.path.getsize(segment)
    registry.program_devices("c", 0, Array.POS, np.arange(50), np.full(50, 3.0), 1e6)
    _crash(registry)
    with open(segment, "r+b") as f:
        f.truncate(good_size + (os.path.getsize(segment) - good_size) // 2)

    restored = DurableRegistry(store=StateStore(tmp_path))
    assert restored.restore().torn_bytes_cut > 0
    assert _chip_state(restored._chips["c"]) == _chip_state(reference)
    restored.close()


def test_a_retried_request_acts_once_even_across_a_restart(tmp_path):
    """A request retried with the same request_id returns the recorded result, also after a
    crash and restore, without acting again."""
    registry = DurableRegistry(store=StateStore(tmp_path))
    registry.restore()
    registry.create_chip(CFG, "c", request_id="create-1")
    assert registry.create_chip(CFG, "c", request_id="create-1") == "c"
    (name, args), (_, args2) = _ops(4, 0)
    registry.program("c", *args, request_id="p0")
    first = registry.program("c", *args2, request_id="p1")
    read = registry.read_devices("c", 0, Array.POS, np.arange(30), 5.0, request_id="r1")
    _crash(registry)

    restored = DurableRegistry(store=StateStore(tmp_path))
    restored.restore()
    counter = restored.chip_info("c").op_counter
    assert_same_result(restored.program("c", *args2, request_id="p1"), first)
    again = restored.read_devices("c", 0, Array.POS, np.arange(30), 5.0, request_id="r1")
    assert_same_result(again, read)
    assert restored.chip_info("c").op_counter == counter == 3
    assert restored.create_chip(CFG, "c", request_id="create-1") == "c"
    restored.close()


def test_a_state_dir_has_one_owner(tmp_path):
    """A second server cannot open a state dir that is in use."""
    store = StateStore(tmp_path)
    with pytest.raises(StateDirBusy, match="in use"):
        StateStore(tmp_path)
    store.close()
    StateStore(tmp_path).close()


def test_sigkill_mid_stream_loses_no_acknowledged_write(server_process, tmp_path):
    """A server process killed with SIGKILL while a client streams writes restarts on its
    state dir with every acknowledged write bit for bit, and then gives the same results as
    an uninterrupted run."""
    state_dir = tmp_path / "state"
    ops = _ops(7, 240)
    server = server_process("--state-dir", str(state_dir))
    client = server.client(retries=0, timeout_s=120)
    client.create_chip(CFG, "crash")
    acked: list = []
    stopped = threading.Event()

    def stream() -> None:
        try:
            for name, args in ops:
                acked.append(getattr(client, name)("crash", *args))
        except TwinRpcError:
            pass
        finally:
            stopped.set()

    writer = threading.Thread(target=stream)
    writer.start()
    deadline = time.monotonic() + 300
    while len(acked) < 40 and time.monotonic() < deadline and not stopped.is_set():
        time.sleep(0.001)
    server.kill()
    writer.join(120)
    assert stopped.is_set() and 40 <= len(acked) < len(ops), "the kill must land mid-stream"
    client.close()

    restarted = server_process("--state-dir", str(state_dir), port=server.port)
    with restarted.client(timeout_s=120) as client:
        info = client.chip_info("crash")
        done = info.op_counter  # the call in flight may have been logged before the kill
        assert done in (len(acked), len(acked) + 1)
        reference = Chip(CFG)
        for (name, args), result in zip(ops[:done], acked + [None], strict=False):
            local = getattr(reference, name)(*args)
            if result is not None:
                assert_same_result(result, local)
        state = client.snapshot("crash")
        for t in (0, 1):
            assert state.g_prog_us[t].tobytes() == reference.g_prog_us[t].tobytes()
            assert state.nu[t].tobytes() == reference.nu[t].tobytes()
            assert state.t_write_s[t].tobytes() == reference.t_write_s[t].tobytes()
        assert (info.now_s, client.energy_ledger("crash")) == (
            reference.now_s,
            reference.ledger.to_dict(),
        )
        for name, args in ops[done:]:
            assert_same_result(
                getattr(client, name)("crash", *args), getattr(reference, name)(*args)
            )
        assert client.energy_ledger("crash") == reference.ledger.to_dict()
    assert restarted.stop() == 0
    assert (state_dir / "snapshot.ptw").exists()


def test_remembered_results_are_bounded_but_keep_the_last():
    """Results kept for retries are bounded in number and bytes; the last is always kept."""
    from device_twin.chip import OpResult
    from device_twin.service.persistence.chip_state import (
        RECENT_RESULT_BYTES,
        RECENT_RESULTS,
        ChipExtra,
    )

    extra = ChipExtra()
    for i in range(RECENT_RESULTS + 5):
        extra.remember(f"small-{i}", OpResult("probe", 0, 1.0))
    assert list(extra.recent) == [f"small-{i}" for i in range(5, RECENT_RESULTS + 5)]
    huge = np.zeros(RECENT_RESULT_BYTES // 4 + 1, np.float32)
    extra.remember("huge", OpResult("mvm", 0, 1.0, values=huge))
    assert list(extra.recent) == ["huge"]
    extra.remember("next", OpResult("probe", 0, 2.0))
    assert list(extra.recent) == ["next"]
