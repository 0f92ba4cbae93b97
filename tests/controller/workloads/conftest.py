"""Shared helpers of the workload tests: ideal chips and small random networks."""

from __future__ import annotations

import pytest
import torch

from controller.workloads.network import NetworkDescription
from controller.workloads.zoo import digits_mlp, paper_cnn
from device_twin.config import (
    ChipConfig,
    DeviceModelConfig,
    IOConfig,
    PeripheryConfig,
    PulseModelConfig,
)


def ideal_chip_config(
    n_tiles: int, rows: int = 256, cols: int = 256, drift: float = 0.0
) -> ChipConfig:
    """No programming or read noise, every device reaches g_max (no spread of its saturation
    bound), perfect periphery; drift only if asked for."""
    return ChipConfig(
        n_tiles=n_tiles, tile_rows=rows, tile_cols=cols,
        device=DeviceModelConfig(prog_noise_scale=0, read_noise_scale=0, drift_scale=drift,
                                 pulse=PulseModelConfig.from_aihwkit(w_max_dtod=0.0)),
        periphery=PeripheryConfig(forward=IOConfig(is_perfect=True), probe=IOConfig(is_perfect=True)),
    )  # fmt: skip


@pytest.fixture
def random_paper_cnn() -> NetworkDescription:
    torch.manual_seed(0)
    return NetworkDescription.from_torch(paper_cnn(), (1, 28, 28), name="paper_cnn")


@pytest.fixture
def random_digits_mlp() -> NetworkDescription:
    torch.manual_seed(0)
    return NetworkDescription.from_torch(digits_mlp(), (1, 8, 8), name="digits_mlp")
