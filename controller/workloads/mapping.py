"""Mapping a network onto the tiles of a chip, and running it there.

Every analog layer (Conv2d, Linear) becomes a crossbar matrix: a convolution is unrolled
im2col-style (input rows = C_in * kh * kw in torch's ``unfold`` order, output columns =
C_out), a linear layer is its transposed weight (rows = in_features, columns = out_features).
A matrix larger than a tile is split into blocks of at most ``tile_rows`` x ``tile_cols``:
blocks along the rows produce partial sums that are added digitally, blocks along the columns
are concatenated. Each block gets a tile of its own (``TileMapping``), placed at row 0 and
column 0, so every tile of the list can be programmed on its own with ``program``.

``MappedNetwork.forward`` runs the digital layers in torch and every analog layer through an
``MVMFn`` (``Chip.mvm`` of an in-process chip, or a gRPC client's), rescaling each layer's
output digitally by the quantiser's ``out_scale`` and adding the (digital) bias. Inputs are
sent in chunks of at most ``max_mvm_bytes`` (8 MiB by default) per MVM call, so the same code
can drive a twin over gRPC.

A convolution's MVMs take its activation unrolled (``device_twin.unroll.im2col``). If the MVM
function offers ``conv`` (:class:`ConvMVMFn`: ``Chip.conv_mvm``, the twin's ``ConvMvm``), the
activation itself is sent and the twin unrolls it, in the same blocks of rows, through the
same periphery: the outputs are the same, and the wire carries the activation instead of
rows 9 times its size (a 3x3 kernel). Otherwise the rows are unrolled here.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import numpy as np
import torch
from torch.nn import functional as nnf

from controller.workloads.datasets import DatasetSplit
from controller.workloads.layers import BatchNorm2d, Conv2d, Linear, Residual
from controller.workloads.network import NetworkDescription
from controller.workloads.pair_quantisers import needs_pairs, quantise_on_chip
from controller.workloads.quantisers import (
    LayerQuantisation,
    PairLevels,
    QuantiserConfig,
    quantise_layers,
    quantiser_config,
)
from device_twin.config import ChipConfig
from device_twin.unroll import ConvGeometry, im2col

MVMFn = Callable[[int, np.ndarray, int, int, int], np.ndarray]
"""``mvm(tile, x (batch, k) float32, row_start, col_start, col_count) -> y (batch, col_count)``:
the meaning of ``device_twin.chip.Chip.mvm``, y = x @ ((G+ - G-)/g_max)[row block, col block]."""


class ConvMVMFn(Protocol):
    """An ``MVMFn`` that also runs a convolution's MVMs from its activation, unrolled on the
    chip: the meaning of ``device_twin.chip.Chip.conv_mvm``."""

    def __call__(
        self, tile: int, x: np.ndarray, row_start: int, col_start: int, col_count: int
    ) -> np.ndarray: ...

    def conv(
        self, tile: int, x: np.ndarray, geometry: ConvGeometry, patch_start: int, k: int,
        row_start: int, col_start: int, col_count: int, rows_per_mvm: int,
    ) -> np.ndarray: ...  # fmt: skip


class OutputCompensation(Protocol):
    """What running a mapped network needs of a drift compensation
    (:class:`~controller.workloads.compensation.DriftCompensation`): a scale for each tile's
    outputs, a fresh read (``measure``), and batch-norm statistics by layer name."""

    bn_stats: dict[str, tuple[torch.Tensor, torch.Tensor]]

    def apply(self, pos: int, y: np.ndarray) -> np.ndarray: ...

    def measure(self, mvm: MVMFn) -> None: ...


#: Largest MVM input or output one call moves (a gRPC message stays well below its limit).
MAX_MVM_BYTES = 8 * 1024 * 1024


@dataclass
class TileMapping:
    """One tile: a block of one layer's crossbar matrix, and its targets.

    The block holds rows ``row_range`` and columns ``col_range`` of the layer's matrix and sits
    in the tile at ``(row_offset, col_offset)``; every other device has target 0 uS.
    """

    tile: int  # tile index on the chip
    layer: str  # layer name in the network description
    g_target_pos_us: np.ndarray  # (tile_rows, tile_cols) float32, unused devices 0
    g_target_neg_us: np.ndarray
    level_pos: np.ndarray | None  # (tile_rows, tile_cols) uint8 multipliers m+ (level quantisers)
    level_neg: np.ndarray | None
    q_pos_us: float | None  # conductance per level on G+ (level quantisers)
    q_neg_us: float | None
    used: np.ndarray  # (tile_rows, tile_cols) bool: devices holding a weight
    layer_index: int = 0  # index of the layer in ``description.layers``
    row_range: tuple[int, int] = (0, 0)  # [start, stop) rows of the layer matrix
    col_range: tuple[int, int] = (0, 0)  # [start, stop) columns of the layer matrix
    row_offset: int = 0  # first tile row of the block
    col_offset: int = 0  # first tile column of the block
    #: pairs 1, 2, ... of a chip with several pairs per weight (pair 0: the fields above)
    upper_pairs: list[PairLevels] = field(default_factory=list)
    g_floor_us: float = 0.0  # level 0 of the block's devices (the family's lowest conductance)

    def pairs(self) -> list[PairLevels]:
        """The targets (and levels) of every pair, pair 0 first."""
        first = PairLevels(self.g_target_pos_us, self.g_target_neg_us, self.level_pos,
                           self.level_neg, self.q_pos_us, self.q_neg_us)  # fmt: skip
        return [first, *self.upper_pairs]

    @property
    def block_rows(self) -> int:
        return self.row_range[1] - self.row_range[0]

    @property
    def block_cols(self) -> int:
        return self.col_range[1] - self.col_range[0]

    def block(self, a: np.ndarray) -> np.ndarray:
        """The block's part of a (tile_rows, tile_cols) array."""
        r, c = self.row_offset, self.col_offset
        return a[r : r + self.block_rows, c : c + self.block_cols]


@dataclass
class AnalogLayer:
    """How one analog layer sits on the chip."""

    index: int
    name: str
    rows: int  # K: crossbar rows of the layer matrix
    cols: int  # N: crossbar columns (output channels / features)
    out_scale: float  # weight units per (G+ - G-)/g_max unit
    tiles: list[int]  # positions in ``MappedNetwork.tiles`` of this layer's blocks
    quantisation: LayerQuantisation


@dataclass
class MappedNetwork:
    """A network on a chip: tile targets plus what the digital side needs to run it."""

    description: NetworkDescription
    tiles: list[TileMapping]
    n_tiles: int
    tile_rows: int
    tile_cols: int
    g_max_us: float
    quantiser: str
    layers: dict[str, AnalogLayer] = field(default_factory=dict)
    quantised: NetworkDescription | None = None  # the network with the weights the targets hold
    max_mvm_bytes: int = MAX_MVM_BYTES
    _modules: Any = field(default=None, repr=False)
    #: f_k = F^k of the chip's pairs per weight (one pair: (1.0,))
    significance: tuple[float, ...] = (1.0,)

    @property
    def pairs_per_weight(self) -> int:
        return len(self.significance)

    # --- running ------------------------------------------------------------------------
    def _torch_modules(self) -> list[torch.nn.Module]:
        if self._modules is None:
            model = self.description.to_torch().requires_grad_(False)
            self._modules = list(model.children())
        return self._modules

    def layer_tiles(self, name: str) -> list[TileMapping]:
        return [self.tiles[i] for i in self.layers[name].tiles]

    def rows_per_mvm(self, pos: int) -> int:
        """Input vectors per MVM call on ``tiles[pos]``: as many as keep the call's inputs and
        outputs under ``max_mvm_bytes``."""
        tm = self.tiles[pos]
        return max(1, self.max_mvm_bytes // (4 * max(tm.block_rows, tm.block_cols)))

    def block_mvm(self, pos: int, x: np.ndarray, mvm: MVMFn) -> np.ndarray:
        """``x`` (M, block_rows) through the block of ``tiles[pos]``, in chunks that keep each
        call under ``max_mvm_bytes``; returns (M, block_cols) float32 in g_max units."""
        tm = self.tiles[pos]
        chunk = self.rows_per_mvm(pos)
        out = np.empty((x.shape[0], tm.block_cols), np.float32)
        for s in range(0, x.shape[0], chunk):
            xs = np.ascontiguousarray(x[s : s + chunk], dtype=np.float32)
            out[s : s + chunk] = mvm(tm.tile, xs, tm.row_offset, tm.col_offset, tm.block_cols)
        return out

    def analog_matmul(
        self, name: str, x: np.ndarray, mvm: MVMFn, compensation: OutputCompensation | None = None
    ) -> np.ndarray:
        """x (M, K) @ the layer's matrix, on the chip: partial sums of row blocks added,
        column blocks concatenated, drift compensation per tile, rescaled by ``out_scale``."""
        al = self.layers[name]
        y = np.zeros((x.shape[0], al.cols), np.float32)
        for pos in al.tiles:
            tm = self.tiles[pos]
            r0, r1 = tm.row_range
            yb = self.block_mvm(pos, x[:, r0:r1], mvm)
            if compensation is not None:
                yb = compensation.apply(pos, yb)
            y[:, tm.col_range[0] : tm.col_range[1]] += yb
        return y * np.float32(al.out_scale)

    def analog_conv(
        self, layer: Conv2d, x: torch.Tensor, mvm: ConvMVMFn,
        compensation: OutputCompensation | None = None,
    ) -> tuple[np.ndarray, tuple[int, int]]:  # fmt: skip
        """The convolution ``layer`` of ``x`` (N, C, H, W) on the chip, unrolled by the chip
        (``mvm.conv``): as ``analog_matmul`` of ``im2col(x)``, block for block; returns
        ((N*Ho*Wo, C_out), (Ho, Wo))."""
        al = self.layers[layer.name]
        geometry = conv_geometry(layer)
        ho, wo = geometry.output_size(x.shape[2], x.shape[3])
        y = np.zeros((x.shape[0] * ho * wo, al.cols), np.float32)
        for pos in al.tiles:
            tm = self.tiles[pos]
            r0, r1 = tm.row_range
            c0, c1 = r0 // geometry.taps, -(-r1 // geometry.taps)  # the channels it reads
            xs = np.ascontiguousarray(x[:, c0:c1].numpy(), dtype=np.float32)
            yb = mvm.conv(tm.tile, xs, geometry, r0 - c0 * geometry.taps, r1 - r0,
                          tm.row_offset, tm.col_offset, tm.block_cols,
                          self.rows_per_mvm(pos))  # fmt: skip
            if compensation is not None:
                yb = compensation.apply(pos, yb)
            y[:, tm.col_range[0] : tm.col_range[1]] += yb
        return y * np.float32(al.out_scale), (ho, wo)

    @torch.no_grad()
    def forward(
        self,
        x: torch.Tensor,
        mvm: MVMFn,
        compensation: OutputCompensation | None = None,
        adapt_bn: bool = False,
    ) -> torch.Tensor:
        """The network's output for a batch ``x``: digital layers in torch, analog layers
        through ``mvm``, drift compensation (and adapted batch-norm statistics) if given.
        ``adapt_bn``: measure the batch-norm statistics of this batch into the compensation's
        ``bn_stats`` on the way (adaptive batch-norm statistics, Joshi 2020)."""
        return self._run_layers(self.description.layers, self._torch_modules(), x.float(), mvm,
                                compensation, adapt_bn)  # fmt: skip

    def _run_layers(
        self,
        layers: list[Any],
        modules: list[torch.nn.Module],
        x: torch.Tensor,
        mvm: MVMFn,
        compensation: OutputCompensation | None,
        adapt_bn: bool,
    ) -> torch.Tensor:
        for layer, module in zip(layers, modules, strict=True):
            if isinstance(layer, Residual):
                body = self._run_layers(layer.body, list(module.body.children()), x, mvm,
                                        compensation, adapt_bn)  # fmt: skip
                skip = x
                if layer.shortcut:
                    skip = self._run_layers(layer.shortcut, list(module.shortcut.children()), x,
                                            mvm, compensation, adapt_bn)  # fmt: skip
                x = body + skip
            elif isinstance(layer, Conv2d):
                n = x.shape[0]
                if hasattr(mvm, "conv"):  # the chip unrolls the activation
                    y, (h, w) = self.analog_conv(layer, x, mvm, compensation)  # type: ignore[arg-type]
                else:
                    cols, (h, w) = im2col(x, conv_geometry(layer))
                    y = self.analog_matmul(layer.name, cols.numpy(), mvm, compensation)
                # rows are (image, position): a channels-last view, no copy
                x = torch.from_numpy(y).view(n, h, w, -1).permute(0, 3, 1, 2)
                if layer.bias is not None:
                    x = x + module.bias.view(1, -1, 1, 1)
            elif isinstance(layer, Linear):
                lead = x.shape[:-1]
                y = self.analog_matmul(layer.name, x.reshape(-1, x.shape[-1]).numpy(), mvm,
                                       compensation)  # fmt: skip
                x = torch.from_numpy(y).reshape(*lead, -1)
                if layer.bias is not None:
                    x = x + module.bias
            elif (
                isinstance(layer, BatchNorm2d)
                and compensation is not None
                and (adapt_bn or layer.name in compensation.bn_stats)
            ):
                if adapt_bn:  # adaptive batch-norm statistics (Joshi 2020): measure them here
                    compensation.bn_stats[layer.name] = (
                        x.mean(dim=(0, 2, 3)), x.var(dim=(0, 2, 3), unbiased=False)
                    )  # fmt: skip
                mean, var = compensation.bn_stats[layer.name]
                x = nnf.batch_norm(x, mean, var, module.weight, module.bias, False, 0.0, layer.eps)
            else:
                x = module(x)
        return x

    def n_weights_on_chip(self) -> int:
        return int(sum(tm.used.sum() for tm in self.tiles))


def conv_geometry(conv: Conv2d) -> ConvGeometry:
    """How a convolution layer slides over its input."""
    return ConvGeometry(conv.kernel_size, conv.stride, conv.padding, conv.dilation)


def _blocks(size: int, step: int) -> list[tuple[int, int]]:
    return [(s, min(s + step, size)) for s in range(0, size, step)]


def tiles_needed(desc: NetworkDescription, tile_rows: int, tile_cols: int) -> int:
    """How many tiles ``map_network`` uses for a network on tiles of this size."""
    return sum(
        math.ceil(layer.weight_matrix().shape[0] / tile_rows)
        * math.ceil(layer.weight_matrix().shape[1] / tile_cols)
        for _, layer in desc.analog_layers()
    )


def fit_chip(
    desc: NetworkDescription, chip_config: ChipConfig, n_tiles: int | Literal["auto"] = "auto"
) -> ChipConfig:
    """``chip_config`` with the number of tiles for ``desc``: ``"auto"`` takes as many as
    ``map_network`` uses on tiles of that size (at least one), a number is kept as given (and
    ``map_network`` refuses a chip too small). Every other field is kept as it is. Raises
    pydantic's ValidationError if the network needs more tiles than a chip may have."""
    if n_tiles == "auto":
        n_tiles = max(tiles_needed(desc, chip_config.tile_rows, chip_config.tile_cols), 1)
    return ChipConfig.model_validate({**chip_config.model_dump(), "n_tiles": n_tiles})


def map_network(
    desc: NetworkDescription,
    quantiser: str | QuantiserConfig,
    chip_config: ChipConfig,
    *,
    first_tile: int = 0,
    max_mvm_bytes: int = MAX_MVM_BYTES,
) -> MappedNetwork:
    """Quantise ``desc``'s analog layers and place their blocks on tiles ``first_tile``, ...

    Raises ValueError if the chip has too few tiles (see ``tiles_needed``).
    """
    q = quantiser_config(quantiser)
    R, C = chip_config.tile_rows, chip_config.tile_cols
    need = tiles_needed(desc, R, C)
    if first_tile < 0 or first_tile + need > chip_config.n_tiles:
        raise ValueError(
            f"network {desc.name!r} needs {need} tiles of {R}x{C} from tile {first_tile}, "
            f"but the chip has {chip_config.n_tiles} tiles"
        )
    analog = desc.analog_layers()
    matrices = {layer.name: layer.weight_matrix().astype(np.float64) for _, layer in analog}
    # a family whose devices cannot go below a floor (reram_cmo: 9 uS) holds its levels above
    # it: G = floor + m*q over [floor, g_max]; the floor cancels in G+ - G-
    floor = g_floor_us(chip_config)
    span = chip_config.g_max_us - floor
    if floor > 0 and needs_pairs(q):
        raise ValueError(
            f"quantiser {q.kind!r} on several pairs needs a device family without a floor "
            f"(this chip's devices cannot go below {floor:g} uS)"
        )
    if floor == 0:
        quant = quantise_on_chip(matrices, q, chip_config)
    else:
        quant = quantise_layers(matrices, q, span)
    tiles: list[TileMapping] = []
    layers: dict[str, AnalogLayer] = {}
    for index, layer in analog:
        lq = quant[layer.name]
        K, N = lq.w.shape
        positions = []
        pair0 = PairLevels(lq.g_pos_us, lq.g_neg_us, lq.level_pos, lq.level_neg, lq.q_pos_us,
                           lq.q_neg_us)  # fmt: skip
        for r0, r1 in _blocks(K, R):
            for c0, c1 in _blocks(N, C):
                used = np.zeros((R, C), bool)
                used[: r1 - r0, : c1 - c0] = True
                first, *upper = (
                    _tile_block(p, (r0, r1), (c0, c1), (R, C), floor)
                    for p in [pair0, *lq.upper_pairs]
                )
                positions.append(len(tiles))
                tiles.append(
                    TileMapping(
                        first_tile + len(tiles), layer.name, first.g_pos_us, first.g_neg_us,
                        first.level_pos, first.level_neg, first.q_pos_us, first.q_neg_us, used,
                        index, (r0, r1), (c0, c1), upper_pairs=upper, g_floor_us=floor,
                    )
                )  # fmt: skip
        # the quantiser's scale is per (G+ - G-)/span; the chip's MVM gives (G+ - G-)/g_max
        out_scale = lq.out_scale * chip_config.g_max_us / span
        layers[layer.name] = AnalogLayer(index, layer.name, K, N, out_scale, positions, lq)
    quantised = desc.with_weights(
        {layer.name: quant[layer.name].w_q.T.reshape(layer.weight.shape) for _, layer in analog}
    )
    return MappedNetwork(desc, tiles, chip_config.n_tiles, R, C, chip_config.g_max_us, q.kind,
                         layers, quantised, max_mvm_bytes,
                         significance=chip_config.significance)  # fmt: skip


def _tile_block(
    p: PairLevels,
    rows: tuple[int, int],
    cols: tuple[int, int],
    shape: tuple[int, int],
    floor_us: float = 0.0,
) -> PairLevels:
    """A pair's (K, N) targets, rows x cols of them placed at the top left of a tile, the
    conductances raised by ``floor_us`` (the family's level 0)."""
    (r0, r1), (c0, c1) = rows, cols

    def place(a: np.ndarray | None, dtype, add: float = 0.0) -> np.ndarray | None:
        if a is None:
            return None
        out = np.zeros(shape, dtype)
        out[: r1 - r0, : c1 - c0] = a[r0:r1, c0:c1] + add
        return out

    g_pos, g_neg = place(p.g_pos_us, np.float32, floor_us), place(p.g_neg_us, np.float32, floor_us)
    return PairLevels(g_pos, g_neg,  # type: ignore[arg-type]
                      place(p.level_pos, np.uint8), place(p.level_neg, np.uint8), p.q_pos_us,
                      p.q_neg_us)  # fmt: skip


def g_floor_us(chip_config: ChipConfig) -> float:
    """The lowest conductance the chip's device family can hold (uS; 0 for PCM)."""
    from device_twin.families import make_family

    return float(make_family(chip_config.device, chip_config.g_max_us).g_floor_us)


# --- driving a chip -------------------------------------------------------------------------
class ProgrammableChip(Protocol):
    def program(
        self, tile: int, g_target_pos_us: np.ndarray, g_target_neg_us: np.ndarray, at_s: float
    ) -> Any: ...


def program_mapped(mapped: MappedNetwork, chip: ProgrammableChip, at_s: float) -> list[Any]:
    """Program every tile of ``mapped`` at ``at_s`` (anything with ``program(tile, g_pos,
    g_neg, at_s)``, and ``pair=k`` for a network on several pairs: an in-process ``Chip``, or
    a client bound to a chip id); returns the results of the ``program`` calls."""
    out = []
    for tm in mapped.tiles:
        for k, p in enumerate(tm.pairs()):
            extra = {"pair": k} if k else {}
            out.append(chip.program(tm.tile, p.g_pos_us, p.g_neg_us, at_s, **extra))
    return out


def evaluate(
    mapped: MappedNetwork,
    mvm: MVMFn,
    dataset_split: DatasetSplit,
    compensation: OutputCompensation | None = None,
    batch_size: int = 250,
    measure: bool = True,
) -> float:
    """Top-1 accuracy of the mapped network on a split, every MVM through ``mvm``.

    With ``compensation`` (calibrated right after programming), its reads at this time are
    taken first (``compensation.measure``) unless ``measure`` is False.
    """
    if compensation is not None and measure:
        compensation.measure(mvm)
    correct = 0
    for i in range(0, len(dataset_split), batch_size):
        out = mapped.forward(dataset_split.x[i : i + batch_size], mvm, compensation)
        correct += int((out.argmax(dim=1) == dataset_split.y[i : i + batch_size]).sum())
    return correct / max(len(dataset_split), 1)
