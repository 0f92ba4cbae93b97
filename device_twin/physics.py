"""PCM device statistics: programming noise, drift, 1/f read noise (aihwkit ``PCMLikeNoiseModel``).

Programming noise and drift coefficients are drawn by aihwkit's own conductance-level
functions (``apply_programming_noise_to_conductance``, ``generate_drift_coefficients``).
Drift and read noise are evaluated here, vectorised, with the law of aihwkit's
``apply_drift_noise_to_conductance`` but with a per-device age (aihwkit takes one scalar time
for a whole tile; a chip under correction holds devices written at many different times).
The tests check both against aihwkit's functions.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import torch

from device_twin.config import DeviceModelConfig, ProgramVerifyConfig

# aihwkit's noise models draw from torch's process-global generator. Seeding it for one call
# must not interleave with another thread doing the same, or runs stop being reproducible.
_GLOBAL_TORCH_RNG_LOCK = threading.Lock()

# Relative conductance below which aihwkit caps the 1/f coefficient Q_s at 0.2.
_QS_KNEE = (0.0088 / 0.2) ** (1 / 0.65)


@contextmanager
def seeded_global_torch(seed: int) -> Iterator[None]:
    """Run a block on torch's global CPU generator seeded with ``seed``, then restore it."""
    # torch.manual_seed also seeds every accelerator backend and costs ~150 us; the CPU
    # generator alone is what aihwkit's randn_like draws from here.
    gen = torch.default_generator
    with _GLOBAL_TORCH_RNG_LOCK:
        saved = gen.get_state()
        gen.manual_seed(seed)
        try:
            yield
        finally:
            gen.set_state(saved)


def torch_generator(seed: int) -> torch.Generator:
    """A private torch CPU generator (no global state)."""
    gen = torch.Generator()
    gen.manual_seed(seed)
    return gen


class PCMPhysics:
    """The device statistics of one chip, at the conductance level (uS)."""

    def __init__(
        self,
        device: DeviceModelConfig,
        g_max_us: float,
        program_verify: ProgramVerifyConfig | None = None,
    ) -> None:
        from aihwkit.inference.noise.pcm import PCMLikeNoiseModel

        self.cfg = device
        self.g_max_us = float(g_max_us)
        self.program_verify = program_verify or ProgramVerifyConfig()
        self.noise_model = PCMLikeNoiseModel(
            prog_coeff=list(device.prog_coeff),
            g_max=self.g_max_us,
            t_read=device.t_read_s,
            t_0=device.t0_s,
            prog_noise_scale=device.prog_noise_scale,
            read_noise_scale=device.read_noise_scale,
            drift_scale=device.drift_scale,
        )
        # aihwkit only stores prog_coeff_g_max_reference when it is *not* given together with
        # explicit coefficients (DESIGN.md §4 pitfall): set it ourselves.
        self.noise_model.prog_coeff_g_max_reference = device.prog_coeff_g_max_reference_us

    # --- writes -------------------------------------------------------------------------
    def program_outcome(self, g_target_us: np.ndarray, seed: int) -> np.ndarray:
        """Conductance right after program-and-verify: aihwkit's programming noise."""
        g = torch.from_numpy(np.ascontiguousarray(g_target_us, dtype=np.float32))
        with seeded_global_torch(seed):
            out = self.noise_model.apply_programming_noise_to_conductance(g)
        return out.numpy().astype(np.float32, copy=False)

    def program_state(self, g_target_us: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
        """(g_prog, nu) of devices programmed to ``g_target_us``: aihwkit's programming noise,
        then aihwkit's drift coefficients for the targets, from one seeded stream."""
        g = torch.from_numpy(np.ascontiguousarray(g_target_us, dtype=np.float32))
        with seeded_global_torch(seed):
            g_prog = self.noise_model.apply_programming_noise_to_conductance(g)
            nu = self.noise_model.generate_drift_coefficients(g)
        return g_prog.numpy(), nu.numpy()

    def drift_coefficients(self, g_us: np.ndarray, seed: int) -> np.ndarray:
        """Drift exponents nu for devices written to ``g_us``: aihwkit's distribution."""
        g = torch.from_numpy(np.ascontiguousarray(g_us, dtype=np.float32))
        with seeded_global_torch(seed):
            nu = self.noise_model.generate_drift_coefficients(g)
        return nu.numpy().astype(np.float32, copy=False)

    def programming_sigma_us(self, g_target_us: np.ndarray) -> np.ndarray:
        """sigma_P(g_target) of the programming noise, in uS (before ``prog_noise_scale``)."""
        c0, c1, c2 = self.cfg.prog_coeff
        gh = np.asarray(g_target_us, dtype=np.float64) / self.g_max_us
        sig = c0 + c1 * gh + c2 * gh**2
        return sig * self.g_max_us / self.cfg.prog_coeff_g_max_reference_us

    def verify_iterations(self, g_target_us: np.ndarray) -> np.ndarray:
        """Modelled program-and-verify iterations per device (0 for a RESET-only target).

        The error shrinks by ``convergence`` per iteration from the full distance g_target
        until it is below the noise floor sigma_P(g_target); at most ``max_iterations``.
        """
        g = np.asarray(g_target_us, dtype=np.float64)
        floor = np.maximum(self.programming_sigma_us(g), 1e-6)
        ratio = np.maximum(g / floor, 1.0)
        its = 1 + np.ceil(np.log(ratio) / -math.log(self.program_verify.convergence))
        its = np.clip(its, 1, self.program_verify.max_iterations)
        return np.where(g > 0, its, 0).astype(np.int32)

    # --- reads ----------------------------------------------------------------------------
    def drift_factor(self, nu: torch.Tensor, age_s: torch.Tensor) -> torch.Tensor:
        """((age + t0)/t0)^(-nu): remaining fraction of the programmed conductance."""
        t0 = self.cfg.t0_s
        return torch.exp(-nu * torch.log1p(age_s / t0))

    def drifted(self, g_prog: torch.Tensor, nu: torch.Tensor, age_s: torch.Tensor) -> torch.Tensor:
        """Noise-free conductance at the given age since the last write."""
        return g_prog * self.drift_factor(nu, age_s)

    def read(
        self,
        g_prog: torch.Tensor,
        nu: torch.Tensor,
        age_s: torch.Tensor,
        generator: torch.Generator | None,
    ) -> torch.Tensor:
        """Conductance at the given age with a fresh draw of 1/f read noise (aihwkit's law).

        ``sigma = g(t) * Q_s * sqrt(ln((age + t0 + t_read)/(2 t_read)))`` with
        ``Q_s = min(0.0088/max((g_prog/g_max)^0.65, 1e-3), 0.2)``, scaled by
        ``read_noise_scale``; the result is clipped at 0 uS. ``age_s`` is consumed (reused as
        scratch space) to keep this hot path to a few passes over memory.
        """
        t0, t_read = self.cfg.t0_s, self.cfg.t_read_s
        # L = ln(1 + age/t0) serves both the drift law and the 1/f term:
        #   ln((age + t0 + t_read)/(2 t_read))
        #     = ln((t0 + t_read)/(2 t_read)) + ln(1 + age/(t0 + t_read)),
        # and replacing t0 + t_read by t0 in the last term changes it by < t_read/t0 = 1.3e-8.
        log_age = torch.log1p_(age_s.div_(t0))
        g = torch.mul(nu, log_age).neg_().exp_().mul_(g_prog)
        scale = self.cfg.read_noise_scale
        if scale > 0 and generator is not None:
            # min(0.0088/max(gh^0.65, 1e-3), 0.2) == 0.0088*max(gh, gh_c)^-0.65 for gh >= 0, with
            # gh_c where the 0.2 cap starts (the 1e-3 floor lies below it): one clamp, log, exp.
            q_s = torch.div(g_prog, self.g_max_us).clamp_(min=_QS_KNEE).log_().mul_(-0.65).exp_()
            sig = log_age.add_(math.log((t0 + t_read) / (2 * t_read))).sqrt_().mul_(q_s)
            noise = torch.randn(g.shape, generator=generator, dtype=g.dtype)
            # g >= 0 here, so g + |g|*s*sig*xi == g*(1 + s*0.0088*sig*xi)
            g.mul_(sig.mul_(noise).mul_(0.0088 * scale).add_(1.0))
        return g.clamp_(min=0.0)
