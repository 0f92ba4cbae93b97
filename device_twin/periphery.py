"""The analog periphery of a tile (DAC, ADC, output noise, bound management), from aihwkit.

MVMs run through an aihwkit ``TorchInferenceTile`` (``TorchInferenceRPUConfig`` with
``mapping.weight_scaling_omega = 1.0``, its own noise model and drift compensation unused:
the twin owns the device physics). Probes are identity MVMs: the one-hot input of row ``r``
selects that row's weights exactly (a +-1 input passes the DAC unchanged), so the probe
computes that product directly and sends it through the same aihwkit output stage
(``AnalogMVM._finalize_output``: output noise, ADC quantisation, clipping).
"""

from __future__ import annotations

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
        return self._tile(x)

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
