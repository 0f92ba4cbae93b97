"""The loop a user would write instead of the controller: the baseline of the ResNet-32-scale
year (``handwritten_loop_year_resnet32_scale``).

In process, on aihwkit's ``PCMLikeNoiseModel`` conductance-level functions, with the chip's
device-level state held as torch tensors (float32; write times float64): at every hourly
wake-up read every device (``apply_drift_noise_to_conductance``: drift from its own write
time and fresh 1/f read noise; the devices last written at one instant, kept together as an
index tensor, share one call), re-program
every device further than ``threshold * g_max`` from its target
(``apply_programming_noise_to_conductance``, ``generate_drift_coefficients``), and read the
re-programmed devices once more (the verify read). Same chip (the mapped network's targets,
both arrays of every used device), same policy (``threshold`` 0.05 on raw reads), same seed
for the targets; no pulses, periphery, energy ledger, controller or gRPC. It quacks like
``bench_scenario._Run`` (``wake``, ``finish``), so that it runs side by side with the real
controller in ``run_slices``.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import torch


class HandwrittenLoop:
    """Hourly threshold corrections of a mapped network's devices (see the module docstring)."""

    def __init__(self, mapped: Any, cfg: Any, params: dict[str, Any], seed: int = 0) -> None:
        from aihwkit.inference.noise.pcm import PCMLikeNoiseModel

        from bench.bench_scenario import SETTLE_S, Slice

        t0 = time.perf_counter()
        torch.manual_seed(seed)
        self.noise = PCMLikeNoiseModel(g_max=cfg.g_max_us, t_read=250e-9, t_0=20.0)
        targets = []
        for tm in mapped.tiles:
            used = np.asarray(tm.used, bool)
            for g in (tm.g_target_pos_us, tm.g_target_neg_us):
                targets.append(np.asarray(g, np.float32)[used])
        self.g_target = torch.from_numpy(np.concatenate(targets))
        self.threshold_us = float(params["threshold"]) * cfg.g_max_us
        self.interval_s = float(params["interval_s"])
        self.verify_s = 1e-6  # the verify read, a microsecond after the re-program
        self.g_prog = self.noise.apply_programming_noise_to_conductance(self.g_target.clone())
        self.nu = self.noise.generate_drift_coefficients(self.g_target)
        # devices by the instant of their last write: one aihwkit drift call per instant
        self.groups: dict[float, torch.Tensor] = {0.0: torch.arange(self.g_target.numel())}
        self.slice = Slice(self.interval_s, setup_wall_s=time.perf_counter() - t0)
        self.settle_s = SETTLE_S
        self.corrected = 0
        self.failed = 0

    @property
    def devices(self) -> int:
        return int(self.g_target.numel())

    def read(self, at_s: float) -> torch.Tensor:
        """Conductance of every device at ``at_s`` (drift since its write, 1/f noise)."""
        out = torch.empty(self.devices)
        for t_w, idx in self.groups.items():
            out[idx] = self.noise.apply_drift_noise_to_conductance(
                self.g_prog[idx], self.nu[idx], float(at_s - t_w)
            )
        return out

    def wake(self) -> float:
        """One hourly check and its corrections; its wall time."""
        s = self.slice
        t0, c0 = time.perf_counter(), time.process_time()
        at_s = (s.wakes + 1) * self.interval_s
        g = self.read(at_s)
        sel = torch.nonzero((g - self.g_target).abs_() > self.threshold_us).flatten()
        target = self.g_target[sel]
        self.g_prog[sel] = self.noise.apply_programming_noise_to_conductance(target.clone())
        self.nu[sel] = self.noise.generate_drift_coefficients(target)
        rewritten = torch.zeros(self.devices, dtype=torch.bool)
        rewritten[sel] = True
        groups = {t_w: idx[~rewritten[idx]] for t_w, idx in self.groups.items()}
        self.groups = {t_w: idx for t_w, idx in groups.items() if idx.numel()} | {at_s: sel}
        g_verify = self.noise.apply_drift_noise_to_conductance(
            self.g_prog[sel], self.nu[sel], self.verify_s
        )
        self.corrected += int(sel.numel())
        self.failed += int(((g_verify - target).abs_() > self.threshold_us).sum())
        s.wake_wall_s.append(time.perf_counter() - t0)
        s.wake_cpu_s.append(time.process_time() - c0)
        return s.wake_wall_s[-1]

    def finish(self) -> Any:
        s = self.slice
        s.devices_corrected, s.failed_devices = self.corrected, self.failed
        return s
