"""Adaptive batch-norm statistics (AdaBS, Joshi et al. 2020), and the compensations by name.

Drift lowers every device's conductance, so each analog layer's outputs shrink, and not by one
factor: devices at different levels drift at different rates. A network with batch norm after
its convolutions can undo much of it by re-estimating each BN layer's mean and variance from
the activations it sees now. Joshi et al. do this at inference time on a calibration set of
training images sent through the chip; :class:`AdaptiveBatchNorm` does the same on the twin: at
each ``measure`` (the compensation step of every evaluation, at the evaluation's instant), one
forward pass of the calibration images goes through the chip, and each BN layer takes the mean
and variance of its input over all of them, given the statistics already re-estimated for the
layers before it. Every MVM of that pass is an ordinary twin MVM (its energy and time are
booked like an inference's).

Compensations by name (``make_compensation``; a policy's ``compensation`` parameter):

- ``gdc``: global drift compensation, one factor per tile from an identity read
  (:class:`~controller.workloads.compensation.DriftCompensation`);
- ``per_column``: one factor per output column, from the same read;
- ``adabs``: AdaBS alone;
- ``gdc_adabs``: both: GDC's factors scale each tile, then AdaBS re-estimates the statistics.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from controller.workloads.compensation import DriftCompensation
from controller.workloads.layers import BatchNorm2d
from controller.workloads.mapping import MappedNetwork, MVMFn

#: Compensation names ``make_compensation`` builds (the firmware's list must match; tested).
COMPENSATIONS = ("gdc", "per_column", "adabs", "gdc_adabs")


class AdaptiveBatchNorm:
    """AdaBS: batch-norm statistics re-estimated through the chip at every ``measure``,
    optionally on top of global drift compensation (``gdc``)."""

    def __init__(
        self,
        mapped: MappedNetwork,
        calibration_x: torch.Tensor,
        gdc: DriftCompensation | None = None,
    ) -> None:
        if not any(isinstance(la, BatchNorm2d) for la in mapped.description.walk()):
            raise ValueError(
                f"AdaBS needs batch-norm layers; network {mapped.description.name!r} has none"
            )
        if calibration_x.ndim < 2 or calibration_x.shape[0] < 2:
            raise ValueError(
                f"AdaBS needs a batch of at least 2 calibration images, got shape "
                f"{tuple(calibration_x.shape)}"
            )
        self.mapped = mapped
        self.calibration_x = calibration_x
        self.gdc = gdc
        self.bn_stats: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}

    @property
    def factors(self) -> dict[int, np.ndarray]:
        """GDC's per-tile factors (empty without GDC)."""
        return self.gdc.factors if self.gdc is not None else {}

    def calibrate(self, mvm: MVMFn) -> None:
        """Right after programming: GDC's reference read (AdaBS itself needs none)."""
        if self.gdc is not None:
            self.gdc.calibrate(mvm)
        self.bn_stats = {}

    def recalibrate(self, mvm: MVMFn, columns: dict[int, np.ndarray]) -> None:
        """GDC's reference of the given columns re-taken now (nothing without GDC)."""
        if self.gdc is not None:
            self.gdc.recalibrate(mvm, columns)

    def measure(self, mvm: MVMFn) -> None:
        """Now: GDC's factors, then the statistics of every BN layer from one pass of the
        calibration images through the chip."""
        if self.gdc is not None:
            self.gdc.measure(mvm)
        self.bn_stats = {}
        with torch.no_grad():
            self.mapped.forward(self.calibration_x, mvm, self, adapt_bn=True)

    def apply(self, pos: int, y: np.ndarray) -> np.ndarray:
        """Scale tile ``pos``'s outputs by GDC's factor (unchanged without GDC)."""
        return self.gdc.apply(pos, y) if self.gdc is not None else y


def make_compensation(
    kind: str, mapped: MappedNetwork, calibration_x: torch.Tensor | None = None
) -> Any:
    """The compensation called ``kind`` (see the module docstring) for ``mapped``;
    ``calibration_x``: AdaBS's calibration images (N, C, H, W)."""
    if kind not in COMPENSATIONS:
        raise ValueError(f"unknown drift compensation {kind!r}; known: {', '.join(COMPENSATIONS)}")
    if kind == "per_column":
        return DriftCompensation(mapped, "per_column", "identity")
    gdc = DriftCompensation(mapped, "global", "identity") if "gdc" in kind else None
    if "adabs" not in kind:
        return gdc
    if calibration_x is None:
        raise ValueError(
            "AdaBS needs calibration images: pass calibration_x (a scenario takes "
            "workload.calibration_images training images)"
        )
    return AdaptiveBatchNorm(mapped, calibration_x, gdc)
