"""Joshi's ResNet-32 as a workload: its description, its mapping onto a chip, its training."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from controller.workloads.chip_mvm import chip_mvm
from controller.workloads.layers import Conv2d, Linear, Residual
from controller.workloads.mapping import map_network, program_mapped, tiles_needed
from controller.workloads.network import NetworkDescription
from controller.workloads.resnet import RESNET32_WEIGHTS, resnet32
from controller.workloads.training import train_digital, train_hardware_aware
from controller.workloads.training_config import HardwareAwareConfig, TrainingConfig
from controller.workloads.zoo import get_workload
from device_twin import Chip, ChipConfig
from tests.controller.workloads.conftest import ideal_chip_config


@pytest.fixture(scope="module")
def random_resnet32() -> tuple[torch.nn.Module, NetworkDescription]:
    torch.manual_seed(0)
    model = resnet32().eval()
    with torch.no_grad():  # non-trivial batch-norm statistics, as after training
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 2.0)
    return model, NetworkDescription.from_torch(model, (1, 28, 28), name="resnet32")


def test_resnet32_is_joshis_network(random_resnet32):
    """31 convolutions and one linear layer in 3 stages of 5 residual blocks (16, 32, 64
    channels, projection shortcuts where the shape changes): 464,144 crossbar weights."""
    _, desc = random_resnet32
    analog = [la for _, la in desc.analog_layers()]
    convs = [la for la in analog if isinstance(la, Conv2d) and la.kernel_size == (3, 3)]
    assert len(convs) == 31 and isinstance(analog[-1], Linear)
    assert [la.out_channels for la in convs] == [16] * 11 + [32] * 10 + [64] * 10
    blocks = [la for la in desc.layers if isinstance(la, Residual)]
    assert len(blocks) == 15 and sum(bool(b.shortcut) for b in blocks) == 2
    assert desc.n_analog_weights() == RESNET32_WEIGHTS == 464_144
    assert desc.output_shape == (10,)
    # every 3x3 kernel of a 16-64-channel layer spans 144-576 crossbar rows: 62 tiles
    assert tiles_needed(desc, 256, 256) == 62
    assert get_workload("resnet32").dataset == "fashion_mnist"


def test_resnet32_description_round_trips(random_resnet32):
    """The description survives proto and JSON, and its torch module computes what the
    original network computes."""
    model, desc = random_resnet32
    assert NetworkDescription.from_proto(desc.to_proto()) == desc
    assert NetworkDescription.model_validate_json(desc.model_dump_json()) == desc
    x = torch.rand(3, 1, 28, 28)
    with torch.no_grad():
        assert torch.allclose(desc.to_torch()(x), model(x), atol=1e-5)


def test_resnet32_runs_on_a_chip(random_resnet32):
    """Every convolution of every block, shortcuts included, runs as MVMs on the chip's tiles:
    on an ideal chip the outputs are the network's; on the PCM chip they stay close."""
    model, desc = random_resnet32
    x = torch.rand(2, 1, 28, 28)
    with torch.no_grad():
        ref = model(x)
    config = ideal_chip_config(62)
    mapped = map_network(desc, "none", config)
    chip = Chip(config)
    program_mapped(mapped, chip, 0.0)
    out = mapped.forward(x, chip_mvm(chip, 1.0))
    assert torch.allclose(out, ref, rtol=1e-3, atol=1e-3 * float(ref.abs().max()))
    used = {tm.tile for tm in mapped.tiles}
    assert used == set(range(62)) and chip.ledger.by_kind["mvm"].calls >= 62
    noisy = ChipConfig(n_tiles=62, seed=1)
    chip = Chip(noisy)
    program_mapped(map_network(desc, "none", noisy), chip, 0.0)
    out = mapped.forward(x, chip_mvm(chip, 1.0))
    err = float((out - ref).abs().mean() / ref.abs().mean())
    assert 0.0 < err < 0.5


TINY = TrainingConfig(epochs=1, batch_size=16, lr=0.05, optimizer="sgd", train_images=48,
                      eval_images=100, clip_weights=None)  # fmt: skip


def _weights(desc: NetworkDescription) -> np.ndarray:
    return np.concatenate([la.weight.to_numpy().ravel() for _, la in desc.analog_layers()])


def test_resnet32_training_is_seeded():
    """Training on a tiny subset: the same seed gives the same weights, another seed others."""
    a = train_digital("resnet32", TINY, cache=False)
    b = train_digital("resnet32", TINY, cache=False)
    c = train_digital("resnet32", TINY.model_copy(update={"seed": 1}), cache=False)
    assert np.array_equal(_weights(a.description), _weights(b.description))
    assert not np.array_equal(_weights(a.description), _weights(c.description))
    assert a.description.n_analog_weights() == RESNET32_WEIGHTS
    assert 0.0 <= a.test_accuracy <= 1.0 and a.train_seconds > 0


def test_resnet32_hardware_aware_training_runs_through_aihwkit_tiles():
    """Hardware-aware fine-tuning converts every convolution inside the residual blocks to an
    aihwkit tile, clips each layer at 2.5 standard deviations, and gives back a valid
    description with changed weights."""
    hwa = HardwareAwareConfig(epochs=1, batch_size=16, lr=0.01, optimizer="sgd",
                              clip_weights=None, clip_sigma=2.5, train_images=16,
                              eval_images=100)  # fmt: skip
    start = train_digital("resnet32", TINY, cache=False)
    out = train_hardware_aware("resnet32", hwa, TINY, cache=False)
    before, after = _weights(start.description), _weights(out.description)
    assert out.kind == "hardware_aware" and before.shape == after.shape
    assert not np.array_equal(before, after)
    for _, la in out.description.analog_layers():
        w = la.weight.to_numpy()
        assert np.abs(w).max() <= 2.5 * w.astype(np.float64).std(ddof=1) * 1.05
