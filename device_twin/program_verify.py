"""ProgramVerify: a correction job's closed program-and-verify loop, run inside the twin.

A real chip runs its program-and-verify loop on die: the controller hands it a job (which
devices, their targets, the tolerance, the limits, the method) and gets back what became of
each device. ``run`` is that loop, with the same physics and the same steps as a firmware
that drives it one twin call at a time (``controller.firmware.pulsegen``, the step-by-step
path, kept for prototyping firmware)::

    read -> (SET pulses | RESET + re-program) -> read (verify) -> ... -> read

Every step is the chip's own operation on the devices still converging (``writes.program``,
``writes.pulse``, ``reads.read_selected``), costed by the same energy model, at the instant
the step-by-step path would make it: each step starts when the previous one's latency has
passed. Draws are keyed by (device, write number) and read noise by the instant, so a device
meets exactly the same writes and reads on both paths: same outcome, same energy, whichever
path (or call order) ran it.

The chip's clock stays at the job's ``at_s`` (other tiles may run jobs from the same instant,
as pulse channels do); the job's devices carry the write instants of their steps, up to
``at_s + latency``. Its tile is busy until then: the caller holds it for the returned
latency.

Pulse planning (``NominalPulseResponse``) is the firmware's rule: the count of SET pulses
whose nominal end point (the family's ExpStep response without device-to-device spread) lies
closest to the target; ``auto`` re-programs a device whose plan is predicted to miss the
tolerance (nominal miss and pulse noise, root-sum-square).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import numpy as np

from device_twin import writes
from device_twin.energy import Cost
from device_twin.errors import InvalidArgument
from device_twin.reads import read_selected
from device_twin.validation import check_float_array

if TYPE_CHECKING:
    from device_twin.chip import Chip
    from device_twin.pulses import PulseModel

METHODS = ("auto", "pulse", "program")
#: Largest loop limits a job may ask for (iterations, re-programs, reads per verify step).
MAX_LOOP_LIMIT = 1000


@dataclass(frozen=True)
class VerifyJob:
    """How to run a job's loop (the firmware's ``PulseScheme``, in conductance units).

    Each iteration reads the devices still converging (``verify_reads`` reads averaged) and
    acts on those further than ``tolerance_us`` from their target: below it, SET pulses
    (``auto``, ``pulse``) or a re-program (``program``); above it, RESET and re-program
    (PCM cannot be lowered gradually). A device still outside after ``max_iterations``
    steps, or out of re-programs (``max_reprograms``) or pulses (``max_pulses``), fails.
    ``rewrite_all`` re-programs every device first without reading it (a refresh)."""

    method: Literal["auto", "pulse", "program"] = "auto"
    tolerance_us: float = 1.25
    max_iterations: int = 2
    max_pulses: int = 64
    max_pulses_per_step: int = 8
    max_reprograms: int = 2
    verify_reads: int = 1
    rewrite_all: bool = False


@dataclass
class VerifyStats:
    """What a ProgramVerify job did besides the per-device outcome (``OpResult.values``).

    ``t_write_s``: per device of the request, the instant of its last write in the job
    (NaN: the job did not write it). ``checks``: device reads compared with their target
    (the first read included); ``plans``: devices whose pulse count was planned."""

    steps: int = 0
    reprograms: int = 0
    set_pulses: int = 0
    checks: int = 0
    plans: int = 0
    t_write_s: np.ndarray | None = None

    def header(self) -> dict[str, int]:
        return {
            "steps": self.steps, "reprograms": self.reprograms, "set_pulses": self.set_pulses,
            "checks": self.checks, "plans": self.plans,
        }  # fmt: skip


@dataclass
class VerifyResult:
    """The loop's outcome, per device of the request and in total."""

    deviation: np.ndarray  # float32, (last read - target)/g_max
    failed: np.ndarray  # bool
    stats: VerifyStats
    cost: Cost
    pulses: int  # RESET + SET pulses
    inner_reads: int  # verify reads, those of the re-programs' own loops included
    written: np.ndarray  # bool: the job wrote the device


class NominalPulseResponse:
    """Expected step and cycle-to-cycle spread of one SET pulse (ExpStep, no d2d spread)."""

    def __init__(self, pulse_model: PulseModel) -> None:
        self.pm = pulse_model
        self.c = pulse_model.cfg

    def step_and_sigma_us(self, g_us: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        c, pm = self.c, self.pm
        w = pm.to_w(g_us)
        dw = pm.set_step_mean_w(w, c.dw_min, c.w_max, c.w_min)
        sig = pm.set_step_sigma_w(w, dw)
        return dw * pm.g_per_w_us, sig * pm.g_per_w_us

    def plan(
        self, g_us: np.ndarray, target_us: np.ndarray, max_count: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """Pulse count (1..max_count) per device whose nominal end point is closest to the
        target, and the predicted rms miss (nominal miss and pulse noise), in uS."""
        g = np.asarray(g_us, np.float64).copy()
        tgt = np.asarray(target_us, np.float64)
        best_n = np.ones(g.shape, np.int64)
        best_err = np.full(g.shape, np.inf)
        var = np.zeros(g.shape)
        best_var = np.zeros(g.shape)
        cap = float(self.pm.to_g(np.float64(self.c.w_max)))
        for n in range(1, max_count + 1):
            step, sig = self.step_and_sigma_us(g)
            g = np.minimum(g + step, cap)
            var += sig**2
            err = np.abs(g - tgt)
            better = err < best_err
            best_n = np.where(better, n, best_n)
            best_err = np.where(better, err, best_err)
            best_var = np.where(better, var, best_var)
            if not np.any(g < tgt):
                break
        return best_n, np.sqrt(best_err**2 + best_var)

    def plan_within(
        self, g_us: np.ndarray, target_us: np.ndarray, max_count: int, tol_us: float
    ) -> tuple[np.ndarray, np.ndarray]:
        """Like :meth:`plan`, but devices whose very first pulse is already noisier than
        ``tol_us`` get an infinite predicted miss without being planned (saves the work)."""
        _, sig1 = self.step_and_sigma_us(np.asarray(g_us, np.float64))
        n = np.ones(np.shape(g_us), np.int64)
        miss = np.full(np.shape(g_us), np.inf)
        cand = sig1 <= tol_us
        if np.any(cand):
            n[cand], miss[cand] = self.plan(g_us[cand], target_us[cand], max_count)
        return n, miss


def check_job(job: object, max_pulses_per_call: int) -> VerifyJob:
    """Validate a job's settings (``InvalidArgument`` naming the field)."""
    if not isinstance(job, VerifyJob):
        raise InvalidArgument(f"job must be a VerifyJob, got {type(job).__name__}")
    if job.method not in METHODS:
        raise InvalidArgument(
            f"unknown method {job.method!r}: expected one of {', '.join(METHODS)}", field="method"
        )
    tol = job.tolerance_us
    if isinstance(tol, bool) or not isinstance(tol, int | float) or not 0 < tol < float("inf"):
        raise InvalidArgument(f"tolerance_us must be finite and > 0, got {tol!r}",
                              field="tolerance_us")  # fmt: skip
    limits = {"max_iterations": (1, MAX_LOOP_LIMIT), "max_pulses": (1, 2**31 - 1),
              "max_pulses_per_step": (1, max_pulses_per_call),
              "max_reprograms": (0, MAX_LOOP_LIMIT), "verify_reads": (1, 100)}  # fmt: skip
    for name, (lo, hi) in limits.items():
        v = getattr(job, name)
        if isinstance(v, bool) or not isinstance(v, int | np.integer) or not lo <= v <= hi:
            raise InvalidArgument(f"{name} must be an integer in [{lo}, {hi}], got {v!r}",
                                  field=name)  # fmt: skip
    return job


def check_first_read(g_read_us: object, n: int) -> np.ndarray | None:
    """The caller's first read of the job's devices (uS), or None: the loop reads first."""
    if g_read_us is None:
        return None
    g = check_float_array(g_read_us, "g_read_us", (n,))
    return g.astype(np.float64)


def run(
    chip: Chip,
    tile: int,
    arrays: np.ndarray,
    index: np.ndarray,
    target: np.ndarray,
    job: VerifyJob,
    first_read: np.ndarray | None,
    at_s: float,
    response: NominalPulseResponse,
) -> VerifyResult:
    """Run the loop on validated devices (see the module docstring); writes the chip.

    The devices still converging are ``pos`` (positions in the request); per-device loop
    state is kept for the whole request and indexed by it, so that dropping devices copies
    one index array, not the state."""
    n = int(index.size)
    g_max = chip.config.g_max_us
    tol_us = float(job.tolerance_us)
    em = chip.energy_model
    deviation = np.zeros(n, np.float32)
    failed = np.zeros(n, bool)
    t_write = np.full(n, np.nan)
    pulses_dev = np.zeros(n, np.int64)
    reprogs = np.zeros(n, np.int64)
    unreachable = np.zeros(n, bool)  # its bound lies below its target
    st = VerifyStats()
    energy = 0.0
    pulses = inner_reads = 0
    t = float(at_s)
    pos = np.arange(n)

    def program(p: np.ndarray) -> float:
        nonlocal energy, pulses, inner_reads
        g_t = target[p]
        out = writes.program(chip, tile, arrays[p], index[p], g_t, t)
        cost = em.program(g_t, out.pulses, out.reads)
        chip.apply_writes(out.writes)
        t_write[p] = t
        reprogs[p] += 1
        unreachable[p] |= out.failed
        st.reprograms += int(p.size)
        pulses += int(p.size) + int(out.pulses.sum())
        inner_reads += int(out.reads.sum())
        energy += cost.energy_pj
        return cost.latency_s

    if job.rewrite_all and n:
        t = t + program(pos)

    for it in range(job.max_iterations + 1):
        if pos.size == 0:
            break
        last = it == job.max_iterations
        if it == 0 and first_read is not None and not job.rewrite_all:
            g = first_read
        else:
            g = np.zeros(pos.size)
            a_live, i_live = arrays[pos], index[pos]
            for _ in range(job.verify_reads):
                values = read_selected(chip, tile, a_live, i_live, t, True).numpy()
                g += values
                cost = em.read_devices(values)
                energy += cost.energy_pj
                inner_reads += pos.size
                t = t + cost.latency_s
            g /= job.verify_reads
        st.checks += pos.size
        err = g - target[pos]
        ok = np.abs(err) <= tol_us
        deviation[pos] = err / g_max
        if last:
            failed[pos[~ok]] = True
            st.steps = it + 1
            break
        keep = ~ok
        pos, g, err = pos[keep], g[keep], err[keep]
        if pos.size == 0:
            st.steps = it + 1
            break
        over = err > 0
        reprog = over.copy()
        counts = np.zeros(pos.size, np.int64)
        under = ~over
        if job.method == "program":
            reprog |= under
        elif np.any(under):
            p_under = pos[under]
            if job.method == "auto":
                k, miss_us = response.plan_within(
                    g[under], target[p_under], job.max_pulses_per_step, tol_us
                )
            else:
                k, miss_us = response.plan(g[under], target[p_under], job.max_pulses_per_step)
            st.plans += int(p_under.size)
            k = np.minimum(k, job.max_pulses - pulses_dev[p_under])
            bad = (k < 1) | ((miss_us > tol_us) if job.method == "auto" else False)
            u = np.flatnonzero(under)
            reprog[u[bad]] = True
            counts[u[~bad]] = k[~bad]
        # a device out of re-programs (or of pulses, for method="pulse") fails
        cannot = reprog & (reprogs[pos] >= job.max_reprograms)
        cannot |= unreachable[pos]
        if job.method == "pulse":
            cannot |= reprog & ~over
        if np.any(cannot):
            failed[pos[cannot]] = True
            live = ~cannot
            pos, reprog, counts = pos[live], reprog[live], counts[live]
        if np.any(reprog):
            t = t + program(pos[reprog])
        pulse = counts > 0
        if np.any(pulse):
            p, c = pos[pulse], counts[pulse]
            w = writes.pulse(chip, tile, arrays[p], index[p], False, c, t)
            cost = em.pulses(c, reset=False)
            chip.apply_writes(w)
            t_write[p] = t
            pulses_dev[p] += c
            st.set_pulses += int(c.sum())
            pulses += int(c.sum())
            energy += cost.energy_pj
            t = t + cost.latency_s
        st.steps = it + 1

    st.t_write_s = t_write
    written = ~np.isnan(t_write)
    return VerifyResult(deviation, failed, st, Cost(energy, t - float(at_s)), pulses,
                        inner_reads, written)  # fmt: skip


def final_writes(
    chip: Chip, tile: int, arrays: np.ndarray, index: np.ndarray
) -> writes.DeviceWrites:
    """The state a job left in the devices it wrote, for the log (one entry per device, its
    own write instant: ``t_write_s`` is an array)."""
    flat = chip.positions(tile, arrays, index)
    return writes.DeviceWrites(
        tile,
        arrays.astype(np.int8),
        index,
        chip.g_prog_us.reshape(-1)[flat],
        chip.nu.reshape(-1)[flat],
        chip.t_write_s.reshape(-1)[flat].copy(),
        chip.write_count.reshape(-1)[flat],
    )
