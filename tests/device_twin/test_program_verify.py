"""ProgramVerify on the twin: the loop's outcome, its instants and clock, refused jobs, its
record in the log, and the same answer in process, over unary gRPC and in a session."""

from __future__ import annotations

import numpy as np
import pytest

from controller.rpc.client import TwinClient
from device_twin import Chip, ChipConfig
from device_twin.errors import FailedPrecondition, InvalidArgument, NotFound
from device_twin.program_verify import VerifyJob
from device_twin.service.persistence import DurableRegistry, StateStore
from tests.device_twin.service.conftest import assert_same_result, start_inprocess

CFG = ChipConfig(n_tiles=2, tile_rows=24, tile_cols=16, seed=7)
N = CFG.tile_rows * CFG.tile_cols
STATE = ("g_prog_us", "nu", "t_write_s", "write_count")


def _targets(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(2.0, 20.0, (2, N)).astype(np.float32)


def _programmed(chip) -> np.ndarray:
    g = _targets()
    for t in (0, 1):
        chip.program(t, g[0].reshape(24, 16), g[1].reshape(24, 16), at_s=0.0)
    return g


def _job(chip_like, n: int = 60, seed: int = 1):
    """(arrays, devices, targets) of ``n`` devices of both arrays, in no particular order."""
    rng = np.random.default_rng(seed)
    flat = rng.choice(2 * N, n, replace=False)
    arrays, devices = np.divmod(flat, N)
    return arrays.astype(np.int8), devices, _targets()[arrays, devices]


def _state(chip: Chip) -> tuple:
    return tuple(getattr(chip, k).tobytes() for k in STATE) + (chip.now_s, chip.op_counter)


def test_devices_end_within_tolerance_or_reported_failed():
    """After a job each device's deviation is its last read's, within tolerance unless the
    job reports it failed; the cost is booked in the chip's ledger."""
    quiet = ChipConfig(**{**CFG.model_dump(exclude={"device"}),
                          "device": {"family": "pcm", "read_noise_scale": 0.0}})  # fmt: skip
    chip = Chip(quiet)
    _programmed(chip)
    arrays, devices, target = _job(chip)
    job = VerifyJob(method="auto", tolerance_us=0.5, max_iterations=4)
    r = chip.program_verify(0, arrays, devices, target, job, at_s=3600.0)
    dev_us = r.values.astype(np.float64) * CFG.g_max_us
    failed = np.zeros(devices.size, bool)
    failed[r.failed] = True
    assert np.all(np.abs(dev_us[~failed]) <= 0.5 + 1e-4)
    assert np.all(np.abs(dev_us[failed]) > 0.5 - 1e-4)
    assert failed.mean() < 0.5
    assert r.verify.checks >= devices.size and r.verify.steps >= 1
    # a re-program is a RESET and its SET pulses; partial SET pulses come on top
    assert r.pulses > r.verify.reprograms + r.verify.set_pulses
    entry = chip.ledger.to_dict()["program_verify"]
    assert entry["calls"] == 1 and entry["energy_pj"] == r.energy_pj > 0
    assert entry["latency_s"] == r.latency_s > 0


def test_the_clock_stays_at_at_s_and_writes_carry_their_step_instants():
    """The chip's clock stays at the job's at_s (another tile may start a job at the same
    instant); written devices carry instants in [at_s, at_s + latency], untouched ones keep
    theirs, and the result names each written device's instant."""
    chip = Chip(CFG)
    _programmed(chip)
    arrays, devices, target = _job(chip, n=100)
    before = chip.t_write_s.copy()
    job = VerifyJob(method="program", tolerance_us=0.3, max_iterations=3)
    r = chip.program_verify(0, arrays, devices, target, job, at_s=7200.0)
    assert chip.now_s == 7200.0
    t_job = r.verify.t_write_s
    written = ~np.isnan(t_job)
    assert written.any() and (~written).any()  # some were within tolerance at the first read
    assert np.all((t_job[written] >= 7200.0) & (t_job[written] <= 7200.0 + r.latency_s))
    assert len(np.unique(t_job[written])) > 1  # re-programs at later steps
    assert np.array_equal(chip.t_write_s[0, arrays, devices // 16, devices % 16][written],
                          t_job[written])  # fmt: skip
    untouched = np.ones(before.shape, bool)
    untouched[0, arrays[written], devices[written] // 16, devices[written] % 16] = False
    assert np.array_equal(chip.t_write_s[untouched], before[untouched])
    chip.program_verify(1, arrays, devices, target, job, at_s=7200.0)  # the same instant


def test_a_first_read_given_by_the_caller_replaces_the_loops_first_read():
    """With the caller's read of every device at its target, nothing is read or written."""
    chip = Chip(CFG)
    _programmed(chip)
    arrays, devices, target = _job(chip)
    state = _state(chip)[:4]
    r = chip.program_verify(0, arrays, devices, target, VerifyJob(), at_s=10.0,
                            g_read_us=target.astype(np.float64))  # fmt: skip
    assert r.failed.size == 0 and r.energy_pj == 0.0 and r.latency_s == 0.0
    assert r.verify.checks == devices.size and r.verify.steps == 1
    assert np.all(np.isnan(r.verify.t_write_s))
    assert _state(chip)[:4] == state


@pytest.mark.parametrize(
    ("change", "error"),
    [
        ({"arrays": np.full(60, 2, np.int8)}, InvalidArgument),  # a second pair does not exist
        ({"arrays": np.zeros(59, np.int8)}, InvalidArgument),
        ({"devices": np.full(60, N)}, InvalidArgument),
        ({"devices": np.zeros(60, np.int64), "arrays": np.zeros(60, np.int8)}, InvalidArgument),
        ({"target": np.full(60, np.nan, np.float32)}, InvalidArgument),
        ({"target": np.full(60, 30.0, np.float32)}, InvalidArgument),
        ({"first": np.zeros(3)}, InvalidArgument),
        ({"job": VerifyJob(method="anneal")}, InvalidArgument),  # type: ignore[arg-type]
        ({"job": VerifyJob(tolerance_us=0.0)}, InvalidArgument),
        ({"job": VerifyJob(max_iterations=0)}, InvalidArgument),
        ({"job": VerifyJob(verify_reads=101)}, InvalidArgument),
        ({"job": VerifyJob(max_pulses_per_step=10**6)}, InvalidArgument),
        ({"tile": 5}, NotFound),
        ({"tile": 1}, FailedPrecondition),  # not programmed
        ({"at_s": 1.0}, FailedPrecondition),  # before the chip's clock
    ],
)
def test_a_refused_job_changes_nothing(change, error):
    """Bad addresses, targets, first reads, settings, tiles or times are refused with the
    core's typed error, and the chip is bit for bit as before."""
    chip = Chip(CFG)
    g = _targets()
    chip.program(0, g[0].reshape(24, 16), g[1].reshape(24, 16), at_s=0.0)
    chip.advance(100.0)
    arrays, devices, target = _job(chip)
    args = {"tile": 0, "arrays": arrays, "devices": devices, "target": target,
            "job": VerifyJob(), "at_s": 200.0, "first": None, **change}  # fmt: skip
    before = _state(chip)
    with pytest.raises(error):
        chip.program_verify(args["tile"], args["arrays"], args["devices"], args["target"],
                            args["job"], args["at_s"], args["first"])  # fmt: skip
    assert _state(chip) == before


def test_the_log_replays_a_job_and_a_retry_gets_the_first_answer(tmp_path):
    """A registry restored from its log after a ProgramVerify has the devices exactly as
    before, and a retried request (same id) returns the recorded result without acting."""
    registry = DurableRegistry(store=StateStore(tmp_path))
    registry.restore()
    registry.create_chip(CFG, "c")
    g = _targets()
    for t in (0, 1):
        registry.program("c", t, g[0].reshape(24, 16), g[1].reshape(24, 16), 0.0)
    arrays, devices, target = _job(None)
    job = VerifyJob(method="auto", tolerance_us=0.4, max_iterations=3)
    first = registry.program_verify("c", 0, arrays, devices, target, job, 3600.0, request_id="r1")
    state = _state(registry._chips["c"])
    registry._stop.set()
    registry.store.close()  # a crash: no final snapshot

    restored = DurableRegistry(store=StateStore(tmp_path))
    restored.restore()
    assert _state(restored._chips["c"]) == state
    again = restored.program_verify("c", 0, arrays, devices, target, job, 3600.0,
                                    request_id="r1")  # fmt: skip
    assert_same_result(again, first)
    assert np.array_equal(again.verify.t_write_s, first.verify.t_write_s, equal_nan=True)
    assert again.verify.header() == first.verify.header()
    assert _state(restored._chips["c"]) == state
    restored.close()


@pytest.mark.parametrize("session", [False, True])
def test_over_grpc_the_answer_is_the_in_process_one(session):
    """ProgramVerify through TwinClient (unary or in a session) answers exactly as the core in
    process: values, failed devices, counts and write instants."""
    server = start_inprocess()
    try:
        with TwinClient(server.address, session=session) as client:
            cid = client.create_chip(CFG)
            local = Chip(CFG)
            g = _targets()
            for twin, args in ((client, (cid,)), (local, ())):
                for t in (0, 1):
                    twin.program(*args, t, g[0].reshape(24, 16), g[1].reshape(24, 16), 0.0)
            arrays, devices, target = _job(None, n=80)
            first = target + np.random.default_rng(3).normal(0, 1.0, target.size)
            job = VerifyJob(method="auto", tolerance_us=0.5, max_iterations=3, verify_reads=2)
            remote = client.program_verify(cid, 0, arrays, devices, target, job, 3600.0,
                                           g_read_us=first)  # fmt: skip
            mine = local.program_verify(0, arrays, devices, target, job, 3600.0, first)
            assert_same_result(remote, mine)
            assert remote.verify.header() == mine.verify.header()
            assert np.array_equal(remote.verify.t_write_s, mine.verify.t_write_s, equal_nan=True)
            with pytest.raises(InvalidArgument):
                client.program_verify(cid, 0, arrays, devices, target,
                                      VerifyJob(max_iterations=0), 3600.0)  # fmt: skip
    finally:
        server.stop(0)
