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

SET, RESET = 0, 1


class NominalPulseResponse:
    """Expected step and cycle-to-cycle spread of one SET pulse (ExpStep, no d2d spread), from
    the chip's device family (``device_twin.pulses``)."""

    def __init__(self, chip_config: Any) -> None:
        from device_twin.pulses import chip_pulse_model

        self.pm = chip_pulse_model(chip_config)
        self.c = chip_config.pulse

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
        """Program a whole tile from RESET to the firmware's targets."""
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
                    g_pos, g_neg = fw.program_targets(tile, pair)
                    extra = {"pair": pair} if pair else {}
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
        ctx, env = self.ctx, self.env
        twin, chip = ctx.twin, ctx.chip_id
        fw, de = self.firmware, ctx.config.digital_energy
        g_max = fw.g_max_us
        tol_us = s.tolerance * g_max
        tile = job.tile
        n_arr = fw.tile_rows * fw.tile_cols
        base = 2 * job.pair  # the job's arrays on the firmware's (tile, array) state
        extra = {"pair": job.pair} if job.pair else {}
        with self.channels.request() as ch:
            yield ch
            with ctx.locks.hold(tile, CORRECTION) as lk:
                yield lk
                self.jobs_running += 1
                start = env.now
                ops = ctx.ledger.action()
                ctrl_pj = 0.0
                reprograms = 0
                steps = 0
                # The job's devices of both arrays travel together: one twin call per step
                # (Array.BOTH), a device addressed as array * rows * cols + row * cols + col.
                flat_parts, target_parts, first_parts = [], [], []
                for a, idx, tgt in (
                    (POS, job.pos, job.target_pos_us),
                    (NEG, job.neg, job.target_neg_us),
                ):
                    if np.size(idx):
                        idx = np.asarray(idx, np.int64)
                        target = fw.targets(tile, base + a, idx) if tgt is None else np.asarray(tgt)
                        flat_parts.append(a * n_arr + idx)
                        target_parts.append(target.astype(np.float32))
                        first_parts.append(first_read.get(a))
                st: dict[str, np.ndarray] = {}
                if flat_parts:
                    flat = np.concatenate(flat_parts)
                    st = {
                        "flat": flat,
                        "target": np.concatenate(target_parts),
                        "pulses": np.zeros(flat.size, np.int64),
                        "reprogs": np.zeros(flat.size, np.int64),
                        # the twin reported that program-and-verify cannot reach the target
                        "unreachable": np.zeros(flat.size, bool),
                    }
                have_first = bool(first_parts) and all(f is not None for f in first_parts)
                converged: list[np.ndarray] = []
                failed: list[np.ndarray] = []
                conv_dev: list[np.ndarray] = []
                fail_dev: list[np.ndarray] = []

                def record(flat_idx: np.ndarray) -> None:
                    arr, idx = np.divmod(flat_idx, n_arr)
                    for a in (POS, NEG):
                        sel = arr == a
                        if np.any(sel):
                            fw.record_write(tile, base + a, idx[sel], env.now)

                def keep_only(mask: np.ndarray) -> None:
                    for k in ("flat", "target", "pulses", "reprogs", "unreachable"):
                        st[k] = st[k][mask]

                if s.rewrite_all and st:
                    r = ops.add(
                        twin.program_devices(
                            chip,
                            tile,
                            Array.BOTH,
                            st["flat"],
                            st["target"],
                            at_s=env.now,
                            **extra,
                        )
                    )
                    record(st["flat"])
                    st["reprogs"] += 1
                    st["unreachable"] |= _reported_failed(r, st["flat"])
                    reprograms += st["flat"].size
                    yield env.timeout(r.latency_s)

                for it in range(s.max_iterations + 1):
                    if not st or st["flat"].size == 0:
                        break
                    last = it == s.max_iterations
                    if it == 0 and have_first and not s.rewrite_all:
                        g = np.concatenate([np.asarray(f, np.float64) for f in first_parts])
                    else:
                        g = yield from self._read(ops, tile, st["flat"], s.verify_reads, extra)
                        g /= s.verify_reads
                    ctrl_pj += de.check_pj(st["flat"].size)
                    err = g - st["target"]
                    ok = np.abs(err) <= tol_us
                    converged.append(st["flat"][ok])
                    conv_dev.append((err[ok] / g_max).astype(np.float32))
                    keep = ~ok
                    if last:
                        failed.append(st["flat"][keep])
                        fail_dev.append((err[keep] / g_max).astype(np.float32))
                        steps = it + 1
                        break
                    keep_only(keep)
                    g, err = g[keep], err[keep]
                    if st["flat"].size == 0:
                        steps = it + 1
                        break
                    over = err > 0
                    reprog = over.copy()
                    counts = np.zeros(g.size, np.int64)
                    under = ~over
                    if s.method == "program":
                        reprog |= under
                    elif np.any(under):
                        planner = (
                            self.response.plan_within
                            if s.method == "auto"
                            else lambda g_, t_, n_, _tol: self.response.plan(g_, t_, n_)
                        )
                        n, miss_us = planner(
                            g[under], st["target"][under], s.max_pulses_per_step, tol_us
                        )
                        ctrl_pj += de.plan_pj(int(under.sum()))
                        left = s.max_pulses - st["pulses"][under]
                        n = np.minimum(n, left)
                        bad = (n < 1) | ((miss_us > tol_us) if s.method == "auto" else False)
                        u = np.flatnonzero(under)
                        reprog[u[bad]] = True
                        counts[u[~bad]] = n[~bad]
                    # a device out of re-programs (or of pulses, for method="pulse") fails
                    cannot = reprog & (st["reprogs"] >= s.max_reprograms)
                    cannot |= st["unreachable"]  # its bound lies below its target
                    if s.method == "pulse":
                        cannot |= reprog & ~over
                    if np.any(cannot):
                        failed.append(st["flat"][cannot])
                        fail_dev.append((err[cannot] / g_max).astype(np.float32))
                        live = ~cannot
                        keep_only(live)
                        reprog, counts = reprog[live], counts[live]
                    if np.any(reprog):
                        idx = st["flat"][reprog]
                        r = ops.add(
                            twin.program_devices(
                                chip,
                                tile,
                                Array.BOTH,
                                idx,
                                st["target"][reprog],
                                at_s=env.now,
                                **extra,
                            )
                        )
                        record(idx)
                        st["reprogs"][reprog] += 1
                        st["unreachable"][reprog] |= _reported_failed(r, idx)
                        reprograms += idx.size
                        yield env.timeout(r.latency_s)
                    pulse = counts > 0
                    if np.any(pulse):
                        idx = st["flat"][pulse]
                        r = ops.add(
                            twin.apply_pulses(
                                chip,
                                tile,
                                Array.BOTH,
                                idx,
                                SET,
                                counts[pulse],
                                at_s=env.now,
                                **extra,
                            )
                        )
                        record(idx)
                        st["pulses"][pulse] += counts[pulse]
                        yield env.timeout(r.latency_s)
                    steps = it + 1

                def split(parts: list[np.ndarray], devs: list[np.ndarray]) -> tuple[dict, dict]:
                    flat = np.concatenate(parts) if parts else np.zeros(0, np.int64)
                    dev = np.concatenate(devs) if devs else np.zeros(0, np.float32)
                    arr, idx = np.divmod(flat.astype(np.int64), n_arr)
                    return (
                        {a: idx[arr == a] for a in (POS, NEG)},
                        {a: dev[arr == a].astype(np.float32) for a in (POS, NEG)},
                    )

                conv_idx, conv_d = split(converged, conv_dev)
                fail_idx, fail_d = split(failed, fail_dev)
                outcome = JobOutcome(
                    job=job,
                    start_s=start,
                    end_s=env.now,
                    converged=conv_idx,
                    failed=fail_idx,
                    final_deviation={a: np.concatenate([conv_d[a], fail_d[a]]) for a in (POS, NEG)},
                    pulses=ops.pulses,
                    reprograms=reprograms,
                    iterations=steps,
                    energy_pj=ops.energy_pj,
                    controller_energy_pj=ctrl_pj,
                )
                self.jobs_running -= 1
                self._record(outcome, ops, s)
                return outcome

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
