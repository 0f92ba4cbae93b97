"""Adaptive batch-norm statistics (AdaBS) and the compensations by name."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn import functional as nnf

from controller.firmware.policies.base import COMPENSATIONS as FIRMWARE_COMPENSATIONS
from controller.workloads.adabs import COMPENSATIONS, AdaptiveBatchNorm, make_compensation
from controller.workloads.chip_mvm import chip_mvm
from controller.workloads.compensation import DriftCompensation
from controller.workloads.datasets import load_dataset
from controller.workloads.mapping import evaluate, map_network, program_mapped
from controller.workloads.network import NetworkDescription
from device_twin import Chip, ChipConfig
from tests.controller.workloads.conftest import ideal_chip_config

DAY_S = 86400.0


def _bn_net() -> NetworkDescription:
    torch.manual_seed(1)
    m = nn.Sequential(nn.Conv2d(1, 4, 3, bias=False), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(),
                      nn.Linear(144, 10), nn.LogSoftmax(dim=1))  # fmt: skip
    return NetworkDescription.from_torch(m.eval(), (1, 8, 8))


def _programmed(desc: NetworkDescription, config: ChipConfig):
    mapped = map_network(desc, "none", config)
    chip = Chip(config)
    program_mapped(mapped, chip, 0.0)
    return mapped, chip


@pytest.fixture(scope="module")
def trained_bn_digits() -> NetworkDescription:
    """A small conv + batch-norm network trained on scikit-learn's digits (about 3 s)."""
    data = load_dataset("digits")
    gen = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU(),
                        nn.Conv2d(8, 16, 3, bias=False), nn.BatchNorm2d(16), nn.ReLU(),
                        nn.Flatten(), nn.Linear(16 * 36, 10))  # fmt: skip
    opt = torch.optim.Adam(net.parameters(), 0.01)
    for _ in range(8):
        perm = torch.randperm(len(data.train), generator=gen)
        for i in range(0, len(perm), 64):
            idx = perm[i : i + 64]
            loss = nnf.cross_entropy(net(data.train.x[idx]), data.train.y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    return NetworkDescription.from_torch(net.eval(), (1, 8, 8), name="bn_digits")


def test_adabs_measures_the_current_activations():
    """AdaBS sets each BN layer's statistics to those of its current input on the given images."""
    desc = _bn_net()
    x = torch.rand(64, 1, 8, 8)
    mapped, chip = _programmed(desc, ideal_chip_config(2, drift=1.0))
    comp = AdaptiveBatchNorm(mapped, x)
    comp.calibrate(chip_mvm(chip, 1.0))
    comp.measure(chip_mvm(chip, 1.0))
    with torch.no_grad():
        conv_out = desc.to_torch()[0](x)
    mean, var = comp.bn_stats["1"]
    # (1 s of drift: the chip reads 0.2 % below the programmed weights)
    assert torch.allclose(mean, conv_out.mean(dim=(0, 2, 3)), rtol=0.01, atol=1e-4)
    assert torch.allclose(var, conv_out.var(dim=(0, 2, 3), unbiased=False), rtol=0.02, atol=1e-5)
    # a year later the same images give smaller activations: the statistics follow them
    comp.measure(chip_mvm(chip, 3.15e7))
    year_mean, _ = comp.bn_stats["1"]
    assert float(year_mean.abs().sum()) < 0.9 * float(mean.abs().sum())


def test_adabs_recovers_the_accuracy_drift_takes(trained_bn_digits):
    """On a PCM chip (programming and read noise, drift, periphery) a day of drift leaves the
    batch-norm layers' stored statistics wrong and accuracy collapses; AdaBS, re-estimating
    them through the chip on 200 training images, brings it back to the fresh chip's."""
    desc = trained_bn_digits
    data = load_dataset("digits")
    mapped, chip = _programmed(desc, ChipConfig(n_tiles=5, seed=3))
    adabs = make_compensation("adabs", mapped, data.train.x[:200])
    adabs.calibrate(chip_mvm(chip, 1.0))
    fresh = evaluate(mapped, chip_mvm(chip, 1.0), data.test)
    none = evaluate(mapped, chip_mvm(chip, DAY_S), data.test)
    recovered = evaluate(mapped, chip_mvm(chip, DAY_S + 1.0), data.test, adabs)
    assert fresh > 0.95
    assert none < fresh - 0.25  # measured: 0.99 -> 0.49
    assert recovered > fresh - 0.03  # measured: 0.99
    assert adabs.bn_stats  # the statistics in use are the re-estimated ones


def test_adabs_calibration_pass_goes_through_the_chip(trained_bn_digits):
    """Every MVM of AdaBS's calibration pass is a twin MVM: the chip's MVM energy grows by
    about what a forward pass of the calibration images costs."""
    mapped, chip = _programmed(trained_bn_digits, ideal_chip_config(5))
    x = load_dataset("digits").train.x[:100]
    adabs = make_compensation("adabs", mapped, x)
    adabs.calibrate(chip_mvm(chip, 1.0))
    mapped.forward(x[:1], chip_mvm(chip, 1.5))
    mvm = chip.ledger.by_kind["mvm"]
    calls0, energy0 = mvm.calls, mvm.energy_pj
    adabs.measure(chip_mvm(chip, 2.0))
    calls1, energy1 = mvm.calls, mvm.energy_pj
    mapped.forward(x, chip_mvm(chip, 3.0))
    assert calls1 - calls0 == mvm.calls - calls1 > 0
    # (the activations, and so the energy, differ a little: other BN statistics)
    assert energy1 - energy0 == pytest.approx(mvm.energy_pj - energy1, rel=0.01)


def test_every_firmware_compensation_can_be_built(trained_bn_digits):
    """The firmware accepts exactly the compensations the workloads build; gdc_adabs is GDC's
    factors with AdaBS on top."""
    assert FIRMWARE_COMPENSATIONS == COMPENSATIONS
    mapped, _ = _programmed(trained_bn_digits, ideal_chip_config(5))
    x = torch.rand(8, 1, 8, 8)
    assert isinstance(make_compensation("gdc", mapped), DriftCompensation)
    assert make_compensation("adabs", mapped, x).gdc is None
    assert isinstance(make_compensation("gdc_adabs", mapped, x).gdc, DriftCompensation)


def test_adabs_refuses_what_it_cannot_do(random_digits_mlp):
    """AdaBS needs calibration images and a network with batch norm; unknown names are named."""
    mapped = map_network(_bn_net(), "none", ideal_chip_config(2))
    with pytest.raises(ValueError, match="calibration images"):
        make_compensation("adabs", mapped)
    with pytest.raises(ValueError, match="unknown drift compensation 'bn'"):
        make_compensation("bn", mapped)
    no_bn = map_network(random_digits_mlp, "none", ideal_chip_config(2))
    with pytest.raises(ValueError, match="needs batch-norm layers"):
        make_compensation("adabs", no_bn, torch.rand(4, 1, 8, 8))
