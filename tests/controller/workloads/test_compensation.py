"""Drift compensation: global and per column (AdaBS: test_adabs.py)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from controller.workloads.chip_mvm import chip_mvm
from controller.workloads.compensation import DriftCompensation
from controller.workloads.mapping import map_network, program_mapped
from device_twin import Chip
from tests.controller.workloads.conftest import ideal_chip_config

DAY_S = 86400.0


def _programmed(desc, config, quantiser="none"):
    mapped = map_network(desc, quantiser, config)
    chip = Chip(config)
    program_mapped(mapped, chip, 0.0)
    return mapped, chip


def test_without_drift_the_factors_are_one(random_paper_cnn):
    """On an ideal chip the compensation reads do not change: every factor is 1."""
    mapped, chip = _programmed(random_paper_cnn, ideal_chip_config(3))
    comp = DriftCompensation(mapped, "per_column")
    comp.calibrate(chip_mvm(chip, 1.0))
    comp.measure(chip_mvm(chip, DAY_S))
    for f in comp.factors.values():
        assert np.allclose(f, 1.0, atol=1e-5)


@pytest.mark.parametrize("kind,read", [("global", "identity"), ("per_column", "identity"),
                                       ("global", "ones")])  # fmt: skip
def test_compensation_undoes_most_of_a_days_drift(random_paper_cnn, kind, read):
    """After a day of drift the compensated outputs are far closer to the fresh ones."""
    mapped, chip = _programmed(random_paper_cnn, ideal_chip_config(3, drift=1.0))
    x = torch.rand(4, 1, 28, 28)
    comp = DriftCompensation(mapped, kind, read)
    comp.calibrate(chip_mvm(chip, 1.0))
    fresh = mapped.forward(x, chip_mvm(chip, 1.0), comp)
    drifted = mapped.forward(x, chip_mvm(chip, DAY_S))
    comp.measure(chip_mvm(chip, DAY_S))
    compensated = mapped.forward(x, chip_mvm(chip, DAY_S), comp)
    # LogSoftmax hides a global scale: compare the logits' spread instead
    spread = lambda y: (y - y.mean(dim=1, keepdim=True)).abs().mean()  # noqa: E731
    assert spread(drifted) < 0.8 * spread(fresh)
    assert spread(compensated) == pytest.approx(float(spread(fresh)), rel=0.1)
    assert (compensated - fresh).abs().max() < 0.3 * (drifted - fresh).abs().max()


def test_compensation_reads_go_through_the_chip(random_paper_cnn):
    """Calibration reads are MVMs on the chip: they appear in its energy ledger."""
    mapped, chip = _programmed(random_paper_cnn, ideal_chip_config(3))
    before = chip.ledger.total_energy_pj
    DriftCompensation(mapped).calibrate(chip_mvm(chip, 1.0))
    assert chip.ledger.total_energy_pj > before


def test_measuring_before_calibrating_is_refused(random_paper_cnn):
    """measure() needs the reference read taken right after programming."""
    mapped, chip = _programmed(random_paper_cnn, ideal_chip_config(3))
    with pytest.raises(RuntimeError, match="calibrate"):
        DriftCompensation(mapped).measure(chip_mvm(chip, 1.0))
