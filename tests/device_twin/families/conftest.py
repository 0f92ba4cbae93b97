"""Helpers: hand aihwkit's noise models and the twin's families the same normal draws."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
import torch

from device_twin.families.base import DeviceBatch, ReadDraws

N_DEVICES = 200_000
YEAR_S = 365.25 * 86400.0


@pytest.fixture
def aihwkit_draws(monkeypatch) -> Callable[..., None]:
    """``aihwkit_draws(module, *arrays)``: the next calls of ``randn_like`` in the aihwkit noise
    module return these arrays, in order (aihwkit draws its noise with ``randn_like``)."""

    def patch(module, *arrays: np.ndarray) -> None:
        queue = [torch.from_numpy(np.asarray(a, np.float32)) for a in arrays]

        def randn_like(t: torch.Tensor) -> torch.Tensor:
            return queue.pop(0).reshape(t.shape).to(t.dtype)

        monkeypatch.setattr(module, "randn_like", randn_like)

    return patch


def white(xi: np.ndarray, relax: np.ndarray | None = None) -> ReadDraws:
    """Draws whose 1/f process is sqrt(band)*xi (one read) and whose relaxation normal is relax."""
    x = torch.from_numpy(np.asarray(xi, np.float32))
    r = torch.from_numpy(np.asarray(relax if relax is not None else xi, np.float32))
    return ReadDraws(lambda band: band.sqrt() * x, lambda: r)


def batch(g_prog: np.ndarray, param: np.ndarray, age_s: float | np.ndarray) -> DeviceBatch:
    g = torch.from_numpy(np.asarray(g_prog, np.float32))
    return DeviceBatch(g, torch.from_numpy(np.asarray(param, np.float32)),
                       torch.from_numpy(np.broadcast_to(np.asarray(age_s, np.float32),
                                                        g.shape).copy()))  # fmt: skip
