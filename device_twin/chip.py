"""An emulated chip: tiles of differential device pairs, and the operations on them.

Per device the chip keeps ``g_prog`` (uS, right after its last write, float32), ``nu`` (the
device family's parameter: PCM's drift exponent, float32), ``t_write_s`` (device time of its
last write, float64) and ``write_count`` (its writes so far, uint32; keys its random draws):
20 bytes. State arrays have shape (tiles, arrays, rows, cols), an array being
``2*pair + sign`` (G+ = 0, G- = 1 of the first pair; ``pairs_per_weight`` pairs per weight,
each operation names its pair, default 0; an MVM combines them as sum_k F^k (G+_k - G-_k),
see ``reads.effective_weights``). Drift is lazy: nothing happens as
time passes; a read evaluates the family's law for the devices it reads. Every operation
takes ``at_s``, the device time at which it happens; per chip, time never goes backwards.

Randomness is keyed by what is drawn (``device_twin.rng``): a write by the device and its
write number, read noise by the device and the instant (``device_twin.flicker``), periphery
noise by (tile, operation kind, instant, the call's number at that instant). So looking at a
chip (MVMs, probes, device reads) never changes a device's later draws, and a restored chip
continues exactly. ``op_counter`` only counts operations. Every operation validates its whole
request before it changes anything, so a refused request leaves the chip as it was.

Modules: ``validation`` (request checks), ``reads`` (device reads, MVM weights), ``writes``
(program-and-verify, pulses), ``program_verify`` (a correction job's closed loop),
``families`` (device statistics), ``pulses`` (pulse response, saturation, programming cost),
``energy`` (costs and ledger), ``op_result`` (what every operation returns).
"""

from __future__ import annotations

import numpy as np
import torch

from device_twin import program_verify as pv
from device_twin import reads, writes
from device_twin.config import ChipConfig
from device_twin.energy import Cost, EnergyLedger, EnergyModel, mvm_driven_g_us
from device_twin.families import make_family
from device_twin.flicker import FlickerNoise
from device_twin.op_result import OpResult
from device_twin.periphery import TilePeriphery
from device_twin.pulses import PulseModel
from device_twin.rng import PERIPHERY, derive_key, seeded_global_torch, time_bits
from device_twin.unroll import ConvGeometry, unrolled_blocks
from device_twin.validation import (
    MAX_TIME_S,
    Array,
    PulseKind,
    check_addresses,
    check_array,
    check_cols,
    check_conv_block,
    check_conv_input,
    check_devices,
    check_indices,
    check_mvm_input,
    check_pair,
    check_pulses,
    check_targets,
    check_tile,
    check_time,
)
from device_twin.writes import DeviceWrites

__all__ = ["MAX_TIME_S", "Array", "Chip", "DeviceWrites", "OpResult", "PulseKind"]

_PERIPHERY_KINDS = {"probe": 1, "mvm": 2}


class Chip:
    """An emulated chip (see the module docstring)."""

    def __init__(self, config: ChipConfig) -> None:
        self.config = c = config
        self.family = make_family(c.device, c.g_max_us)
        self.pulse_model = PulseModel(self.family.pulse, c.seed, c.g_max_us, self.family.g_floor_us)
        self.flicker = FlickerNoise(c.seed, self.family.t_read_s, c.tile_rows * c.tile_cols)
        self.energy_model = EnergyModel(
            c.energy, c.g_max_us, c.tile_cols, self.family.write_energy, self.family.t_read_s
        )
        self.ledger = EnergyLedger()
        self.n_arrays = c.n_arrays
        shape = (c.n_tiles, self.n_arrays, c.tile_rows, c.tile_cols)
        # np.zeros maps untouched pages lazily: an unwritten tile costs no memory.
        self.g_prog_us = np.zeros(shape, np.float32)
        self.nu = np.zeros(shape, np.float32)
        self.t_write_s = np.zeros(shape, np.float64)
        self.write_count = np.zeros(shape, np.uint32)
        self.programmed = np.zeros(c.n_tiles, bool)
        self.tile_version = np.zeros(c.n_tiles, np.int64)
        self.now_s = 0.0
        self.op_counter = 0
        #: (tile, kind) -> (instant, number of that instant's last periphery call)
        self.periphery_calls: dict[tuple[int, str], tuple[float, int]] = {}
        self.w_eff_cache: dict[int, tuple] = {}
        self._block_rows: dict[tuple, tuple] = {}  # MVM block -> (its key, row conductance sums)
        self._peripheries: dict[tuple, TilePeriphery] = {}
        self._nominal_response: pv.NominalPulseResponse | None = None

    # --- addressing and shared machinery ------------------------------------------------
    @property
    def shape(self) -> tuple[int, int]:
        return (self.config.tile_rows, self.config.tile_cols)

    def positions(self, tile: int, array: np.ndarray | int, index: np.ndarray) -> np.ndarray:
        """Positions of devices in the raveled (tiles, arrays, rows, cols) state arrays."""
        n = self.config.tile_rows * self.config.tile_cols
        return (self.n_arrays * tile + np.asarray(array, np.int64)) * n + index

    def _tile(self, tile: object, need_programmed: bool = True) -> int:
        return check_tile(self.config, self.programmed, tile, need_programmed)

    def _periphery_seed(self, tile: int, kind: str, at_s: float) -> int:
        """Seed of a periphery call's noise: (seed, tile, kind, instant, its number then)."""
        last = self.periphery_calls.get((tile, kind))
        seq = last[1] + 1 if last is not None and last[0] == at_s else 0
        return derive_key(self.config.seed, PERIPHERY, tile, _PERIPHERY_KINDS[kind],
                          time_bits(at_s), seq)  # fmt: skip

    def record_periphery_call(self, tile: int, kind: str, at_s: float) -> None:
        last = self.periphery_calls.get((tile, kind))
        seq = last[1] + 1 if last is not None and last[0] == at_s else 0
        self.periphery_calls[(tile, kind)] = (at_s, seq)

    def _commit(self, kind: str, tile: int, at_s: float, cost: Cost, devices: int, pulses: int,
                periphery: bool = True):  # fmt: skip
        """Book a done operation; ``periphery=False``: its periphery calls are recorded."""
        self.now_s = at_s
        self.op_counter += 1
        if periphery and kind in _PERIPHERY_KINDS:
            self.record_periphery_call(tile, kind, at_s)
        self.ledger.record(kind, cost, devices=devices, pulses=pulses)

    def _apply_writes(self, w: DeviceWrites) -> None:
        flat = self.positions(w.tile, w.array, w.index)
        if flat.size and flat[-1] - flat[0] == flat.size - 1 and np.all(np.diff(flat) == 1):
            flat = slice(int(flat[0]), int(flat[-1]) + 1)  # a whole tile: no scatter
        self.g_prog_us.reshape(-1)[flat] = w.g_prog_us
        self.nu.reshape(-1)[flat] = w.nu
        self.t_write_s.reshape(-1)[flat] = w.t_write_s
        if w.write_count is None:  # a log written before write counts were kept
            self.write_count.reshape(-1)[flat] += np.uint32(1)
        else:
            self.write_count.reshape(-1)[flat] = w.write_count
        self.tile_version[w.tile] += 1

    def apply_writes(self, writes: DeviceWrites) -> None:
        """Replay recorded writes (restore from a write-ahead log); no random draws."""
        self._apply_writes(writes)

    # --- writes ---------------------------------------------------------------------------
    def _program(self, tile: int, array: np.ndarray, index: np.ndarray, g_target: np.ndarray,
                 at_s: float, failed_address: np.ndarray) -> OpResult:  # fmt: skip
        out = writes.program(self, tile, array, index, g_target, at_s)
        cost = self.energy_model.program(g_target.astype(np.float32), out.pulses, out.reads)
        self._apply_writes(out.writes)
        n = int(index.size)
        pulses = n + int(out.pulses.sum())
        iterations = int(out.reads.sum())
        self._commit("program", tile, at_s, cost, n, pulses)
        return OpResult(
            "program", tile, at_s, devices=n, pulses=pulses, iterations=iterations,
            energy_pj=cost.energy_pj, latency_s=cost.latency_s, writes=out.writes,
            failed=failed_address[out.failed],
        )  # fmt: skip

    def program(
        self,
        tile: int,
        g_target_pos_us: np.ndarray,
        g_target_neg_us: np.ndarray,
        at_s: float,
        pair: int = 0,
    ) -> OpResult:
        """Program-and-verify a pair of a tile (both arrays, every device) from RESET to the
        target conductances (rows, cols). A tile counts as programmed once any of its pairs is;
        a pair never programmed holds 0 uS."""
        tile = self._tile(tile, need_programmed=False)
        at_s = check_time(self.now_s, at_s)
        pair = check_pair(self.config, pair)
        check_targets(self.config, g_target_pos_us, "g_target_pos_us", self.shape)
        check_targets(self.config, g_target_neg_us, "g_target_neg_us", self.shape)
        n = self.config.tile_rows * self.config.tile_cols
        target = np.stack([g_target_pos_us, g_target_neg_us]).reshape(-1)
        array = np.repeat(np.arange(2 * pair, 2 * pair + 2, dtype=np.int8), n)
        index = np.tile(np.arange(n, dtype=np.int64), 2)
        result = self._program(tile, array, index, target, at_s, np.arange(2 * n))
        self.programmed[tile] = True
        return result

    def program_devices(
        self,
        tile: int,
        array: int,
        devices: np.ndarray,
        g_target_us: np.ndarray,
        at_s: float,
        pair: int = 0,
    ) -> OpResult:
        """Program-and-verify chosen devices of a pair (see ``Array`` for how they are
        addressed).

        On a tile never programmed, only these devices are written; the tile's others stay
        as made (RESET, 0 uS, no drift) and the tile counts as programmed from then on."""
        tile = self._tile(tile, need_programmed=False)
        at_s = check_time(self.now_s, at_s)
        arrays, idx = check_devices(self.config, array, devices, pair)
        check_targets(self.config, g_target_us, "g_target_us", idx.shape)
        addr = devices.astype(np.int64)  # type: ignore[union-attr]
        result = self._program(tile, arrays, idx, g_target_us, at_s, addr)
        self.programmed[tile] = True
        return result

    def apply_pulses(
        self,
        tile: int,
        array: int,
        devices: np.ndarray,
        kind: int,
        count: int | np.ndarray,
        at_s: float,
        pair: int = 0,
    ) -> OpResult:
        """Apply ``count`` SET or RESET pulses to devices of a pair (see ``Array``).

        A SET pulse acts on the device's drifted conductance at ``at_s``, only ever raises it
        and never above its own bound; any write restarts drift (``t_write_s = at_s``, the
        family's parameter redrawn for the new conductance).
        """
        tile = self._tile(tile)
        at_s = check_time(self.now_s, at_s)
        arrays, idx = check_devices(self.config, array, devices, pair)
        pk, counts = check_pulses(self.config, kind, count, idx.size)
        reset = pk is PulseKind.RESET
        w = writes.pulse(self, tile, arrays, idx, reset, counts, at_s)
        cost = self.energy_model.pulses(counts, reset=reset)
        self._apply_writes(w)
        n_pulses = int(counts.sum())
        op = "reset_pulse" if reset else "set_pulse"
        self._commit(op, tile, at_s, cost, idx.size, n_pulses)
        return OpResult(
            op, tile, at_s, devices=idx.size, pulses=n_pulses, energy_pj=cost.energy_pj,
            latency_s=cost.latency_s, writes=w,
        )  # fmt: skip

    def program_verify(
        self,
        tile: int,
        arrays: np.ndarray,
        devices: np.ndarray,
        g_target_us: np.ndarray,
        job: pv.VerifyJob,
        at_s: float,
        g_read_us: np.ndarray | None = None,
    ) -> OpResult:
        """Run a correction job's program-and-verify loop on the twin (``program_verify``).

        Device i is (``arrays[i]``, ``devices[i]``): its array index (``2*pair + sign``) and
        its flat index ``row*cols + col``. ``g_read_us``: the caller's own read of the devices
        at ``at_s`` standing in for the loop's first read. The chip's clock stays at ``at_s``;
        the result's latency is how long the tile is busy."""
        tile = self._tile(tile)
        at_s = check_time(self.now_s, at_s)
        job = pv.check_job(job, self.config.pulse.max_pulses_per_call)
        a, idx = check_addresses(self.config, self.n_arrays, arrays, devices)
        target = check_targets(self.config, g_target_us, "g_target_us", idx.shape)
        first = pv.check_first_read(g_read_us, idx.size)
        if self._nominal_response is None:
            self._nominal_response = pv.NominalPulseResponse(self.pulse_model)
        out = pv.run(self, tile, a, idx, target.astype(np.float32), job, first, at_s,
                     self._nominal_response)  # fmt: skip
        w = pv.final_writes(self, tile, a[out.written], idx[out.written])
        self._commit("program_verify", tile, at_s, out.cost, idx.size, out.pulses)
        return OpResult(
            "program_verify", tile, at_s, devices=idx.size, pulses=out.pulses,
            iterations=out.inner_reads, energy_pj=out.cost.energy_pj,
            latency_s=out.cost.latency_s, values=out.deviation, writes=w,
            failed=np.flatnonzero(out.failed), verify=out.stats,
        )  # fmt: skip

    # --- reads ----------------------------------------------------------------------------
    def read_devices(
        self, tile: int, array: int, devices: np.ndarray | None, at_s: float, pair: int = 0
    ) -> OpResult:
        """Conductance (uS) of devices of a pair at ``at_s``, with the 1/f read noise of that
        instant.

        ``devices=None`` reads every device of the array, as (rows, cols), or (2, rows, cols)
        for ``BOTH``."""
        tile = self._tile(tile)
        at_s = check_time(self.now_s, at_s)
        if devices is None:
            arr = check_array(array)
            base = 2 * check_pair(self.config, pair)
            which = [base, base + 1] if arr is Array.BOTH else [base + int(arr)]
            g = torch.stack([reads.read_array(self, tile, a, at_s, True) for a in which])
            g = g if arr is Array.BOTH else g[0]
        else:
            arrays, idx = check_devices(self.config, array, devices, pair)
            g = reads.read_selected(self, tile, arrays, idx, at_s, True)
        values = g.numpy()
        cost = self.energy_model.read_devices(values)
        self._commit("read_devices", tile, at_s, cost, values.size, 0)
        return OpResult(
            "read_devices", tile, at_s, devices=values.size, energy_pj=cost.energy_pj,
            latency_s=cost.latency_s, values=values,
        )  # fmt: skip

    def probe(
        self,
        tile: int,
        rows: np.ndarray,
        array: int,
        at_s: float,
        col_start: int = 0,
        col_count: int | None = None,
        pair: int = 0,
    ) -> OpResult:
        """Identity-input read of ``rows`` of a pair through the probe periphery.

        Only columns ``col_start .. col_start+col_count-1`` are converted (default: all from
        ``col_start``): a monitor that knows where its weights are reads only those.

        Returns ADC codes (int16, shape (len(rows), cols), or (2, len(rows), cols) for BOTH,
        which probes G+ and then G-) and ``scale_us``: codes * scale_us is the conductance
        (POS, NEG, BOTH) or conductance difference (DIFF) in uS.
        """
        tile = self._tile(tile)
        at_s = check_time(self.now_s, at_s)
        arr = check_array(array, allow_diff=True)
        r = check_indices(rows, self.config.tile_rows, "rows")
        csl = check_cols(self.config, col_start, col_count)
        base = 2 * check_pair(self.config, pair)
        g_max = self.config.g_max_us
        both = arr in (Array.DIFF, Array.BOTH)
        which = [base, base + 1] if both else [base + int(arr)]
        g = reads.read_block(self, tile, which, r, csl, at_s)
        if arr is Array.DIFF:
            y = (g[0] - g[1]) / g_max
        else:
            y = g / g_max if arr is Array.BOTH else g[0] / g_max
        passes = 2 * r.size if arr is Array.BOTH else r.size
        with seeded_global_torch(self._periphery_seed(tile, "probe", at_s)):
            codes, step = self._periphery(tile).probe_readout(y)
        g_read = g.numpy()
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

    def effective_weights(self, tile: int, at_s: float) -> tuple[torch.Tensor, np.ndarray]:
        """(cols, rows) effective weights sum_k F^k (G+_k - G-_k)/g_max at ``at_s`` and the
        per-row sum of every device's conductance (``reads``)."""
        return reads.effective_weights(self, tile, at_s)

    def _mvm_block(self, tile: int, at_s: float, row_start: int, k: int, csl: slice):
        """The periphery of a block (rows ``row_start .. +k``, columns ``csl``) holding its
        effective weights at ``at_s``, and the block's per-row conductance sums (read energy)."""
        w_full, g_row_sum = reads.effective_weights(self, tile, at_s)
        rsl = slice(row_start, row_start + k)
        n_out = csl.stop - csl.start
        per = self._periphery(tile, k, n_out)
        key = (at_s, int(self.tile_version[tile]), row_start, csl.start)
        per.load_weights(w_full[csl, rsl], key)
        if n_out == self.config.tile_cols:
            return per, g_row_sum[rsl]
        block = (tile, row_start, k, csl.start, n_out)
        cached = self._block_rows.get(block)
        if cached is None or cached[0] != key:
            cached = (key, reads.block_row_sum(self, tile, at_s, rsl, csl))
            self._block_rows[block] = cached
        return per, cached[1]

    def _mvm_pass(self, tile, at_s, per, g_rows: np.ndarray, x: torch.Tensor) -> tuple:
        """One MVM of the inputs ``x`` through a loaded block: (outputs, cost). Each is a
        periphery call of its own (its own noise key)."""
        with seeded_global_torch(self._periphery_seed(tile, "mvm", at_s)):
            y = per.mvm(x)
        self.record_periphery_call(tile, "mvm", at_s)
        g_driven = mvm_driven_g_us(x, g_rows)
        return y, self.energy_model.mvm(x.shape[0], x.shape[1], per.cols, g_driven)

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
        tile = self._tile(tile)
        at_s = check_time(self.now_s, at_s)
        x32, row_start = check_mvm_input(self.config, x, row_start)
        csl = check_cols(self.config, col_start, col_count)
        k, n_out = x32.shape[1], csl.stop - csl.start
        per, g_rows = self._mvm_block(tile, at_s, row_start, k, csl)
        y, cost = self._mvm_pass(tile, at_s, per, g_rows, torch.from_numpy(x32))
        self._commit("mvm", tile, at_s, cost, self.n_arrays * k * n_out, 0, periphery=False)
        return OpResult(
            "mvm", tile, at_s, devices=self.n_arrays * k * n_out,
            energy_pj=cost.energy_pj, latency_s=cost.latency_s, values=y.numpy(),
        )  # fmt: skip

    def conv_mvm(
        self,
        tile: int,
        x: np.ndarray,
        at_s: float,
        geometry: ConvGeometry,
        patch_start: int,
        k: int,
        row_start: int = 0,
        col_start: int = 0,
        col_count: int | None = None,
        rows_per_mvm: int = 0,
    ) -> OpResult:
        """A convolution's MVMs at ``at_s``: the activation ``x`` (N, C, H, W) is unrolled
        here (``device_twin.unroll``), columns ``patch_start .. patch_start+k-1`` of its
        unrolled rows drive rows ``row_start .. row_start+k-1``, and the outputs of columns
        ``col_start ..`` come back as (N*Ho*Wo, col_count), one row per (image, position).

        The unrolled rows go through the periphery ``rows_per_mvm`` at a time (0: as many
        as keep an MVM under 8 MiB, ``validation.check_conv_block``), each block one MVM
        exactly as ``mvm`` would run it (same noise keys, energy and latency): the result
        equals ``mvm`` calls on those blocks of the unrolled rows.
        """
        tile = self._tile(tile)
        at_s = check_time(self.now_s, at_s)
        x32 = check_conv_input(x)
        csl = check_cols(self.config, col_start, col_count)
        n_out = csl.stop - csl.start
        row_start, patch_start, k, rows_per_mvm, (ho, wo) = check_conv_block(
            self.config, x32.shape, geometry, row_start, patch_start, k, n_out, rows_per_mvm
        )
        n_rows = x32.shape[0] * ho * wo
        per, g_rows = self._mvm_block(tile, at_s, row_start, k, csl)
        y = np.empty((n_rows, n_out), np.float32)
        cost = Cost()
        blocks = unrolled_blocks(torch.from_numpy(x32), geometry, patch_start, k, rows_per_mvm)
        r0 = 0
        for block in blocks:
            yb, c = self._mvm_pass(tile, at_s, per, g_rows, block)
            y[r0 : r0 + block.shape[0]] = yb.numpy()
            r0 += block.shape[0]
            cost.energy_pj += c.energy_pj
            cost.latency_s += c.latency_s
        self._commit("mvm", tile, at_s, cost, self.n_arrays * k * n_out, 0, periphery=False)
        return OpResult(
            "mvm", tile, at_s, devices=self.n_arrays * k * n_out,
            energy_pj=cost.energy_pj, latency_s=cost.latency_s, values=y,
        )  # fmt: skip

    # --- introspection ----------------------------------------------------------------------
    def advance(self, at_s: float) -> None:
        """Move the chip's clock forward without touching devices (drift is lazy)."""
        self.now_s = check_time(self.now_s, at_s)

    @property
    def state_bytes(self) -> int:
        return (self.g_prog_us.nbytes + self.nu.nbytes + self.t_write_s.nbytes
                + self.write_count.nbytes)  # fmt: skip
