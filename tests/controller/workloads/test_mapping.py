"""Mapping networks onto tiles: with ideal devices the chip computes what torch computes."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from controller.workloads.chip_mvm import chip_mvm
from controller.workloads.mapping import map_network, program_mapped, tiles_needed
from controller.workloads.network import NetworkDescription
from device_twin import Chip, ChipConfig
from tests.controller.workloads.conftest import ideal_chip_config


def _on_chip(desc, quantiser, config, x, **kw):
    mapped = map_network(desc, quantiser, config, **kw)
    chip = Chip(config)
    program_mapped(mapped, chip, at_s=0.0)
    return mapped, mapped.forward(x, chip_mvm(chip, at_s=1.0))


def _close(a: torch.Tensor, b: torch.Tensor) -> None:
    a, b = a.detach(), b.detach()
    assert a.shape == b.shape
    assert torch.allclose(a, b, rtol=1e-4, atol=1e-4 * float(b.abs().max())), (a - b).abs().max()


def test_conv_network_on_ideal_chip_matches_torch(random_paper_cnn):
    """paper_cnn (convolutions im2col-unrolled, one tile per layer) computes torch's outputs."""
    x = torch.rand(8, 1, 28, 28)
    mapped, y = _on_chip(random_paper_cnn, "none", ideal_chip_config(3), x)
    assert [tm.layer for tm in mapped.tiles] == ["conv1", "conv2", "fc"]
    assert [tm.block(tm.used).shape for tm in mapped.tiles] == [(9, 8), (72, 12), (192, 10)]
    _close(y, random_paper_cnn.to_torch()(x))


def test_linear_split_across_tiles_matches_torch(random_digits_mlp):
    """digits_mlp on 16x16 tiles (row blocks summed, column blocks joined, digital bias)."""
    config = ideal_chip_config(10, rows=16, cols=16)
    assert tiles_needed(random_digits_mlp, 16, 16) == 4 * 2 + 2 * 1
    x = torch.rand(7, 1, 8, 8)
    mapped, y = _on_chip(random_digits_mlp, "none", config, x)
    assert sorted(tm.tile for tm in mapped.tiles) == list(range(10))
    assert {tm.row_range for tm in mapped.layer_tiles("fc1")} == {
        (0, 16),
        (16, 32),
        (32, 48),
        (48, 64),
    }
    assert {tm.col_range for tm in mapped.layer_tiles("fc1")} == {(0, 16), (16, 32)}
    _close(y, random_digits_mlp.to_torch()(x))


@pytest.mark.parametrize("quantiser", ["none", "uniform", "multiplicative"])
def test_conv_split_across_tiles_matches_the_quantised_network(random_paper_cnn, quantiser):
    """paper_cnn on 32x8 tiles (conv2 and fc split both ways) equals torch with the weights
    the quantiser chose."""
    config = ideal_chip_config(19, rows=32, cols=8)
    x = torch.rand(4, 1, 28, 28)
    mapped, y = _on_chip(random_paper_cnn, quantiser, config, x)
    assert len(mapped.layer_tiles("conv2")) == 3 * 2 and len(mapped.layer_tiles("fc")) == 6 * 2
    _close(y, mapped.quantised.to_torch()(x))
    if quantiser == "none":
        _close(y, random_paper_cnn.to_torch()(x))
    else:  # the quantised network really differs from the float one
        assert not torch.allclose(mapped.quantised.to_torch()(x), random_paper_cnn.to_torch()(x))


def test_multiplicative_tiles_carry_the_level_grid(random_paper_cnn):
    """Every used device's target is its stored level times its array's conductance unit."""
    mapped = map_network(random_paper_cnn, "multiplicative", ideal_chip_config(3))
    for tm in mapped.tiles:
        assert tm.level_pos.shape == tm.used.shape and tm.level_pos.dtype == np.uint8
        assert np.allclose(tm.g_target_pos_us, tm.level_pos * tm.q_pos_us, atol=1e-4)
        assert np.allclose(tm.g_target_neg_us, tm.level_neg * tm.q_neg_us, atol=1e-4)
        assert not np.any(tm.g_target_pos_us[~tm.used]) and not np.any(tm.level_neg[~tm.used])
        assert max(tm.q_pos_us, tm.q_neg_us) * 8 == pytest.approx(25.0)


def test_small_mvm_chunks_give_the_same_outputs(random_paper_cnn):
    """Splitting MVM calls to stay under a byte budget changes nothing but the call count."""
    calls = []
    config = ideal_chip_config(3)
    x = torch.rand(3, 1, 28, 28)
    mapped = map_network(random_paper_cnn, "none", config, max_mvm_bytes=4096)
    chip = Chip(config)
    program_mapped(mapped, chip, 0.0)
    inner = chip_mvm(chip, 1.0)

    def mvm(tile, xs, r, c, n):
        calls.append(xs.nbytes)
        return inner(tile, xs, r, c, n)

    _close(mapped.forward(x, mvm), random_paper_cnn.to_torch()(x))
    assert max(calls) <= 4096 and len(calls) > 3


def test_too_few_tiles_is_refused(random_paper_cnn):
    """Mapping onto a chip with too few tiles fails with the number needed."""
    with pytest.raises(ValueError, match="needs 3 tiles"):
        map_network(random_paper_cnn, "none", ideal_chip_config(2))


def test_convolutions_unrolled_on_the_chip_give_the_same_outputs():
    """A noisy chip that unrolls the convolutions itself (its layers split over row blocks that
    cut channels, its rows sent in several MVMs) gives exactly the outputs and energy of the
    rows unrolled here and sent as plain MVMs."""
    torch.manual_seed(3)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(1, 8, 3, padding=1, bias=False), torch.nn.BatchNorm2d(8), torch.nn.ReLU(),
        torch.nn.Conv2d(8, 12, 3, stride=2, bias=False), torch.nn.ReLU(), torch.nn.Flatten(),
        torch.nn.Linear(12 * 6 * 6, 10),
    ).eval()  # fmt: skip
    desc = NetworkDescription.from_torch(model, (1, 14, 14), name="small_conv")
    config = ChipConfig(n_tiles=tiles_needed(desc, 32, 16), tile_rows=32, tile_cols=16, seed=4)
    mapped = map_network(desc, "none", config, max_mvm_bytes=2048)
    assert len(mapped.layer_tiles("3")) == 3  # 72 rows: 32 + 32 + 8, cutting channels 3 and 7
    chips = [Chip(config), Chip(config)]
    for chip in chips:
        program_mapped(mapped, chip, 0.0)
    x = torch.rand(5, 1, 14, 14)
    on_chip = mapped.forward(x, chip_mvm(chips[0], 10.0))
    here = mapped.forward(x, chip_mvm(chips[1], 10.0, unroll_on_chip=False))
    assert torch.equal(on_chip, here)
    assert chips[0].ledger.total_energy_pj == pytest.approx(chips[1].ledger.total_energy_pj)


def test_a_family_with_a_floor_holds_its_levels_above_it(random_paper_cnn):
    """On reram_cmo (devices cannot go below 9 uS) level m sits at 9 uS + m*q over
    [9 uS, g_max]; the floor cancels in G+ - G- and the chip computes the quantised network."""
    from device_twin.families import PulseModelConfig, ReRamCMODeviceConfig

    base = ideal_chip_config(3)
    device = ReRamCMODeviceConfig(
        prog_noise_scale=0, read_noise_scale=0, drift_scale=0,
        pulse=PulseModelConfig.from_aihwkit("ReRamESPresetDevice", reset=-1.0, w_max_dtod=0.0),
    )  # fmt: skip
    config = base.model_copy(update={"device": device, "g_max_us": 88.2})
    mapped = map_network(random_paper_cnn, "multiplicative", config)
    for tm in mapped.tiles:
        assert tm.g_floor_us == 9.0
        u = tm.used
        assert np.allclose(tm.g_target_pos_us[u], 9.0 + tm.level_pos[u] * tm.q_pos_us, atol=1e-3)
        assert max(tm.q_pos_us, tm.q_neg_us) * 8 == pytest.approx(88.2 - 9.0)
    x = torch.rand(4, 1, 28, 28)
    chip = Chip(config)
    program_mapped(mapped, chip, at_s=0.0)
    _close(mapped.forward(x, chip_mvm(chip, at_s=1.0)), mapped.quantised.to_torch()(x))
