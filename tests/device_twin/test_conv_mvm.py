"""A convolution's MVMs unrolled on the chip (``Chip.conv_mvm``) against the same rows
unrolled by the caller and sent as plain MVMs."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from device_twin import Chip, ChipConfig, InvalidArgument, ResourceExhausted
from device_twin.config import IOConfig, PeripheryConfig
from device_twin.unroll import ConvGeometry, im2col, unrolled_blocks

R, C = 64, 24
GEOMETRY = ConvGeometry((3, 3), stride=(2, 1), padding=(1, 1))


def _chip(seed: int = 5, perfect: bool = False) -> Chip:
    periphery = PeripheryConfig(forward=IOConfig(is_perfect=True)) if perfect else None
    extra = {} if periphery is None else {"periphery": periphery}
    chip = Chip(ChipConfig(n_tiles=2, tile_rows=R, tile_cols=C, seed=seed, **extra))
    rng = np.random.default_rng(1)
    for t in range(2):
        gp, gn = rng.uniform(0, 25, (2, R, C)).astype(np.float32)
        chip.program(t, gp, gn, 0.0)
    return chip


def _activation(n: int = 5, c: int = 9) -> np.ndarray:
    return np.random.default_rng(2).normal(size=(n, c, 6, 7)).astype(np.float32)


def test_unrolled_blocks_are_the_rows_and_columns_of_im2col():
    """Blocks of any size, over any column window, join up to that window of im2col's rows."""
    x = torch.from_numpy(_activation())
    full, _ = im2col(x, GEOMETRY)
    for patch_start, k, rows in [(0, 81, 7), (10, 50, 13), (17, 1, 1000), (80, 1, 24)]:
        blocks = list(unrolled_blocks(x, GEOMETRY, patch_start, k, rows))
        assert all(b.is_contiguous() and b.shape[0] <= rows for b in blocks)
        assert torch.equal(torch.cat(blocks), full[:, patch_start : patch_start + k])


def test_im2col_matches_torch_unfold():
    """Row (image n, position p) of im2col is unfold's column p of image n."""
    x = torch.from_numpy(_activation())
    g = ConvGeometry((3, 2), stride=(1, 2), padding=(2, 0), dilation=(2, 1))
    cols, (ho, wo) = im2col(x, g)
    ref = torch.nn.functional.unfold(x, g.kernel, g.dilation, g.padding, g.stride)
    assert torch.equal(cols, ref.transpose(1, 2).reshape(-1, ref.shape[1]))
    assert cols.shape[0] == x.shape[0] * ho * wo


def test_conv_mvm_equals_mvms_of_the_unrolled_rows():
    """Outputs, energy and latency equal those of plain MVMs of the same unrolled blocks, noise
    and bound management included, and the next MVM at that instant sees the same noise."""
    x = _activation()
    a, b = _chip(), _chip()
    patch_start, k, rows = 10, 50, 13
    conv = a.conv_mvm(1, x, 5.0, GEOMETRY, patch_start, k, row_start=7, col_start=3,
                      col_count=9, rows_per_mvm=rows)  # fmt: skip
    unrolled = im2col(torch.from_numpy(x), GEOMETRY)[0][:, patch_start : patch_start + k].numpy()
    plain = [b.mvm(1, np.ascontiguousarray(unrolled[s : s + rows]), 5.0, 7, 3, 9)
             for s in range(0, unrolled.shape[0], rows)]  # fmt: skip
    assert np.array_equal(conv.values, np.concatenate([p.values for p in plain]))
    assert conv.energy_pj == pytest.approx(sum(p.energy_pj for p in plain), rel=1e-9)
    assert conv.latency_s == pytest.approx(sum(p.latency_s for p in plain), rel=1e-12)
    assert conv.kind == "mvm" and conv.devices == plain[0].devices
    probe = np.eye(k, dtype=np.float32)
    assert np.array_equal(
        a.mvm(1, probe, 5.0, 7, 3, 9).values, b.mvm(1, probe, 5.0, 7, 3, 9).values
    )
    assert a.ledger.total_energy_pj == pytest.approx(b.ledger.total_energy_pj, rel=1e-9)


def test_conv_mvm_computes_the_convolution():
    """With a perfect periphery the outputs are torch's convolution with the chip's weights."""
    chip = _chip(perfect=True)
    x = _activation(n=3, c=7)  # 63 unrolled columns on rows 1..63
    y = chip.conv_mvm(0, x, 1.0, GEOMETRY, 0, 63, row_start=1, col_start=0, col_count=C).values
    w_eff = chip.effective_weights(0, 1.0)[0].numpy()[:, 1:64]  # (cols, rows) at that instant
    ref = torch.nn.functional.conv2d(torch.from_numpy(x), torch.from_numpy(w_eff).reshape(C, 7, 3, 3),
                                     stride=GEOMETRY.stride, padding=GEOMETRY.padding)  # fmt: skip
    np.testing.assert_allclose(y, ref.permute(0, 2, 3, 1).reshape(-1, C).numpy(), atol=2e-5)


@pytest.mark.parametrize(
    "change, error, match",
    [
        ({"x": np.zeros((2, 9, 6), np.float32)}, InvalidArgument, "images >= 1"),
        ({"x": np.full((1, 9, 6, 7), np.nan, np.float32)}, InvalidArgument, "NaN"),
        ({"geometry": ConvGeometry((9, 9))}, InvalidArgument, "does not fit"),
        ({"geometry": (3, 3)}, InvalidArgument, "ConvGeometry"),
        ({"patch_start": 40, "k": 50}, InvalidArgument, "out of range"),
        ({"k": 0}, InvalidArgument, "k must be"),
        ({"row_start": 20, "k": 50}, InvalidArgument, "tile has 64 rows"),
        ({"rows_per_mvm": -1}, InvalidArgument, "rows_per_mvm"),
        ({"rows_per_mvm": 10**6}, ResourceExhausted, "fewer rows"),
    ],
)
def test_bad_conv_mvm_requests_are_refused_and_change_nothing(change, error, match):
    """Bad activations, geometries, windows and block sizes are refused before any change."""
    chip = _chip()
    args = {"x": _activation(), "geometry": GEOMETRY, "patch_start": 0, "k": 50,
            "row_start": 0, "rows_per_mvm": 0} | change  # fmt: skip
    before = (chip.op_counter, chip.now_s, dict(chip.periphery_calls))
    with pytest.raises(error, match=match):
        chip.conv_mvm(0, args.pop("x"), 2.0, args.pop("geometry"), **args)
    assert (chip.op_counter, chip.now_s, dict(chip.periphery_calls)) == before


@pytest.mark.parametrize(
    "value, match",
    [((0, 3), "kernel"), ((3,), "kernel"), ((3, True), "kernel"), ((65, 1), "kernel")],
)
def test_conv_geometry_from_request_values_is_checked(value, match):
    """A kernel of the wrong length, type or range names the field at fault."""
    with pytest.raises(InvalidArgument, match=match) as err:
        ConvGeometry.checked(value, (1, 1), (0, 0), (1, 1))
    assert err.value.violations[0][0] == "kernel"
