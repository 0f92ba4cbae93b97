"""Bad input to the core raises a clear, typed error and leaves the chip exactly as it was."""

import numpy as np
import pytest

from device_twin import (
    AlreadyExists,
    Array,
    Chip,
    ChipConfig,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PulseKind,
    ResourceExhausted,
)
from device_twin.registry import ChipRegistry

R, C = 8, 6
GOOD = np.full((R, C), 5.0, np.float32)


def _chip() -> Chip:
    chip = Chip(ChipConfig(n_tiles=2, tile_rows=R, tile_cols=C, seed=1))
    chip.program(0, GOOD, GOOD, at_s=100.0)
    return chip


def _snapshot(chip: Chip) -> tuple:
    return (chip.g_prog_us.copy(), chip.nu.copy(), chip.t_write_s.copy(), chip.programmed.copy(),
            chip.now_s, chip.op_counter, chip.ledger.to_dict())  # fmt: skip


nan_targets = GOOD.copy()
nan_targets[1, 1] = np.nan
inf_x = np.ones((2, R), np.float32)
inf_x[0, 0] = np.inf

BAD = [
    ("program wrong shape", lambda c: c.program(0, GOOD[:-1], GOOD, 200.0), InvalidArgument, "shape"),
    ("program int dtype", lambda c: c.program(0, GOOD.astype(np.int32), GOOD, 200.0), InvalidArgument, "float32"),
    ("program list not array", lambda c: c.program(0, GOOD.tolist(), GOOD, 200.0), InvalidArgument, "numpy"),
    ("program NaN", lambda c: c.program(0, nan_targets, GOOD, 200.0), InvalidArgument, "NaN"),
    ("program negative", lambda c: c.program(0, GOOD - 10, GOOD, 200.0), InvalidArgument, "[0, 25.0]"),
    ("program above g_max", lambda c: c.program(0, GOOD * 10, GOOD, 200.0), InvalidArgument, "[0, 25.0]"),
    ("unknown tile", lambda c: c.program(5, GOOD, GOOD, 200.0), NotFound, "tile 5"),
    ("negative tile", lambda c: c.read_devices(-1, Array.POS, None, 200.0), NotFound, "tile -1"),
    ("time backwards", lambda c: c.read_devices(0, Array.POS, None, 50.0), FailedPrecondition, "backwards"),
    ("time NaN", lambda c: c.read_devices(0, Array.POS, None, float("nan")), InvalidArgument, "finite"),
    ("tile not programmed", lambda c: c.probe(1, np.arange(2), Array.POS, 200.0), FailedPrecondition, "not programmed"),
    ("unknown array", lambda c: c.read_devices(0, 7, None, 200.0), InvalidArgument, "array"),
    ("DIFF for a read", lambda c: c.read_devices(0, Array.DIFF, None, 200.0), InvalidArgument, "probe"),
    ("devices out of range", lambda c: c.read_devices(0, Array.POS, np.array([R * C]), 200.0), InvalidArgument, "out of range"),
    ("devices duplicated", lambda c: c.apply_pulses(0, Array.POS, np.array([1, 1]), PulseKind.SET, 1, 200.0), InvalidArgument, "duplicates"),
    ("devices empty", lambda c: c.apply_pulses(0, Array.POS, np.array([], int), PulseKind.SET, 1, 200.0), InvalidArgument, "empty"),
    ("devices float", lambda c: c.apply_pulses(0, Array.POS, np.array([1.0]), PulseKind.SET, 1, 200.0), InvalidArgument, "integers"),
    ("pulse count zero", lambda c: c.apply_pulses(0, Array.POS, np.arange(3), PulseKind.SET, 0, 200.0), InvalidArgument, "count"),
    ("pulse count huge", lambda c: c.apply_pulses(0, Array.POS, np.arange(3), PulseKind.SET, 10**6, 200.0), InvalidArgument, "count"),
    ("unknown pulse kind", lambda c: c.apply_pulses(0, Array.POS, np.arange(3), 9, 1, 200.0), InvalidArgument, "pulse kind"),
    ("mvm wrong width", lambda c: c.mvm(0, np.ones((2, R + 1), np.float32), 200.0), InvalidArgument, "rows"),
    ("mvm Inf", lambda c: c.mvm(0, inf_x, 200.0), InvalidArgument, "NaN or Inf"),
    ("mvm columns out of range", lambda c: c.mvm(0, np.ones((1, 2), np.float32), 200.0, col_start=4, col_count=5), InvalidArgument, "columns"),
    ("probe rows out of range", lambda c: c.probe(0, np.array([R]), Array.POS, 200.0), InvalidArgument, "rows"),
    ("program_devices target shape", lambda c: c.program_devices(0, Array.POS, np.arange(3), np.ones(2, np.float32), 200.0), InvalidArgument, "shape"),
]  # fmt: skip


@pytest.mark.parametrize("name,call,error,text", BAD, ids=[b[0] for b in BAD])
def test_bad_input_raises_typed_error_and_leaves_state(name, call, error, text):
    """Each bad request raises its typed error with a message saying what was wrong; state is unchanged."""
    chip = _chip()
    before = _snapshot(chip)
    with pytest.raises(error) as info:
        call(chip)
    assert text in str(info.value)
    after = _snapshot(chip)
    for a, b in zip(before, after, strict=True):
        if isinstance(a, np.ndarray):
            np.testing.assert_array_equal(a, b)
        else:
            assert a == b
    # and the chip still works
    chip.read_devices(0, Array.POS, np.arange(3), 300.0)


def test_error_codes_name_grpc_statuses():
    """Each error type carries the gRPC status name the service will answer with."""
    assert InvalidArgument.code == "INVALID_ARGUMENT"
    assert NotFound.code == "NOT_FOUND"
    assert FailedPrecondition.code == "FAILED_PRECONDITION"
    assert ResourceExhausted.code == "RESOURCE_EXHAUSTED"
    assert AlreadyExists.code == "ALREADY_EXISTS"


def test_registry_enforces_memory_budget_and_chip_count():
    """The registry refuses chips over its state budget or beyond its chip count, and unknown ids."""
    reg = ChipRegistry(state_budget_bytes=ChipConfig().state_bytes * 2, max_chips=3)
    reg.create_chip(ChipConfig(), "a")
    with pytest.raises(ResourceExhausted, match="does not fit"):
        reg.create_chip(ChipConfig(n_tiles=2), "b")
    reg.create_chip(ChipConfig(tile_rows=8, tile_cols=8), "b")
    reg.create_chip(ChipConfig(tile_rows=8, tile_cols=8), "c")
    with pytest.raises(ResourceExhausted, match="at most 3"):
        reg.create_chip(ChipConfig(tile_rows=8, tile_cols=8), "d")
    with pytest.raises(AlreadyExists, match="already exists"):
        reg.create_chip(ChipConfig(tile_rows=8, tile_cols=8), "a")
    with pytest.raises(InvalidArgument, match="not valid"):
        reg.create_chip(ChipConfig(tile_rows=8, tile_cols=8), "../etc")
    with pytest.raises(NotFound, match="'zz' not found"):
        reg.chip_info("zz")
    reg.delete_chip("a")
    assert reg.list_chips() == ["b", "c"]


def test_config_rejects_unknown_fields_and_bad_values():
    """Chip configs reject unknown keys and out-of-range values (pydantic)."""
    from pydantic import ValidationError

    with pytest.raises(ValidationError):
        ChipConfig(n_tile=3)
    with pytest.raises(ValidationError):
        ChipConfig(g_max_us=-1)
    with pytest.raises(ValidationError):
        ChipConfig(tile_rows=0)


def test_both_arrays_in_one_call_equal_two_single_array_calls():
    """Addressing BOTH arrays in one call gives what two single-array calls give (same seeds)."""
    from device_twin.config import DeviceModelConfig

    cfg = ChipConfig(
        tile_rows=R, tile_cols=C, seed=4, device=DeviceModelConfig(read_noise_scale=0.0)
    )
    a, b = Chip(cfg), Chip(cfg)
    for chip in (a, b):
        chip.program(0, GOOD, GOOD * 2, at_s=0.0)
    n = R * C
    pos, neg = np.array([1, 5, 7]), np.array([0, 5])
    both = np.concatenate([pos, n + neg])
    ra = a.read_devices(0, Array.BOTH, both, 10.0).values
    rp = b.read_devices(0, Array.POS, pos, 10.0).values
    rn = b.read_devices(0, Array.NEG, neg, 10.0).values
    np.testing.assert_array_equal(ra, np.concatenate([rp, rn]))
    whole = a.read_devices(0, Array.BOTH, None, 10.0).values  # same instant, no read noise
    assert whole.shape == (2, R, C)
    np.testing.assert_array_equal(whole[1].reshape(-1)[neg], rn.astype(np.float32))
    res = a.program_devices(0, Array.BOTH, both, np.full(both.size, 9.0, np.float32), 12.0)
    np.testing.assert_array_equal(res.writes.array, [0, 0, 0, 1, 1])
    np.testing.assert_array_equal(res.writes.index, [1, 5, 7, 0, 5])
    assert a.t_write_s[0, 1].reshape(-1)[5] == 12.0 and a.t_write_s[0, 1].reshape(-1)[1] == 0.0
    p = a.probe(0, np.array([0, 3]), Array.BOTH, 13.0)
    assert p.values.shape == (2, 2, C)
    q = a.apply_pulses(0, Array.BOTH, np.array([2, n + 2]), PulseKind.SET, 1, 14.0)
    np.testing.assert_array_equal(q.writes.array, [0, 1])
    with pytest.raises(InvalidArgument, match="out of range"):
        a.read_devices(0, Array.BOTH, np.array([2 * n]), 15.0)
