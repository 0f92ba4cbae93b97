"""A PCM chip: tiles of differential device pairs, and the operations on them.

Per device the chip keeps ``g_prog`` (uS, right after its last write, float32), ``nu`` (drift
exponent, float32) and ``t_write_s`` (device time of its last write, float64): 16 bytes. Drift
is lazy: nothing happens as time passes; a read evaluates the drift law for the devices it
reads. Every operation takes ``at_s``, the device time at which it happens; per chip, time
never goes backwards.

Randomness is counter based: operation number ``k`` of a chip draws from a generator seeded
with ``(seed, k)``, so a chip's whole random state is one integer (``op_counter``) and a
restored chip continues exactly. Every operation validates its whole request before it
changes anything, so a refused request leaves the chip as it was.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from enum import IntEnum

import numpy as np
import torch

from device_twin.config import ChipConfig
from device_twin.energy import Cost, EnergyLedger, EnergyModel
from device_twin.errors import FailedPrecondition, InvalidArgument, NotFound
from device_twin.periphery import TilePeriphery
from device_twin.physics import PCMPhysics, seeded_global_torch, torch_generator
from device_twin.pulses import PulseModel


class Array(IntEnum):
    """Which devices of the differential pairs.

    ``POS`` (G+) and ``NEG`` (G-) address one array, devices by ``row*cols + col``. ``BOTH``
    addresses the two arrays in one call, devices by ``array*rows*cols + row*cols + col``
    (probe: codes of shape (2, rows, cols)). ``DIFF`` (probe only) reads G+ - G-.
    """

    POS = 0
    NEG = 1
    DIFF = 2
    BOTH = 3


class PulseKind(IntEnum):
    SET = 0
    RESET = 1


@dataclass
class DeviceWrites:
    """What a write left in the devices: enough to replay it without random draws."""

    tile: int
    array: np.ndarray  # int8 per device: 0 = G+, 1 = G-
    index: np.ndarray  # int64 per device: row * cols + col
    g_prog_us: np.ndarray  # float32
    nu: np.ndarray  # float32
    t_write_s: float


@dataclass
class OpResult:
    """What an operation did: counts, cost, and its data (reads) or its writes."""

    kind: str
    tile: int
    at_s: float
    devices: int = 0
    pulses: int = 0
    iterations: int = 0
    energy_pj: float = 0.0
    latency_s: float = 0.0
    values: np.ndarray | None = None  # read_devices: uS; probe: int16 codes; mvm: outputs
    scale_us: float | None = None  # probe: uS per ADC code
    writes: DeviceWrites | None = field(default=None, repr=False)


_FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))
_M64 = (1 << 64) - 1
#: Latest device time a chip accepts (about 31,700 years): device ages are float32.
MAX_TIME_S = 1e12


def _mix64(x: int) -> int:
    """SplitMix64's finaliser: a bijective, well-mixing map of 64-bit integers."""
    x = (x + 0x9E3779B97F4A7C15) & _M64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _M64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _M64
    return x ^ (x >> 31)


def derive_seeds(n: int, *key: int) -> list[int]:
    """``n`` 63-bit seeds that depend only on the integers ``key`` (counter-based seeding).

    A few microseconds, against ~70 us for a numpy ``SeedSequence``: every twin operation
    derives its seeds this way."""
    h = 0
    for k in key:
        h = _mix64(h ^ (int(k) & _M64))
    return [_mix64(h ^ i) >> 1 for i in range(1, n + 1)]


def _check_float_array(a: object, name: str, shape: tuple[int, ...] | None = None) -> np.ndarray:
    if not isinstance(a, np.ndarray):
        raise InvalidArgument(f"{name} must be a numpy array, got {type(a).__name__}")
    if a.dtype not in _FLOAT_DTYPES:
        raise InvalidArgument(f"{name} must be float32 or float64, got {a.dtype}")
    if shape is not None and a.shape != shape:
        raise InvalidArgument(f"{name} has shape {a.shape}, expected {shape}")
    if not np.all(np.isfinite(a)):
        raise InvalidArgument(f"{name} contains NaN or Inf")
    return a


class Chip:
    """An emulated PCM chip (see the module docstring)."""

    def __init__(self, config: ChipConfig) -> None:
        self.config = config
        c = config
        self.physics = PCMPhysics(c.device, c.g_max_us, c.program_verify)
        self.pulse_model = PulseModel(c.pulse, c.seed)
        self.energy_model = EnergyModel(c.energy, c.g_max_us, c.tile_cols)
        self.ledger = EnergyLedger()
        shape = (c.n_tiles, 2, c.tile_rows, c.tile_cols)
        # np.zeros maps untouched pages lazily: an unwritten tile costs no memory.
        self.g_prog_us = np.zeros(shape, np.float32)
        self.nu = np.zeros(shape, np.float32)
        self.t_write_s = np.zeros(shape, np.float64)
        self.programmed = np.zeros(c.n_tiles, bool)
        self.tile_version = np.zeros(c.n_tiles, np.int64)
        self.now_s = 0.0
        self.op_counter = 0
        self._peripheries: dict[tuple, TilePeriphery] = {}
        self._w_eff_cache: dict[int, tuple] = {}

    # --- validation ---------------------------------------------------------------------
    @property
    def shape(self) -> tuple[int, int]:
        return (self.config.tile_rows, self.config.tile_cols)

    def _check_tile(self, tile: int, need_programmed: bool = True) -> int:
        if isinstance(tile, bool) or not isinstance(tile, int | np.integer):
            raise InvalidArgument(f"tile must be an integer, got {type(tile).__name__}")
        if not 0 <= tile < self.config.n_tiles:
            raise NotFound(
                f"tile {tile} does not exist: this chip has tiles 0..{self.config.n_tiles - 1}"
            )
        if need_programmed and not self.programmed[tile]:
            raise FailedPrecondition(f"tile {tile} is not programmed: call program first")
        return int(tile)

    def _check_time(self, at_s: float) -> float:
        try:
            t = float(at_s)
        except (TypeError, ValueError):
            raise InvalidArgument(f"at_s must be a number of seconds, got {at_s!r}") from None
        if not math.isfinite(t) or t < 0 or t > MAX_TIME_S:
            raise InvalidArgument(f"at_s must be finite and in [0, {MAX_TIME_S:g}] s, got {at_s!r}")
        if t < self.now_s:
            raise FailedPrecondition(
                f"time going backwards: at_s={t!r} is before the chip's current time {self.now_s!r}"
            )
        return t

    def _check_array(self, array: int, allow_diff: bool = False) -> Array:
        try:
            a = Array(int(array))
        except (ValueError, TypeError):
            raise InvalidArgument(
                f"unknown array {array!r}: expected POS (0), NEG (1) or BOTH (3)"
            ) from None
        if a is Array.DIFF and not allow_diff:
            raise InvalidArgument("array DIFF is only valid for probe: expected POS, NEG or BOTH")
        return a

    def _check_devices(self, array: int, devices: object) -> tuple[np.ndarray, np.ndarray]:
        """Validate (array, devices): per-device array (int8) and index within its array."""
        arr = self._check_array(array)
        n = self.config.tile_rows * self.config.tile_cols
        if arr is Array.BOTH:
            flat = self._check_indices(devices, 2 * n, "devices")
            a, idx = np.divmod(flat, n)
            arrays = a.astype(np.int8)
        else:
            idx = self._check_indices(devices, n, "devices")
            arrays = np.full(idx.size, int(arr), np.int8)
        return arrays, idx

    def _check_indices(self, idx: object, limit: int, name: str) -> np.ndarray:
        if not isinstance(idx, np.ndarray) or idx.ndim != 1:
            raise InvalidArgument(f"{name} must be a 1-D integer numpy array")
        if idx.dtype.kind not in "iu":
            raise InvalidArgument(f"{name} must hold integers, got {idx.dtype}")
        if idx.size == 0:
            raise InvalidArgument(f"{name} is empty")
        if idx.min() < 0 or idx.max() >= limit:
            raise InvalidArgument(f"{name} out of range: expected 0..{limit - 1}")
        out = idx.astype(np.int64)
        # callers mostly pass sorted indices (np.flatnonzero): an O(n) check, sort otherwise
        if out.size > 1 and not np.all(out[1:] > out[:-1]):
            s = np.sort(out)
            if np.any(s[1:] == s[:-1]):
                raise InvalidArgument(f"{name} contains duplicates")
        return out

    def _check_cols(self, col_start: int, col_count: int | None) -> slice:
        """Validate a column range; returns it as a slice."""
        cols = self.config.tile_cols
        if isinstance(col_start, bool) or not isinstance(col_start, int | np.integer):
            raise InvalidArgument(f"col_start must be an integer >= 0, got {col_start!r}")
        if col_start < 0:
            raise InvalidArgument(f"col_start must be an integer >= 0, got {col_start!r}")
        n = cols - col_start if col_count is None else col_count
        if isinstance(n, bool) or not isinstance(n, int | np.integer) or n < 1:
            raise InvalidArgument(f"col_count must be an integer >= 1, got {col_count!r}")
        if col_start + n > cols:
            raise InvalidArgument(
                f"columns {col_start}..{col_start + n - 1} out of range: the tile has {cols}"
            )
        return slice(int(col_start), int(col_start + n))

    def _check_targets(self, g: np.ndarray, name: str, shape: tuple[int, ...]) -> np.ndarray:
        _check_float_array(g, name, shape)
        if g.size and (g.min() < 0 or g.max() > self.config.g_max_us):
            raise InvalidArgument(
                f"{name} out of range: conductances must lie in [0, {self.config.g_max_us}] uS"
            )
        return g

    # --- shared machinery -----------------------------------------------------------------
    def _op_seeds(self, n: int) -> list[int]:
        """Seeds for the random draws of the next operation (counter based)."""
        return derive_seeds(n, self.config.seed, self.op_counter)

    def _commit(self, kind: str, tile: int, at_s: float, cost: Cost, devices: int, pulses: int):
        self.now_s = at_s
        self.op_counter += 1
        self.ledger.record(kind, cost, devices=devices, pulses=pulses)

    def _age_s(self, tile: int, arr: int | slice, at_s: float) -> np.ndarray:
        return (at_s - self.t_write_s[tile, arr]).astype(np.float32)

    def _tile_flat(self, tile: int, array: np.ndarray, index: np.ndarray) -> np.ndarray:
        """Positions of devices in the raveled (n_tiles, 2, rows, cols) state arrays."""
        n = self.config.tile_rows * self.config.tile_cols
        return (2 * tile + array.astype(np.int64)) * n + index

    def _read_flat(
        self, flat: np.ndarray, at_s: float, gen: torch.Generator | None
    ) -> torch.Tensor:
        """Conductance (with fresh read noise when ``gen`` is given) of devices by position."""
        g = torch.from_numpy(self.g_prog_us.reshape(-1).take(flat))
        nu = torch.from_numpy(self.nu.reshape(-1).take(flat))
        age = torch.from_numpy((at_s - self.t_write_s.reshape(-1).take(flat)).astype(np.float32))
        return self.physics.read(g, nu, age, gen)

    def _read_state(
        self, tile: int, arr, sel, at_s: float, gen: torch.Generator | None
    ) -> torch.Tensor:
        """Conductance (with fresh read noise when ``gen`` is given) of selected devices."""
        g = torch.from_numpy(np.ascontiguousarray(self.g_prog_us[tile, arr][sel]))
        nu = torch.from_numpy(np.ascontiguousarray(self.nu[tile, arr][sel]))
        age = torch.from_numpy(np.ascontiguousarray(at_s - self.t_write_s[tile, arr][sel])).float()
        return self.physics.read(g, nu, age, gen)

    def _apply_writes(self, w: DeviceWrites) -> None:
        flat = self._tile_flat(w.tile, w.array, w.index)
        self.g_prog_us.reshape(-1)[flat] = w.g_prog_us
        self.nu.reshape(-1)[flat] = w.nu
        self.t_write_s.reshape(-1)[flat] = w.t_write_s
        self.tile_version[w.tile] += 1

    def apply_writes(self, writes: DeviceWrites) -> None:
        """Replay recorded writes (restore from a write-ahead log); no random draws."""
        self._apply_writes(writes)

    # --- writes ---------------------------------------------------------------------------
    def _program(
        self, kind: str, tile: int, array: np.ndarray, index: np.ndarray, g_target: np.ndarray,
        at_s: float,
    ) -> OpResult:  # fmt: skip
        (seed,) = self._op_seeds(1)
        g_target = g_target.astype(np.float32)
        g_prog, nu = self.physics.program_state(g_target, seed)
        its = self.physics.verify_iterations(g_target)
        cost = self.energy_model.program(g_target, its)
        writes = DeviceWrites(tile, array.astype(np.int8), index, g_prog, nu, at_s)
        self._apply_writes(writes)
        n = int(g_target.size)
        pulses = n + int(its.sum())
        self._commit(kind, tile, at_s, cost, n, pulses)
        return OpResult(
            kind, tile, at_s, devices=n, pulses=pulses, iterations=int(its.sum()),
            energy_pj=cost.energy_pj, latency_s=cost.latency_s, writes=writes,
        )  # fmt: skip

    def program(
        self, tile: int, g_target_pos_us: np.ndarray, g_target_neg_us: np.ndarray, at_s: float
    ) -> OpResult:
        """Program-and-verify a whole tile from RESET to the target conductances (rows, cols)."""
        tile = self._check_tile(tile, need_programmed=False)
        at_s = self._check_time(at_s)
        self._check_targets(g_target_pos_us, "g_target_pos_us", self.shape)
        self._check_targets(g_target_neg_us, "g_target_neg_us", self.shape)
        n = self.config.tile_rows * self.config.tile_cols
        target = np.stack([g_target_pos_us, g_target_neg_us]).reshape(-1)
        array = np.repeat(np.arange(2, dtype=np.int8), n)
        index = np.tile(np.arange(n, dtype=np.int64), 2)
        result = self._program("program", tile, array, index, target, at_s)
        self.programmed[tile] = True
        return result

    def program_devices(
        self, tile: int, array: int, devices: np.ndarray, g_target_us: np.ndarray, at_s: float
    ) -> OpResult:
        """Program-and-verify chosen devices (see ``Array`` for how they are addressed)."""
        tile = self._check_tile(tile)
        at_s = self._check_time(at_s)
        arrays, idx = self._check_devices(array, devices)
        self._check_targets(g_target_us, "g_target_us", idx.shape)
        return self._program("program", tile, arrays, idx, g_target_us, at_s)

    def apply_pulses(
        self,
        tile: int,
        array: int,
        devices: np.ndarray,
        kind: int,
        count: int | np.ndarray,
        at_s: float,
    ) -> OpResult:
        """Apply ``count`` SET or RESET pulses to devices (see ``Array`` for addressing).

        A SET pulse acts on the device's drifted conductance at ``at_s``; any write restarts
        drift (``t_write_s = at_s``, ``nu`` redrawn for the new conductance).
        """
        tile = self._check_tile(tile)
        at_s = self._check_time(at_s)
        arrays, idx = self._check_devices(array, devices)
        try:
            pk = PulseKind(int(kind))
        except (ValueError, TypeError):
            raise InvalidArgument(
                f"unknown pulse kind {kind!r}: expected SET (0) or RESET (1)"
            ) from None
        counts = np.asarray(count)
        if counts.dtype.kind not in "iu" or counts.ndim > 1:
            raise InvalidArgument("count must be an integer or a 1-D integer array")
        counts = np.broadcast_to(counts, idx.shape) if counts.ndim == 0 else counts
        if counts.shape != idx.shape:
            raise InvalidArgument(f"count has shape {counts.shape}, expected {idx.shape}")
        limit = self.config.pulse.max_pulses_per_call
        if counts.min() < 1 or counts.max() > limit:
            raise InvalidArgument(f"count out of range: expected 1..{limit} pulses per device")
        counts = counts.astype(np.int64)

        (s_pulse, s_nu) = self._op_seeds(2)
        rng = np.random.default_rng(s_pulse)
        params = self.pulse_model.device_params(tile, arrays, idx)
        if pk is PulseKind.SET:
            g_now = self._read_flat(self._tile_flat(tile, arrays, idx), at_s, None).numpy()
            g_new = self.pulse_model.apply_set(g_now, counts, params, rng)
        else:
            g_new = self.pulse_model.apply_reset(params, rng)
        nu = self.physics.drift_coefficients(g_new, s_nu)
        cost = self.energy_model.pulses(counts, reset=pk is PulseKind.RESET)
        writes = DeviceWrites(tile, arrays, idx, g_new, nu, at_s)
        self._apply_writes(writes)
        n_pulses = int(counts.sum())
        op = "set_pulse" if pk is PulseKind.SET else "reset_pulse"
        self._commit(op, tile, at_s, cost, idx.size, n_pulses)
        return OpResult(
            op, tile, at_s, devices=idx.size, pulses=n_pulses, energy_pj=cost.energy_pj,
            latency_s=cost.latency_s, writes=writes,
        )  # fmt: skip

    # --- reads ----------------------------------------------------------------------------
    def read_devices(
        self, tile: int, array: int, devices: np.ndarray | None, at_s: float
    ) -> OpResult:
        """Conductance (uS) of devices at ``at_s``, with fresh 1/f read noise.

        ``devices=None`` reads every device of the array, as (rows, cols), or (2, rows, cols)
        for ``BOTH``."""
        tile = self._check_tile(tile)
        at_s = self._check_time(at_s)
        if devices is None:
            arr = self._check_array(array)
            arr_sel = slice(None) if arr is Array.BOTH else int(arr)
        else:
            flat = self._tile_flat(tile, *self._check_devices(array, devices))
        (seed,) = self._op_seeds(1)
        gen = torch_generator(seed)
        if devices is None:
            g = self._read_state(tile, arr_sel, slice(None), at_s, gen).numpy()
        else:
            g = self._read_flat(flat, at_s, gen).numpy()
        cost = self.energy_model.read_devices(g)
        self._commit("read_devices", tile, at_s, cost, g.size, 0)
        return OpResult(
            "read_devices", tile, at_s, devices=g.size, energy_pj=cost.energy_pj,
            latency_s=cost.latency_s, values=g,
        )  # fmt: skip

    def probe(
        self,
        tile: int,
        rows: np.ndarray,
        array: int,
        at_s: float,
        col_start: int = 0,
        col_count: int | None = None,
    ) -> OpResult:
        """Identity-input read of ``rows`` through the probe periphery.

        Only columns ``col_start .. col_start+col_count-1`` are converted (default: all from
        ``col_start``): a monitor that knows where its weights are reads only those.

        Returns ADC codes (int16, shape (len(rows), cols), or (2, len(rows), cols) for BOTH,
        which probes G+ and then G-) and ``scale_us``: codes * scale_us is the conductance
        (POS, NEG, BOTH) or conductance difference (DIFF) in uS.
        """
        tile = self._check_tile(tile)
        at_s = self._check_time(at_s)
        arr = self._check_array(array, allow_diff=True)
        r = self._check_indices(rows, self.config.tile_rows, "rows")
        csl = self._check_cols(col_start, col_count)
        (seed_read, seed_adc) = self._op_seeds(2)
        gen = torch_generator(seed_read)
        g_max = self.config.g_max_us
        passes = r.size
        if arr is Array.DIFF:
            g_pair = self._read_state(tile, slice(None), (slice(None), r, csl), at_s, gen)
            y = (g_pair[0] - g_pair[1]) / g_max
            g_read = g_pair.numpy()
        elif arr is Array.BOTH:
            g_pair = self._read_state(tile, slice(None), (slice(None), r, csl), at_s, gen)
            y = g_pair / g_max
            g_read = g_pair.numpy()
            passes = 2 * r.size
        else:
            g = self._read_state(tile, int(arr), (r, csl), at_s, gen)
            y = g / g_max
            g_read = g.numpy()
        with seeded_global_torch(seed_adc):
            codes, step = self._periphery(tile).probe_readout(y)
        cost = self.energy_model.probe(passes, g_read, csl.stop - csl.start)
        self._commit("probe", tile, at_s, cost, g_read.size, 0)
        return OpResult(
            "probe", tile, at_s, devices=g_read.size, energy_pj=cost.energy_pj,
            latency_s=cost.latency_s, values=codes, scale_us=step * g_max,
        )  # fmt: skip

    def _periphery(self, tile: int, rows: int | None = None, cols: int | None = None):
        """The periphery of a tile, or of a (rows, cols) block of it, created on first use."""
        shape = (rows or self.config.tile_rows, cols or self.config.tile_cols)
        p = self._peripheries.get((tile, shape))
        if p is None:
            p = TilePeriphery(self.config.periphery, *shape)
            self._peripheries[(tile, shape)] = p
        return p

    def _weights_seed(self, tile: int, at_s: float) -> int:
        """Seed of the read-noise realisation of a tile's MVM weights at one instant."""
        t_bits = int(np.float64(at_s).view(np.uint64))
        return derive_seeds(
            1, self.config.seed, 0x3E1F, tile, int(self.tile_version[tile]), t_bits
        )[0]

    def effective_weights(self, tile: int, at_s: float) -> tuple[torch.Tensor, np.ndarray]:
        """(cols, rows) effective weights (G+ - G-)/g_max at ``at_s``, one read-noise draw,
        and the per-row sum of G+ and G- (uS, for the read energy).

        As with aihwkit's ``drift_analog_weights(t)``, one realisation of the read noise holds
        for all MVMs of a tile at the same instant. It is a function of (seed, tile, the
        tile's writes, at_s) alone, so the cache below is a pure memo: a restored chip draws
        the same realisation without anything recorded.
        """
        key = (at_s, int(self.tile_version[tile]))
        cached = self._w_eff_cache.get(tile)
        if cached is not None and cached[0] == key:
            return cached[1], cached[2]
        gen = torch_generator(self._weights_seed(tile, at_s))
        g = self._read_state(tile, slice(None), slice(None), at_s, gen)
        w = ((g[0] - g[1]) / self.config.g_max_us).T.contiguous()
        g_row_sum = (g[0] + g[1]).sum(dim=1, dtype=torch.float64).numpy()
        self._w_eff_cache[tile] = (key, w, g_row_sum)
        return w, g_row_sum

    def mvm(
        self,
        tile: int,
        x: np.ndarray,
        at_s: float,
        row_start: int = 0,
        col_start: int = 0,
        col_count: int | None = None,
    ) -> OpResult:
        """Analog matrix-vector products at ``at_s`` on a block of the tile.

        ``x`` (batch, k) drives rows ``row_start .. row_start+k-1`` (the other rows get 0 V);
        outputs are read from columns ``col_start .. col_start+col_count-1`` (default: all
        from ``col_start``). The block goes through aihwkit's forward periphery as one tile.
        """
        tile = self._check_tile(tile)
        at_s = self._check_time(at_s)
        rows, cols = self.shape
        _check_float_array(x, "x")
        if x.ndim != 2 or x.shape[0] == 0 or x.shape[1] == 0:
            raise InvalidArgument(f"x has shape {x.shape}, expected (batch >= 1, inputs >= 1)")
        if isinstance(row_start, bool) or not isinstance(row_start, int | np.integer):
            raise InvalidArgument(f"row_start must be an integer >= 0, got {row_start!r}")
        if row_start < 0:
            raise InvalidArgument(f"row_start must be an integer >= 0, got {row_start!r}")
        k = x.shape[1]
        if row_start + k > rows:
            raise InvalidArgument(
                f"x drives rows {row_start}..{row_start + k - 1}, but the tile has {rows} rows"
            )
        csl_out = self._check_cols(col_start, col_count)
        n_out = csl_out.stop - csl_out.start
        (seed_mvm,) = self._op_seeds(1)
        w_full, g_row_sum = self.effective_weights(tile, at_s)
        rsl, csl = slice(row_start, row_start + k), slice(col_start, col_start + n_out)
        w = w_full[csl, rsl]
        per = self._periphery(tile, k, int(n_out))
        per.load_weights(w, (at_s, int(self.tile_version[tile]), row_start, col_start))
        with np.errstate(over="ignore"):
            x32 = np.ascontiguousarray(x, dtype=np.float32)
        if x.dtype != np.float32 and not np.all(np.isfinite(x32)):
            raise InvalidArgument("x has values beyond the float32 range the periphery takes")
        xt = torch.from_numpy(x32)
        with seeded_global_torch(seed_mvm):
            y = per.mvm(xt).numpy()
        xa = np.abs(xt.numpy())
        x_norm = xa / np.maximum(xa.max(axis=1, keepdims=True), 1e-30)
        g_block_rows = g_row_sum[rsl] if n_out == cols else None
        if g_block_rows is None:
            g_block_rows = self._block_row_sum(tile, at_s, rsl, csl)
        cost = self.energy_model.mvm(x_norm, g_block_rows, k, int(n_out))
        self._commit("mvm", tile, at_s, cost, 2 * k * int(n_out), 0)
        return OpResult(
            "mvm", tile, at_s, devices=2 * k * int(n_out),
            energy_pj=cost.energy_pj, latency_s=cost.latency_s, values=y,
        )  # fmt: skip

    def _block_row_sum(self, tile: int, at_s: float, rsl: slice, csl: slice) -> np.ndarray:
        g = self.physics.drifted(
            torch.from_numpy(self.g_prog_us[tile, :, rsl, csl]),
            torch.from_numpy(self.nu[tile, :, rsl, csl]),
            torch.from_numpy(self._age_s(tile, slice(None), at_s)[:, rsl, csl]),
        )
        return g.sum(dim=(0, 2), dtype=torch.float64).numpy()

    # --- introspection ----------------------------------------------------------------------
    def advance(self, at_s: float) -> None:
        """Move the chip's clock forward without touching devices (drift is lazy)."""
        self.now_s = self._check_time(at_s)

    @property
    def state_bytes(self) -> int:
        return self.g_prog_us.nbytes + self.nu.nbytes + self.t_write_s.nbytes
