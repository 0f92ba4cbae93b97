"""Networks on several pairs per weight: dual_pair, wpo and multiplicative + lsp_trim mappings,
programmed on the twin and run through its MVMs."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from controller.workloads import pair_quantisers
from controller.workloads.chip_mvm import chip_mvm
from controller.workloads.mapping import map_network, program_mapped, tiles_needed
from controller.workloads.quantisers import (
    DualPairQuantiser,
    MultiplicativeQuantiser,
    WPOQuantiser,
)
from controller.workloads.wpo_config import WPOConfig
from device_twin import Chip
from tests.controller.workloads.conftest import ideal_chip_config


def _pair_chip(desc, pairs: int = 2, f: float = 2.0):
    base = ideal_chip_config(tiles_needed(desc, 64, 64), 64, 64)
    return base.model_copy(update={"pairs_per_weight": pairs, "significance_factor": f})


def _outputs(mapped, chip, x) -> tuple[torch.Tensor, torch.Tensor]:
    program_mapped(mapped, chip, 0.0)
    on_chip = mapped.forward(x, chip_mvm(chip, 1.0))
    with torch.no_grad():
        digital = mapped.quantised.to_torch()(x)
    return on_chip, digital


def test_dual_pair_network_runs_on_an_ideal_two_pair_chip_as_its_weights(random_digits_mlp):
    """Naive dual-pair targets on both pairs of an ideal chip give the network's own outputs;
    small weights sit on the LSP alone."""
    cfg = _pair_chip(random_digits_mlp, 2, 3.0)
    mapped = map_network(random_digits_mlp, DualPairQuantiser(), cfg)
    assert mapped.pairs_per_weight == 2 and all(len(tm.pairs()) == 2 for tm in mapped.tiles)
    x = torch.rand(16, 1, 8, 8)
    on_chip, digital = _outputs(mapped, Chip(cfg), x)
    np.testing.assert_allclose(on_chip, digital, atol=2e-3)
    with torch.no_grad():
        np.testing.assert_allclose(digital, random_digits_mlp.to_torch()(x), atol=1e-5)
    for tm in mapped.tiles:
        lsp, msp = tm.pairs()
        small = tm.used & (lsp.g_pos_us < 25) & (lsp.g_neg_us < 25)
        assert not np.any(msp.g_pos_us[small]) and not np.any(msp.g_neg_us[small])


def test_multiplicative_levels_on_the_msp_and_the_residual_on_the_lsp(random_digits_mlp):
    """With lsp_trim the MSP holds the paper's levels (multiples of q), the LSP the residual
    (at most F * q / 2 for weights within the grid's range), and the weights it stands for are far closer to the
    trained ones than the levels alone; on an ideal chip the network runs as those weights."""
    cfg = _pair_chip(random_digits_mlp, 2, 4.0)
    plain = map_network(random_digits_mlp, MultiplicativeQuantiser(), cfg)
    trim = map_network(random_digits_mlp, MultiplicativeQuantiser(lsp_trim=True), cfg)
    for name, al in trim.layers.items():
        lq, lq0 = al.quantisation, plain.layers[name].quantisation
        assert np.abs(lq.w - lq.w_q).max() < 0.2 * np.abs(lq0.w - lq0.w_q).max()
        msp = lq.upper_pairs[0]
        np.testing.assert_allclose(msp.g_pos_us, msp.level_pos * msp.q_pos_us, atol=1e-4)
        q = max(msp.q_pos_us, msp.q_neg_us)
        inside = (lq.w >= -8 * lq.delta_neg) & (lq.w <= 8 * lq.delta_pos)  # the grid's range
        lsp = np.maximum(lq.g_pos_us, lq.g_neg_us)
        assert lsp[inside].max() <= 4.0 * q / 2 + 1e-4
    for tm in trim.tiles:
        assert tm.level_pos is None and tm.upper_pairs[0].level_pos is not None
    x = torch.rand(16, 1, 8, 8)
    on_chip, digital = _outputs(trim, Chip(cfg), x)
    np.testing.assert_allclose(on_chip, digital, atol=2e-3)


def test_pair_quantisers_need_a_chip_with_pairs(random_digits_mlp):
    """dual_pair, wpo and lsp_trim on a single-pair chip are refused, saying what to set."""
    cfg = ideal_chip_config(tiles_needed(random_digits_mlp, 64, 64), 64, 64)
    for q in (DualPairQuantiser(), WPOQuantiser(), MultiplicativeQuantiser(lsp_trim=True)):
        with pytest.raises(ValueError, match="pairs_per_weight >= 2"):
            map_network(random_digits_mlp, q, cfg)


def test_wpo_mapping_searches_once_and_then_reads_its_cache(
    random_digits_mlp, tmp_path, monkeypatch
):
    """The optimiser runs at the chip's F on the network's weights; a second mapping of the
    same network loads the translation from the cache without searching."""
    monkeypatch.setenv("PCM_TWIN_CACHE_DIR", str(tmp_path))
    cfg = _pair_chip(random_digits_mlp, 2, 2.5)
    search = WPOConfig(n_bins=4, sample_size=256, popsize=1, maxiter=2, f_scan_points=2)
    calls = []
    real = pair_quantisers.optimise

    def spy(weights, wcfg, chip):
        calls.append(wcfg)
        return real(weights, wcfg, chip)

    monkeypatch.setattr(pair_quantisers, "optimise", spy)
    first = map_network(random_digits_mlp, WPOQuantiser(search=search), cfg)
    second = map_network(random_digits_mlp, WPOQuantiser(search=search), cfg)
    assert len(calls) == 1 and calls[0].significance_factor == 2.5 and calls[0].n_pairs == 2
    assert len(list((tmp_path / "wpo").glob("*.json"))) == 1
    for a, b in zip(first.tiles, second.tiles, strict=True):
        for pa, pb in zip(a.pairs(), b.pairs(), strict=True):
            np.testing.assert_array_equal(pa.g_pos_us, pb.g_pos_us)
    x = torch.rand(8, 1, 8, 8)
    on_chip, digital = _outputs(first, Chip(cfg), x)
    np.testing.assert_allclose(on_chip, digital, atol=5e-3)
