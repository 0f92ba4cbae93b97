"""The pulse generator: program-and-verify loops on a few channels, one tile per job.

A :class:`PulseGenerator` is a SimPy resource of ``pulse_channels`` channels. A correction job
takes a channel and its tile (the tile is unavailable to inference and probes meanwhile) and
runs, for all of its devices at once, the loop described by its
:class:`~controller.firmware.policies.base.PulseScheme`::

    read -> (SET pulses | RESET + re-program) -> read (verify) -> ... -> read

Each step is one twin call for every device still converging, both arrays of the pairs at
once (``Array.BOTH``; never one call per device); each call's reported latency is waited in
simulated time and its energy booked on the job's ledger event. PCM cannot be lowered
gradually: a device above its level is RESET and re-programmed (``program_devices`` does
both). The number of SET pulses for a device below its level comes from the nominal pulse
response of the device family (the chip's ``PulseModelConfig`` without device-to-device
spread): the count whose nominal end point lies closest to the target, at most
``max_pulses_per_step``. With ``method="auto"`` a device is pulsed only when that plan is
predicted to land within tolerance (its nominal miss and the cycle-to-cycle noise of the
pulses, root-sum-square); otherwise it is re-programmed. A device the twin reports it cannot
program to its target (its own saturation bound lies below it) fails at its next verify read
instead of being re-programmed again.

The pulse generator is the one process that writes the firmware's state (each device's last
write time), so besides the chip's :class:`~controller.firmware.context.ChipContext` it gets
the :class:`~controller.firmware.firmware.Firmware` itself. It records each job on the ledger
and counts jobs in ``stats``.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

import numpy as np
import simpy

from controller.firmware.context import ChipContext
from controller.firmware.firmware import Firmware
from controller.firmware.ledger import OpAccumulator
from controller.firmware.policies.base import NEG, POS, CorrectionJob, JobOutcome, PulseScheme
from controller.firmware.quantities import CORRECTION, PROGRAM, JobStats
from device_twin.chip import Array
from device_twin.program_verify import NominalPulseResponse as _CoreNominalPulseResponse
from device_twin.program_verify import VerifyJob

SET, RESET = 0, 1


class NominalPulseResponse(_CoreNominalPulseResponse):
    """The twin core's pulse planner (``device_twin.program_verify``) for a chip config."""

    def __init__(self, chip_config: Any) -> None:
        from device_twin.pulses import chip_pulse_model

        super().__init__(chip_pulse_model(chip_config))


def _reported_failed(r: Any, flat: np.ndarray) -> np.ndarray:
    """Which of ``flat`` a program_devices result reports as unable to reach its target."""
    failed = getattr(r, "failed", None)
    if failed is None or np.size(failed) == 0:
        return np.zeros(flat.size, bool)
    return np.isin(flat, failed)


class PulseGenerator:
    """Correction jobs on ``channels`` channels (see the module docstring)."""

    def __init__(
        self, ctx: ChipContext, firmware: Firmware, chip_config: Any, channels: int
    ) -> None:
        self.ctx = ctx
        self.env = ctx.env
        self.firmware = firmware
        self.channels = simpy.Resource(ctx.env, capacity=channels)
        self.response = NominalPulseResponse(chip_config)
        self.jobs_running = 0
        self.stats = JobStats()

    def submit(
        self,
        job: CorrectionJob,
        scheme: PulseScheme,
        first_read_us: dict[int, np.ndarray] | None = None,
    ) -> simpy.Process:
        """Start a job; the process's value is its :class:`JobOutcome`.

        ``first_read_us`` (per array, one value per device of the job) stands in for the
        loop's first read: the drift monitor has just read these devices, and reading them
        again at the same instant would only cost time and energy."""
        return self.env.process(self._job(job, scheme, first_read_us or {}))

    def program_tile(self, tile: int) -> simpy.Process:
        """Program a tile to the firmware's targets: all of it from RESET, or only the devices
        holding weights (``ControllerConfig.program_scope``)."""
        return self.env.process(self._program_tile(tile))

    # --- processes --------------------------------------------------------------------------
    def _program_tile(self, tile: int) -> Generator[simpy.Event, Any, None]:
        ctx, fw = self.ctx, self.firmware
        with self.channels.request() as ch:
            yield ch
            with ctx.locks.hold(tile, PROGRAM) as lk:
                yield lk
                start = self.env.now
                ops = ctx.ledger.action()
                devices = iterations = 0
                for pair in range(fw.pairs_per_weight):
                    extra = {"pair": pair} if pair else {}
                    if ctx.config.program_scope == "weights":  # the devices holding weights
                        idx, targets = fw.weight_devices(tile, pair)
                        r = ops.add(ctx.twin.program_devices(
                            ctx.chip_id, tile, Array.BOTH, idx, targets, at_s=self.env.now,
                            **extra))  # fmt: skip
                    else:  # the whole tile, from RESET
                        g_pos, g_neg = fw.program_targets(tile, pair)
                        r = ops.add(ctx.twin.program(ctx.chip_id, tile, g_pos, g_neg,
                                                     at_s=self.env.now, **extra))  # fmt: skip
                    devices, iterations = devices + r.devices, iterations + r.iterations
                    fw.record_tile_write(tile, self.env.now, pair)
                    yield self.env.timeout(r.latency_s)
                ctx.ledger.add(PROGRAM, start, self.env.now, tile=tile, devices=devices,
                               ops=ops, detail={"iterations": iterations})  # fmt: skip

    def _job(
        self, job: CorrectionJob, s: PulseScheme, first_read: dict[int, np.ndarray]
    ) -> Generator[simpy.Event, Any, JobOutcome]:
        ctx, env, fw = self.ctx, self.env, self.firmware
        tile = job.tile
        n_arr = fw.tile_rows * fw.tile_cols
        with self.channels.request() as ch:
            yield ch
            with ctx.locks.hold(tile, CORRECTION) as lk:
                yield lk
                self.jobs_running += 1
                start = env.now
                ops = ctx.ledger.action()
                # The job's devices of both arrays of its pair travel together, a device
                # addressed as sign * rows * cols + row * cols + col (``Array.BOTH``).
                flat_parts, target_parts, first_parts = [], [], []
                for a, idx, tgt in (
                    (POS, job.pos, job.target_pos_us),
                    (NEG, job.neg, job.target_neg_us),
                ):
                    if np.size(idx):
                        idx = np.asarray(idx, np.int64)
                        arr = 2 * job.pair + a  # the pair's array on the firmware's state
                        target = fw.targets(tile, arr, idx) if tgt is None else np.asarray(tgt)
                        flat_parts.append(a * n_arr + idx)
                        target_parts.append(target.astype(np.float32))
                        first_parts.append(first_read.get(a))
                flat = np.concatenate(flat_parts) if flat_parts else np.zeros(0, np.int64)
                target = np.concatenate(target_parts) if target_parts else np.zeros(0, np.float32)
                first = None
                if first_parts and all(f is not None for f in first_parts):
                    first = np.concatenate([np.asarray(f, np.float64) for f in first_parts])
                loop = self._loop_twin if s.loop == "twin" else self._loop_steps
                outcome = yield from loop(job, s, ops, flat, target, first)
                outcome.start_s, outcome.end_s = start, env.now
                self.jobs_running -= 1
                self._record(outcome, ops, s)
                return outcome

    def _outcome(self, job: CorrectionJob, ops: OpAccumulator, flat: np.ndarray,
                 failed: np.ndarray, deviation: np.ndarray, reprograms: int, steps: int,
                 ctrl_pj: float) -> JobOutcome:  # fmt: skip
        """A job's outcome from its devices (BOTH addressing), which failed, and the
        deviation of each one's last read."""
        arr, idx = np.divmod(flat, self.firmware.tile_rows * self.firmware.tile_cols)
        conv, fail, dev = {}, {}, {}
        for a in (POS, NEG):
            ok, bad = (arr == a) & ~failed, (arr == a) & failed
            conv[a], fail[a] = idx[ok], idx[bad]
            dev[a] = np.concatenate([deviation[ok], deviation[bad]]).astype(np.float32)
        return JobOutcome(
            job=job, start_s=0.0, end_s=0.0, converged=conv, failed=fail, final_deviation=dev,
            pulses=ops.pulses, reprograms=reprograms, iterations=steps,
            energy_pj=ops.energy_pj, controller_energy_pj=ctrl_pj,
        )  # fmt: skip

    def _loop_twin(
        self, job: CorrectionJob, s: PulseScheme, ops: OpAccumulator, flat: np.ndarray,
        target: np.ndarray, first: np.ndarray | None,
    ) -> Generator[simpy.Event, Any, JobOutcome]:  # fmt: skip
        """The loop on the twin, one ``program_verify`` call; the tile stays held for the
        latency it reports."""
        ctx, env, fw = self.ctx, self.env, self.firmware
        de = ctx.config.digital_energy
        if flat.size == 0:
            return self._outcome(job, ops, flat, np.zeros(0, bool), np.zeros(0, np.float32),
                                 0, 0, 0.0)  # fmt: skip
        n_arr = fw.tile_rows * fw.tile_cols
        sign, idx = np.divmod(flat, n_arr)
        base = 2 * job.pair * n_arr  # the pair's first array, on (array, row, col) indices
        vj = VerifyJob(
            method=s.method, tolerance_us=s.tolerance * fw.g_max_us,
            max_iterations=s.max_iterations, max_pulses=s.max_pulses,
            max_pulses_per_step=s.max_pulses_per_step, max_reprograms=s.max_reprograms,
            verify_reads=s.verify_reads, rewrite_all=s.rewrite_all,
        )  # fmt: skip
        r = ops.add(ctx.twin.program_verify(
            # int8 arrays and int32 indices: 5 bytes per device address on the wire
            ctx.chip_id, job.tile, (2 * job.pair + sign).astype(np.int8), idx.astype(np.int32),
            target, vj, at_s=env.now, g_read_us=first,
        ))  # fmt: skip
        v = r.verify
        written = ~np.isnan(v.t_write_s)
        fw.record_writes(job.tile, base + flat[written], v.t_write_s[written])
        failed = np.zeros(flat.size, bool)
        failed[r.failed] = True
        ctrl_pj = de.check_pj(v.checks) + de.plan_pj(v.plans)
        yield env.timeout(r.latency_s)
        return self._outcome(job, ops, flat, failed, r.values, v.reprograms, v.steps, ctrl_pj)

    def _loop_steps(
        self, job: CorrectionJob, s: PulseScheme, ops: OpAccumulator, flat: np.ndarray,
        target: np.ndarray, first: np.ndarray | None,
    ) -> Generator[simpy.Event, Any, JobOutcome]:  # fmt: skip
        """The loop driven from here, one twin call per step (firmware prototyping)."""
        ctx, env, fw = self.ctx, self.env, self.firmware
        twin, chip, tile = ctx.twin, ctx.chip_id, job.tile
        de = ctx.config.digital_energy
        tol_us = s.tolerance * fw.g_max_us
        n = flat.size
        base = 2 * job.pair * fw.tile_rows * fw.tile_cols
        extra = {"pair": job.pair} if job.pair else {}
        pos = np.arange(n)  # position in the job of each device still converging
        tgt = target
        pulses = np.zeros(n, np.int64)
        reprogs = np.zeros(n, np.int64)
        unreachable = np.zeros(n, bool)  # the twin reported its bound lies below its target
        failed = np.zeros(n, bool)
        deviation = np.zeros(n, np.float32)
        ctrl_pj = 0.0
        reprograms = steps = 0

        def record(sel: np.ndarray) -> None:
            fw.record_writes(tile, base + flat[pos[sel]], env.now)

        if s.rewrite_all and n:
            r = ops.add(twin.program_devices(chip, tile, Array.BOTH, flat, tgt, at_s=env.now,
                                             **extra))  # fmt: skip
            record(slice(None))
            reprogs += 1
            unreachable |= _reported_failed(r, flat)
            reprograms += n
            yield env.timeout(r.latency_s)

        for it in range(s.max_iterations + 1):
            if pos.size == 0:
                break
            last = it == s.max_iterations
            if it == 0 and first is not None and not s.rewrite_all:
                g = first
            else:
                g = yield from self._read(ops, tile, flat[pos], s.verify_reads, extra)
                g /= s.verify_reads
            ctrl_pj += de.check_pj(pos.size)
            err = g - tgt
            ok = np.abs(err) <= tol_us
            deviation[pos] = err / fw.g_max_us
            if last:
                failed[pos[~ok]] = True
                steps = it + 1
                break
            keep = ~ok
            pos, tgt, g, err = pos[keep], tgt[keep], g[keep], err[keep]
            pulses, reprogs, unreachable = pulses[keep], reprogs[keep], unreachable[keep]
            if pos.size == 0:
                steps = it + 1
                break
            over = err > 0
            reprog = over.copy()
            counts = np.zeros(g.size, np.int64)
            under = ~over
            if s.method == "program":
                reprog |= under
            elif np.any(under):
                if s.method == "auto":
                    k, miss_us = self.response.plan_within(
                        g[under], tgt[under], s.max_pulses_per_step, tol_us
                    )
                else:
                    k, miss_us = self.response.plan(g[under], tgt[under], s.max_pulses_per_step)
                ctrl_pj += de.plan_pj(int(under.sum()))
                k = np.minimum(k, s.max_pulses - pulses[under])
                bad = (k < 1) | ((miss_us > tol_us) if s.method == "auto" else False)
                u = np.flatnonzero(under)
                reprog[u[bad]] = True
                counts[u[~bad]] = k[~bad]
            # a device out of re-programs (or of pulses, for method="pulse") fails
            cannot = reprog & (reprogs >= s.max_reprograms)
            cannot |= unreachable
            if s.method == "pulse":
                cannot |= reprog & ~over
            if np.any(cannot):
                failed[pos[cannot]] = True
                live = ~cannot
                pos, tgt, pulses, reprogs = pos[live], tgt[live], pulses[live], reprogs[live]
                unreachable, reprog, counts = unreachable[live], reprog[live], counts[live]
            if np.any(reprog):
                sel = flat[pos[reprog]]
                r = ops.add(twin.program_devices(chip, tile, Array.BOTH, sel, tgt[reprog],
                                                 at_s=env.now, **extra))  # fmt: skip
                record(reprog)
                reprogs[reprog] += 1
                unreachable[reprog] |= _reported_failed(r, sel)
                reprograms += sel.size
                yield env.timeout(r.latency_s)
            pulse = counts > 0
            if np.any(pulse):
                r = ops.add(twin.apply_pulses(chip, tile, Array.BOTH, flat[pos[pulse]], SET,
                                              counts[pulse], at_s=env.now, **extra))  # fmt: skip
                record(pulse)
                pulses[pulse] += counts[pulse]
                yield env.timeout(r.latency_s)
            steps = it + 1
        return self._outcome(job, ops, flat, failed, deviation, reprograms, steps, ctrl_pj)

    def _record(self, o: JobOutcome, ops: OpAccumulator, s: PulseScheme) -> None:
        st = self.stats
        st.jobs += 1
        st.devices += o.job.devices
        st.failed_devices += o.n_failed
        self.ctx.ledger.add(
            CORRECTION,
            o.start_s,
            o.end_s,
            tile=o.job.tile,
            devices=o.job.devices,
            ops=ops,
            controller_energy_pj=o.controller_energy_pj,
            detail={
                "reason": o.job.reason,
                "converged": o.n_converged,
                "failed": o.n_failed,
                "reprograms": o.reprograms,
                "iterations": o.iterations,
                "method": s.method,
                "tolerance": s.tolerance,
            }
            | ({"pair": o.job.pair} if self.firmware.pairs_per_weight > 1 else {}),
        )

    def _read(
        self, ops: OpAccumulator, tile: int, flat: np.ndarray, n_reads: int, extra: dict
    ) -> Generator[simpy.Event, Any, np.ndarray]:
        """Sum of ``n_reads`` reads of devices of both arrays of a pair (``extra``: the pair
        when not 0), one twin call per read."""
        ctx, env = self.ctx, self.env
        g = np.zeros(flat.size)
        for _ in range(n_reads):
            r = ops.add(ctx.twin.read_devices(ctx.chip_id, tile, Array.BOTH, flat, at_s=env.now,
                                              **extra))  # fmt: skip
            g += r.values
            yield env.timeout(r.latency_s)
        return g
