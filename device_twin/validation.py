"""Checks of every request to a chip, before anything changes (a refused request leaves the
chip as it was). Each raises a ``TwinError`` whose ``code`` is the gRPC status to send."""

from __future__ import annotations

import math
from enum import IntEnum

import numpy as np

from device_twin.config import ChipConfig
from device_twin.errors import FailedPrecondition, InvalidArgument, NotFound, ResourceExhausted

_FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))
#: Latest device time a chip accepts (about 31,700 years): device ages are float32.
MAX_TIME_S = 1e12


class Array(IntEnum):
    """Which devices of the differential pairs.

    ``POS`` (G+) and ``NEG`` (G-) address one array, devices by ``row*cols + col``. ``BOTH``
    addresses the two arrays in one call, devices by ``array*rows*cols + row*cols + col``
    (probe: codes of shape (2, rows, cols)). ``DIFF`` (probe only) reads G+ - G-.
    Every operation addresses the arrays of one pair (``pair``, default 0). Internally a
    device's array is an index (``2*pair + sign``; single-pair chips: 0, 1).
    """

    POS = 0
    NEG = 1
    DIFF = 2
    BOTH = 3


class PulseKind(IntEnum):
    SET = 0
    RESET = 1


def check_float_array(a: object, name: str, shape: tuple[int, ...] | None = None) -> np.ndarray:
    if not isinstance(a, np.ndarray):
        raise InvalidArgument(f"{name} must be a numpy array, got {type(a).__name__}", field=name)
    if a.dtype not in _FLOAT_DTYPES:
        raise InvalidArgument(f"{name} must be float32 or float64, got {a.dtype}", field=name)
    if shape is not None and a.shape != shape:
        raise InvalidArgument(f"{name} has shape {a.shape}, expected {shape}", field=name)
    if not np.all(np.isfinite(a)):
        raise InvalidArgument(f"{name} contains NaN or Inf", field=name)
    return a


def check_int(value: object, name: str, minimum: int = 0) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < minimum:
        raise InvalidArgument(f"{name} must be an integer >= {minimum}, got {value!r}",
                              field=name)  # fmt: skip
    return int(value)


def check_tile(
    config: ChipConfig, programmed: np.ndarray, tile: object, need_programmed=True
) -> int:
    if isinstance(tile, bool) or not isinstance(tile, int | np.integer):
        raise InvalidArgument(f"tile must be an integer, got {type(tile).__name__}", field="tile")
    if not 0 <= tile < config.n_tiles:
        raise NotFound(f"tile {tile} does not exist: this chip has tiles 0..{config.n_tiles - 1}",
                       field="tile")  # fmt: skip
    if need_programmed and not programmed[tile]:
        raise FailedPrecondition(f"tile {tile} is not programmed: call program first",
                                 field="tile")  # fmt: skip
    return int(tile)


def check_time(now_s: float, at_s: object) -> float:
    try:
        t = float(at_s)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise InvalidArgument(f"at_s must be a number of seconds, got {at_s!r}",
                              field="at_s") from None  # fmt: skip
    if not math.isfinite(t) or t < 0 or t > MAX_TIME_S:
        raise InvalidArgument(f"at_s must be finite and in [0, {MAX_TIME_S:g}] s, got {at_s!r}",
                              field="at_s")  # fmt: skip
    if t < now_s:
        raise FailedPrecondition(
            f"time going backwards: at_s={t!r} is before the chip's current time {now_s!r}",
            field="at_s",
        )
    return t


def check_array(array: object, allow_diff: bool = False) -> Array:
    try:
        a = Array(int(array))  # type: ignore[call-overload]
    except (ValueError, TypeError):
        raise InvalidArgument(
            f"unknown array {array!r}: expected POS (0), NEG (1) or BOTH (3)", field="array"
        ) from None
    if a is Array.DIFF and not allow_diff:
        raise InvalidArgument("array DIFF is only valid for probe: expected POS, NEG or BOTH",
                              field="array")  # fmt: skip
    return a


def check_pair(config: ChipConfig, pair: object) -> int:
    """A pair index of the chip (0 = the least significant pair)."""
    if isinstance(pair, bool) or not isinstance(pair, int | np.integer):
        raise InvalidArgument(f"pair must be an integer, got {type(pair).__name__}", field="pair")
    if not 0 <= pair < config.pairs_per_weight:
        raise InvalidArgument(
            f"pair {pair} does not exist: this chip has pairs 0..{config.pairs_per_weight - 1} "
            "per weight", field="pair",
        )  # fmt: skip
    return int(pair)


def check_indices(idx: object, limit: int, name: str) -> np.ndarray:
    if not isinstance(idx, np.ndarray) or idx.ndim != 1:
        raise InvalidArgument(f"{name} must be a 1-D integer numpy array", field=name)
    if idx.dtype.kind not in "iu":
        raise InvalidArgument(f"{name} must hold integers, got {idx.dtype}", field=name)
    if idx.size == 0:
        raise InvalidArgument(f"{name} is empty", field=name)
    if idx.min() < 0 or idx.max() >= limit:
        raise InvalidArgument(f"{name} out of range: expected 0..{limit - 1}", field=name)
    out = idx.astype(np.int64)
    # callers mostly pass sorted indices (np.flatnonzero): an O(n) check, sort otherwise
    if out.size > 1 and not np.all(out[1:] > out[:-1]):
        s = np.sort(out)
        if np.any(s[1:] == s[:-1]):
            raise InvalidArgument(f"{name} contains duplicates", field=name)
    return out


def check_devices(config: ChipConfig, array: object, devices: object, pair: object = 0):
    """Validate (array, devices) of a pair: per-device array index (int8, ``2*pair + sign``)
    and index within its array."""
    arr = check_array(array)
    base = 2 * check_pair(config, pair)
    n = config.tile_rows * config.tile_cols
    if arr is Array.BOTH:
        flat = check_indices(devices, 2 * n, "devices")
        a, idx = np.divmod(flat, n)
        return (a + base).astype(np.int8), idx
    idx = check_indices(devices, n, "devices")
    return np.full(idx.size, base + int(arr), np.int8), idx


def check_addresses(config: ChipConfig, n_arrays: int, arrays: object, devices: object):
    """Validate devices addressed one by one as (array index, flat index): (int8, int64).

    The pairs must be distinct; an array index is ``2*pair + sign``, below ``n_arrays``."""
    n = config.tile_rows * config.tile_cols
    idx = devices
    if not isinstance(idx, np.ndarray) or idx.ndim != 1 or idx.dtype.kind not in "iu":
        raise InvalidArgument("devices must be a 1-D integer numpy array", field="devices")
    if not isinstance(arrays, np.ndarray) or arrays.ndim != 1 or arrays.dtype.kind not in "iu":
        raise InvalidArgument("arrays must be a 1-D integer numpy array", field="arrays")
    if arrays.shape != idx.shape:
        raise InvalidArgument(
            f"arrays has {arrays.size} entries for {idx.size} devices: one per device",
            field="arrays",
        )
    if idx.size and (idx.min() < 0 or idx.max() >= n):
        raise InvalidArgument(f"devices out of range: expected 0..{n - 1}", field="devices")
    if arrays.size and (arrays.min() < 0 or arrays.max() >= n_arrays):
        raise InvalidArgument(
            f"arrays out of range: expected array indices 0..{n_arrays - 1}", field="arrays"
        )
    a = arrays.astype(np.int64)
    flat = check_indices(a * n + idx.astype(np.int64), n_arrays * n, "devices")
    return a.astype(np.int8), flat - a * n


def check_cols(config: ChipConfig, col_start: object, col_count: object) -> slice:
    """Validate a column range; returns it as a slice."""
    cols = config.tile_cols
    start = check_int(col_start, "col_start")
    if start >= cols:
        raise InvalidArgument(
            f"col_start {start} is past the tile's last column: the tile has {cols} columns, "
            f"0..{cols - 1}", field="col_start",
        )  # fmt: skip
    n = cols - start if col_count is None else col_count
    if isinstance(n, bool) or not isinstance(n, int | np.integer) or n < 1:
        raise InvalidArgument(f"col_count must be an integer >= 1, got {col_count!r}",
                              field="col_count")  # fmt: skip
    if start + n > cols:
        raise InvalidArgument(
            f"columns {start}..{start + n - 1} out of range: the tile has {cols} columns, "
            f"0..{cols - 1}", field="col_count",
        )  # fmt: skip
    return slice(start, int(start + n))


def check_targets(config: ChipConfig, g: object, name: str, shape: tuple[int, ...]) -> np.ndarray:
    check_float_array(g, name, shape)
    assert isinstance(g, np.ndarray)
    if g.size and (g.min() < 0 or g.max() > config.g_max_us):
        raise InvalidArgument(
            f"{name} out of range: conductances must lie in [0, {config.g_max_us}] uS", field=name
        )
    return g


def check_pulses(config: ChipConfig, kind: object, count: object, n: int):
    """Validate a pulse kind and counts (one per device, or one for all): (kind, counts)."""
    try:
        pk = PulseKind(int(kind))  # type: ignore[call-overload]
    except (ValueError, TypeError):
        raise InvalidArgument(
            f"unknown pulse kind {kind!r}: expected SET (0) or RESET (1)", field="kind"
        ) from None
    counts = np.asarray(count)
    if counts.dtype.kind not in "iu" or counts.ndim > 1:
        raise InvalidArgument("count must be an integer or a 1-D integer array", field="count")
    counts = np.broadcast_to(counts, (n,)) if counts.ndim == 0 else counts
    if counts.shape != (n,):
        raise InvalidArgument(f"count has shape {counts.shape}, expected {(n,)}", field="count")
    limit = config.pulse.max_pulses_per_call
    if counts.min() < 1 or counts.max() > limit:
        raise InvalidArgument(f"count out of range: expected 1..{limit} pulses per device",
                              field="count")  # fmt: skip
    return pk, counts.astype(np.int64)


def check_mvm_input(config: ChipConfig, x: object, row_start: object) -> tuple[np.ndarray, int]:
    """Validate an MVM's inputs and first row; returns x as contiguous float32."""
    check_float_array(x, "x")
    assert isinstance(x, np.ndarray)
    if x.ndim != 2 or x.shape[0] == 0 or x.shape[1] == 0:
        raise InvalidArgument(f"x has shape {x.shape}, expected (batch >= 1, inputs >= 1)",
                              field="x")  # fmt: skip
    r0 = check_int(row_start, "row_start")
    k = x.shape[1]
    if r0 + k > config.tile_rows:
        raise InvalidArgument(
            f"x drives rows {r0}..{r0 + k - 1}, but the tile has {config.tile_rows} rows",
            field="x",
        )
    with np.errstate(over="ignore"):
        x32 = np.ascontiguousarray(x, dtype=np.float32)
    if x.dtype != np.float32 and not np.all(np.isfinite(x32)):
        raise InvalidArgument("x has values beyond the float32 range the periphery takes",
                              field="x")  # fmt: skip
    return x32, r0


#: Inputs of one periphery call of a convolution (``Chip.conv_mvm``) when the request leaves
#: the block size to the twin, and the most a request may ask for.
DEFAULT_MVM_BLOCK_BYTES = 8 * 1024**2
MAX_MVM_BLOCK_BYTES = 64 * 1024**2
#: Largest output of one ``conv_mvm`` (its unrolled rows x columns read, float32), and the
#: most MVMs (blocks of unrolled rows) it may make.
MAX_CONV_OUTPUT_BYTES = 1024**3
MAX_MVMS_PER_CONV = 4096


def check_conv_input(x: object) -> np.ndarray:
    """Validate a convolution's activation (N, C, H, W); returns it as contiguous float32."""
    check_float_array(x, "x")
    assert isinstance(x, np.ndarray)
    if x.ndim != 4 or 0 in x.shape:
        raise InvalidArgument(
            f"x has shape {x.shape}, expected (images >= 1, channels, height, width)", field="x"
        )
    with np.errstate(over="ignore"):
        x32 = np.ascontiguousarray(x, dtype=np.float32)
    if x.dtype != np.float32 and not np.all(np.isfinite(x32)):
        raise InvalidArgument("x has values beyond the float32 range the periphery takes")
    return x32


def check_conv_block(
    config: ChipConfig,
    shape: tuple[int, ...],
    geometry: object,
    row_start: object,
    patch_start: object,
    k: object,
    n_out: int,
    rows_per_mvm: object,
) -> tuple[int, int, int, int, tuple[int, int]]:
    """Validate where a convolution's unrolled input lands on a tile (its ``n_out`` columns
    read) and how it is sent through the periphery; returns (row_start, patch_start, k, rows
    per MVM, (Ho, Wo)). ``rows_per_mvm=0``: as many rows as keep an MVM's inputs and outputs
    under ``DEFAULT_MVM_BLOCK_BYTES``."""
    from device_twin.unroll import ConvGeometry  # torch-free configs: unroll imports torch

    if not isinstance(geometry, ConvGeometry):
        raise InvalidArgument(f"geometry must be a ConvGeometry, got {type(geometry).__name__}")
    n, c, h, w = shape
    ho, wo = geometry.output_size(h, w)
    if ho < 1 or wo < 1:
        raise InvalidArgument(
            f"a kernel of {geometry.kernel} with dilation {geometry.dilation} does not fit an "
            f"input of {h}x{w} padded by {geometry.padding}",
            field="kernel",
        )
    r0 = check_int(row_start, "row_start")
    p0 = check_int(patch_start, "patch_start")
    kk = check_int(k, "k", minimum=1)
    width = c * geometry.taps
    if p0 + kk > width:
        raise InvalidArgument(
            f"unrolled columns {p0}..{p0 + kk - 1} out of range: {c} channels x {geometry.taps} "
            f"kernel positions make {width}",
            field="k",
        )
    if r0 + kk > config.tile_rows:
        raise InvalidArgument(
            f"the unrolled input drives rows {r0}..{r0 + kk - 1}, but the tile has "
            f"{config.tile_rows} rows",
            field="row_start",
        )
    rows = check_int(rows_per_mvm, "rows_per_mvm")
    if rows == 0:
        rows = max(1, DEFAULT_MVM_BLOCK_BYTES // (4 * max(kk, n_out)))
    if rows * kk * 4 > MAX_MVM_BLOCK_BYTES:
        raise ResourceExhausted(
            f"rows_per_mvm={rows} of {kk} inputs is over {MAX_MVM_BLOCK_BYTES} bytes per MVM: "
            "ask for fewer rows per MVM",
            field="rows_per_mvm",
        )
    if n * ho * wo * n_out * 4 > MAX_CONV_OUTPUT_BYTES:
        raise ResourceExhausted(
            f"{n} images of {ho}x{wo} output positions would make over {MAX_CONV_OUTPUT_BYTES} "
            "bytes of outputs: send fewer images per call",
            field="x",
        )
    if -(-n * ho * wo // rows) > MAX_MVMS_PER_CONV:
        raise ResourceExhausted(
            f"{n * ho * wo} unrolled rows at {rows} per MVM would make over "
            f"{MAX_MVMS_PER_CONV} MVMs: ask for more rows per MVM or send fewer images",
            field="rows_per_mvm",
        )
    return r0, p0, kk, rows, (ho, wo)
