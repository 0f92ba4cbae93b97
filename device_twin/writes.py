"""Writing devices: program-and-verify to targets, and SET/RESET pulses.

Every draw of a write is keyed by (chip seed, tile, array, device index, that device's write
number): a device's history alone decides its next state, whatever else the chip was asked
in between. A write returns ``DeviceWrites``, the state it left, so a log replays it
without drawing anything.

Program-and-verify (``program``): the outcome follows the family's programming statistics
around the target, capped at the device's own upper bound (``pulses.PulseModel.bound_us``).
A device whose bound lies more than the loop's accuracy (the family's sigma_P at the target)
below its target, or whose floor lies that far above it, cannot reach it: it ends at its
bound, is reported failed, and uses the whole iteration budget. Pulses and verify reads
follow ``PulseModel.program_cost``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from device_twin.reads import read_selected
from device_twin.rng import STREAM_PROGRAM, WriteKeys, device_ids

if TYPE_CHECKING:
    from device_twin.chip import Chip


@dataclass
class DeviceWrites:
    """What a write left in the devices: enough to replay it without random draws."""

    tile: int
    array: np.ndarray  # int8 per device: 2*pair + sign (single pair: 0 = G+, 1 = G-)
    index: np.ndarray  # int64 per device: row * cols + col
    g_prog_us: np.ndarray  # float32
    nu: np.ndarray  # float32: the family's per-device parameter (PCM: drift exponent)
    t_write_s: float
    write_count: np.ndarray | None = None  # uint32: the device's writes so far, this one included


@dataclass
class ProgramOutcome:
    writes: DeviceWrites
    failed: np.ndarray  # bool per device
    pulses: np.ndarray  # SET pulses per device
    reads: np.ndarray  # verify reads per device


def _keys(chip: Chip, tile: int, arrays: np.ndarray, index: np.ndarray):
    count = chip.write_count.reshape(-1).take(chip.positions(tile, arrays, index))
    return WriteKeys(chip.config.seed, tile, device_ids(arrays, index), count), count + 1


def program(
    chip: Chip, tile: int, arrays: np.ndarray, index: np.ndarray, g_target: np.ndarray, at_s: float
) -> ProgramOutcome:
    """Program-and-verify devices from RESET to ``g_target`` (see the module docstring)."""
    fam, pm = chip.family, chip.pulse_model
    g_target = np.asarray(g_target, np.float32)
    keys, count = _keys(chip, tile, arrays, index)
    z_prog, z_param = keys.normals(STREAM_PROGRAM)
    bound = pm.bound_us(tile, arrays, index)
    floor = np.float32(fam.g_floor_us)
    sigma = fam.programming_sigma_us(g_target)
    too_high = bound < g_target - sigma
    failed = too_high | (g_target < floor - sigma)
    reached = np.clip(g_target, floor, bound)
    # sigma_P where the device ends: the target's, unless the target lies out of its reach
    sigma_reached = (
        sigma if np.array_equal(reached, g_target) else fam.programming_sigma_us(reached)
    )
    g_prog, param = fam.programmed(reached, z_prog, z_param, sigma_reached)
    g_prog = np.where(too_high, bound, np.minimum(g_prog, bound)).astype(np.float32)
    pulses, reads = pm.program_cost(g_target, failed, chip.config.program_verify.max_iterations)
    writes = DeviceWrites(tile, arrays.astype(np.int8), index, g_prog, param, at_s,
                          count.astype(np.uint32))  # fmt: skip
    return ProgramOutcome(writes, failed, pulses, reads)


def pulse(
    chip: Chip,
    tile: int,
    arrays: np.ndarray,
    index: np.ndarray,
    reset: bool,
    counts: np.ndarray,
    at_s: float,
) -> DeviceWrites:
    """SET pulses (``counts`` per device) on the drifted state at ``at_s``, or one RESET.

    Any write restarts the device's drift: a new t_write and the family's parameter redrawn
    for the new conductance."""
    pm = chip.pulse_model
    keys, count = _keys(chip, tile, arrays, index)
    params = pm.device_params(tile, arrays, index)
    if reset:
        g_new = pm.apply_reset(params, keys)
    else:
        g_now = read_selected(chip, tile, arrays, index, at_s, noisy=False).numpy()
        g_new = pm.apply_set(g_now, counts, params, keys)
    param = chip.family.pulsed_param(g_new, keys.normals(STREAM_PROGRAM)[1])
    return DeviceWrites(tile, arrays.astype(np.int8), index, g_new, param, at_s,
                        count.astype(np.uint32))  # fmt: skip
