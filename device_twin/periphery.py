"""The analog periphery of a tile (DAC, ADC, output noise, bound management), from aihwkit.

MVMs run through an aihwkit ``TorchInferenceTile`` (``TorchInferenceRPUConfig`` with
``mapping.weight_scaling_omega = 1.0``, its own noise model and drift compensation unused:
the twin owns the device physics). Probes are identity MVMs: the one-hot input of row ``r``
selects that row's weights exactly (a +-1 input passes the DAC unchanged), so the probe
computes that product directly and sends it through the same aihwkit output stage
(``AnalogMVM._finalize_output``: output noise, ADC quantisation, clipping).

``forward_io_matmul`` is aihwkit's ``AnalogMVM.matmul`` for the periphery the twin's
``IOConfig`` describes (one pass; DAC and ADC quantisation with round-to-nearest, output
noise, abs-max or no noise management, iterative or no bound management), the same
operations in the same order on the same random draws, done in place: a ResNet-32 evaluation
sends millions of unrolled input rows through it, and aihwkit's version copies each input
five times (``clone``, quantise) where this one copies it once. Its outputs equal aihwkit's
bit for bit (tests/device_twin/test_periphery.py); any setting beyond those
(``fast_path_supported``) goes through aihwkit's tile itself.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch

from device_twin.config import IOConfig, PeripheryConfig


def make_rpu_config(forward: IOConfig):
    """The aihwkit configuration of one twin tile."""
    from aihwkit.simulator.configs import TorchInferenceRPUConfig

    rpu = TorchInferenceRPUConfig()
    rpu.forward = forward.to_aihwkit()
    rpu.mapping.weight_scaling_omega = 1.0
    rpu.mapping.max_input_size = 0
    rpu.mapping.max_output_size = 0
    rpu.drift_compensation = None
    return rpu


#: IOParameters fields ``forward_io_matmul`` implements; every other one must keep aihwkit's
#: default for it to be used.
_FAST_FIELDS = {"inp_bound", "inp_res", "out_bound", "out_res", "out_noise", "out_scale",
                "bound_management", "noise_management", "nm_thres", "max_bm_factor",
                "max_bm_res"}  # fmt: skip


def fast_path_supported(io) -> bool:
    """Whether ``forward_io_matmul`` computes aihwkit's forward for these IOParameters."""
    from aihwkit.simulator.parameters.enums import (
        AnalogMVType,
        BoundManagementType,
        NoiseManagementType,
    )
    from aihwkit.simulator.parameters.io import IOParameters

    default = IOParameters()
    others_default = all(
        getattr(io, f.name) == getattr(default, f.name)
        for f in dataclasses.fields(io)
        if f.name not in _FAST_FIELDS
    )
    return (
        type(io) is IOParameters
        and others_default
        and not io.is_perfect
        and io.mv_type == AnalogMVType.ONE_PASS
        and io.noise_management in (NoiseManagementType.NONE, NoiseManagementType.ABS_MAX)
        and io.bound_management in (BoundManagementType.NONE, BoundManagementType.ITERATIVE)
    )


def _resolution(res: float, bound: float) -> float:
    """aihwkit's quantisation step: ``res`` as a step or a number of states, times 2 bound."""
    return (1 / res if res > 1.0 else res) * 2 * bound


@torch.no_grad()
def forward_io_matmul(weight: torch.Tensor, x: torch.Tensor, io) -> torch.Tensor:
    """aihwkit's ``AnalogMVM.matmul(weight, x, io)`` (eval mode) for the IOParameters
    ``fast_path_supported`` accepts: the same float operations, in the same order, drawing
    the same output noise from torch's global generator; intermediate results in place."""
    from aihwkit.simulator.parameters.enums import BoundManagementType, NoiseManagementType

    n_management = io.noise_management == NoiseManagementType.ABS_MAX
    b_management = io.bound_management == BoundManagementType.ITERATIVE
    nm = None
    if n_management:
        nm = x.abs().amax(dim=-1, keepdim=True)  # aihwkit: abs().max(); amax skips indices
        if io.nm_thres > 0.0:
            nm = torch.clamp(nm, max=io.nm_thres)
        if io.inp_noise <= 0.0 and bool((nm == 0.0).all()):
            return torch.zeros(x.shape[:-1] + (weight.shape[0],), dtype=x.dtype)
        nm[nm <= 0.0] = 1.0
    inp_res = _resolution(io.inp_res, io.inp_bound) if io.inp_res > 0 else 0.0
    out_res = _resolution(io.out_res, io.out_bound) if io.out_res > 0 else 0.0
    reduction = 0.5
    while True:
        reduction *= 2.0
        scale: float | torch.Tensor = 1.0
        if nm is not None:
            scale = scale / nm
        if b_management:
            scale /= reduction
        scaling = not (isinstance(scale, float) and scale == 1.0)
        q = x * scale if scaling else x.clone()
        if inp_res > 0:  # DAC: UniformQuantize
            q.div_(inp_res).round_().mul_(inp_res)
        inp_bound = io.inp_bound if io.inp_bound > 0 else float("inf")
        q.clamp_(-inp_bound, inp_bound)
        y = q @ weight.T
        if io.out_noise > 0.0:
            y += io.out_noise * torch.randn_like(y)
        if out_res > 0:  # ADC
            y.div_(out_res).round_().mul_(out_res)
        bound = io.out_bound if io.out_bound > 0 else float("inf")
        passed = bool(((y <= bound) & (y >= -bound)).all())
        y.clamp_(-bound, bound)
        if not b_management:
            break
        if (
            passed
            or reduction > io.max_bm_factor
            or (inp_res > 0.0 and reduction > io.max_bm_res / inp_res)
        ):
            break
    if scaling or io.out_scale != 1.0:
        y *= io.out_scale / scale
    return y


class TilePeriphery:
    """The periphery of one tile: an aihwkit inference tile for MVMs and the probe readout."""

    def __init__(self, cfg: PeripheryConfig, rows: int, cols: int) -> None:
        from aihwkit.simulator.tiles.inference_torch import TorchInferenceTile

        self.cfg = cfg
        self.rows, self.cols = rows, cols
        self._tile = TorchInferenceTile(cols, rows, rpu_config=make_rpu_config(cfg.forward))
        self._tile.eval()
        self._probe_io = cfg.probe.to_aihwkit()
        self._loaded_key: object = None
        t = self._tile
        self._fast = (
            fast_path_supported(t.rpu_config.forward)
            and t.input_range is None
            and getattr(t, "out_scaling_alpha", None) is None
            and not t.analog_bias
            and not t.digital_bias
            and t.tile.out_noise_values is None
        )

    def load_weights(self, w_eff: torch.Tensor, key: object) -> None:
        """Write effective weights ``(cols, rows)`` = ((G+ - G-)/g_max).T into the tile."""
        if key is not None and key == self._loaded_key:
            return
        self._tile.set_weights(w_eff)
        self._loaded_key = key

    @torch.no_grad()
    def mvm(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` (batch, rows) -> (batch, cols) through aihwkit's forward periphery."""
        if self._tile.get_scales() is not None and bool((self._tile.get_scales() == 0).all()):
            return torch.zeros(x.shape[0], self.cols, dtype=x.dtype)
        if not self._fast:
            return self._tile(x)
        # TorchInferenceTile.forward: the analog MVM on the stored (scaled) weights, then the
        # digital mapping scales (post_forward)
        y = forward_io_matmul(self._tile.tile.weight, x, self._tile.rpu_config.forward)
        scales = self._tile.get_mapping_scales()
        return y if scales is None else y * scales.view(1, -1)

    @torch.no_grad()
    def probe_readout(self, y: torch.Tensor) -> tuple[np.ndarray, float]:
        """Identity-read outputs (units of g_max) -> (ADC codes int16, step in g_max units)."""
        from aihwkit.simulator.tiles.analog_mvm import AnalogMVM

        io = self.cfg.probe
        if io.is_perfect:
            out = y
        else:
            _, out = AnalogMVM._finalize_output(out_values=y.clone(), io_pars=self._probe_io)
        step = io.out_step() if io.out_res > 0 else 1.0 / 16384
        limit = np.iinfo(np.int16).max
        codes = torch.clamp(torch.round(out / step), -limit, limit).to(torch.int16)
        return codes.numpy(), step
