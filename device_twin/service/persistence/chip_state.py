"""What the state directory stores of one chip, and how it becomes a chip again.

A snapshot holds each chip's clock (``now_s``), operation count (``op_counter``), per-tile
flags and versions, energy ledger, the numbers of the periphery calls made at the current
instant, and, per programmed tile, the device arrays ``g_prog_us``, ``nu``, ``t_write_s``
and ``write_count``. Randomness is keyed by what is drawn (``device_twin.rng``), so these
arrays and call numbers are the chip's whole random state. A log record of an operation holds
its result (``OpResult``, with the device writes it made) and what it did to the chip's
clock, tile and ledger; ``replay_op`` applies it without random draws. ``ChipExtra`` is what
the durable registry keeps per chip besides the chip: the results of its last requests, for
retries, with a digest of each request (a request id reused for another request is refused,
not answered).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from device_twin.chip import Chip, DeviceWrites, OpResult
from device_twin.config import ChipConfig
from device_twin.energy import EnergyLedger, LedgerEntry
from device_twin.errors import InvalidArgument
from device_twin.program_verify import VerifyStats

#: Results remembered per chip for retried requests (the last one is always kept; older
#: ones only while their data stays under ``RECENT_RESULT_BYTES``).
RECENT_RESULTS = 16
RECENT_RESULT_BYTES = 8 * 1024**2
#: The device arrays a snapshot stores per programmed tile.
TILE_ARRAYS = ("g_prog_us", "nu", "t_write_s", "write_count")


def result_header(r: OpResult) -> dict[str, Any]:
    return {
        "kind": r.kind, "tile": int(r.tile), "at_s": float(r.at_s), "devices": int(r.devices),
        "pulses": int(r.pulses), "iterations": int(r.iterations),
        "energy_pj": float(r.energy_pj), "latency_s": float(r.latency_s),
        "scale_us": None if r.scale_us is None else float(r.scale_us),
        "has_failed": r.failed is not None,
        "verify": None if r.verify is None else r.verify.header(),
    }  # fmt: skip


def result_from(
    h: dict[str, Any], values: np.ndarray | None, failed: np.ndarray | None = None,
    verify_t_write_s: np.ndarray | None = None,
) -> OpResult:  # fmt: skip
    if failed is None and h.get("has_failed"):
        failed = np.zeros(0, np.int64)
    verify = None
    if h.get("verify") is not None:
        t_write = None if verify_t_write_s is None else verify_t_write_s.copy()
        verify = VerifyStats(**h["verify"], t_write_s=t_write)
    return OpResult(
        h["kind"], h["tile"], h["at_s"], devices=h["devices"], pulses=h["pulses"],
        iterations=h["iterations"], energy_pj=h["energy_pj"], latency_s=h["latency_s"],
        values=None if values is None else values.copy(), scale_us=h["scale_us"],
        failed=None if failed is None else failed.copy(), verify=verify,
    )  # fmt: skip


@dataclass
class ChipExtra:
    """What the durable registry keeps per chip besides the Chip itself."""

    recent: OrderedDict[str, OpResult] = field(default_factory=OrderedDict)
    #: request id -> digest of the request it named ("": not known, e.g. an older log)
    digests: dict[str, str] = field(default_factory=dict)

    def remember(self, request_id: str, result: OpResult, digest: str = "") -> None:
        if not request_id:
            return
        self.recent[request_id] = result
        self.recent.move_to_end(request_id)
        self.digests[request_id] = digest
        n_bytes = sum(0 if r.values is None else r.values.nbytes for r in self.recent.values())
        while len(self.recent) > RECENT_RESULTS or (
            len(self.recent) > 1 and n_bytes > RECENT_RESULT_BYTES
        ):
            rid, old = self.recent.popitem(last=False)
            self.digests.pop(rid, None)
            n_bytes -= 0 if old.values is None else old.values.nbytes

    def answer(self, request_id: str, digest: str) -> OpResult | None:
        """The remembered result of a retried request (None: not one of the last requests);
        ``InvalidArgument`` if the id named another request (its digest differs)."""
        if not request_id or request_id not in self.recent:
            return None
        check_same_request(request_id, self.digests.get(request_id, ""), digest,
                           self.recent[request_id].kind)  # fmt: skip
        return self.recent[request_id]


def _scheme(digest: str) -> str:
    """A digest's hash scheme: its prefix before ``:`` (none: the blake2b of older logs)."""
    return digest.partition(":")[0] if ":" in digest else "blake2b"


def check_same_request(request_id: str, first: str, now: str, first_kind: str) -> None:
    """Refuse a request id that names another request than the one it was first used for
    (either digest empty: not known, accepted; digests of different hash schemes, e.g. one
    from a log written by an older version: not comparable, accepted)."""
    if first and now and _scheme(first) == _scheme(now) and first != now:
        raise InvalidArgument(
            f"request_id {request_id!r} already named another request on this twin (a "
            f"{first_kind}): a retry must repeat its request exactly; give a new request a new "
            "request_id",
            field="request_id",
        )


@dataclass
class ChipCopy:
    """A consistent in-memory copy of one chip, taken for a snapshot."""

    chip_id: str
    meta: dict[str, Any]
    tiles: list[tuple[int, dict[str, np.ndarray]]]
    recent: list[tuple[str, OpResult]]
    digests: dict[str, str] = field(default_factory=dict)


def copy_chip(chip_id: str, chip: Chip, extra: ChipExtra) -> ChipCopy:
    meta = {
        "t": "chip", "chip": chip_id, "config": chip.config.model_dump_json(),
        "now_s": float(chip.now_s), "op_counter": int(chip.op_counter),
        "programmed": [bool(p) for p in chip.programmed],
        "tile_version": [int(v) for v in chip.tile_version],
        "ledger": chip.ledger.to_dict(),
        "periphery_calls": [[t, kind, seq] for (t, kind), (at, seq)
                            in sorted(chip.periphery_calls.items()) if at == chip.now_s],
    }  # fmt: skip
    tiles = [
        (int(t), {name: getattr(chip, name)[t].copy() for name in TILE_ARRAYS})
        for t in np.flatnonzero(chip.programmed)
    ]
    return ChipCopy(chip_id, meta, tiles, list(extra.recent.items()), dict(extra.digests))


def restore_chip(
    meta: dict[str, Any], tiles: list[tuple[dict, dict[str, np.ndarray]]]
) -> tuple[Chip, ChipExtra]:
    chip = Chip(ChipConfig.model_validate_json(meta["config"]))
    chip.now_s = float(meta["now_s"])
    chip.op_counter = int(meta["op_counter"])
    chip.programmed[:] = np.asarray(meta["programmed"], bool)
    chip.tile_version[:] = np.asarray(meta["tile_version"], np.int64)
    chip.ledger = EnergyLedger.from_dict(meta["ledger"])
    for t, kind, seq in meta.get("periphery_calls", []):
        chip.periphery_calls[(int(t), str(kind))] = (chip.now_s, int(seq))
    for h, arrays in tiles:
        t = h["tile"]
        for name in TILE_ARRAYS:
            if name in arrays:  # snapshots of format 1 have no write counts
                getattr(chip, name)[t] = arrays[name]
    return chip, ChipExtra()


def op_record(
    chip_id: str, chip: Chip, k: int, r: OpResult, request_id: str, digest: str = ""
) -> tuple[dict[str, Any], dict[str, np.ndarray], bool]:
    """The log record of operation ``k`` on a chip (header, arrays) and whether to fsync it.

    Device writes are fsync-ed (they change devices); reads are not (see the package doc).
    """
    tile = int(r.tile)
    header = {
        "t": "op", "chip": chip_id, "rid": request_id, "digest": digest, "k": k,
        **result_header(r),
        "now_s": float(chip.now_s), "op_counter": int(chip.op_counter),
        "programmed": bool(chip.programmed[tile]),
        "tile_version": int(chip.tile_version[tile]),
        "ledger": chip.ledger.to_dict().get(r.kind),
    }  # fmt: skip
    calls = chip.periphery_calls.get((tile, r.kind))
    if calls is not None and calls[0] == r.at_s:  # a convolution makes several MVM calls
        header["periphery_seq"] = calls[1]
    arrays: dict[str, np.ndarray] = {}
    w = r.writes
    if w is not None:
        arrays = {"array": w.array, "index": w.index, "g_prog_us": w.g_prog_us, "nu": w.nu}
        if np.ndim(w.t_write_s):  # program_verify: each device its own write instant
            header["t_write_s"] = None
            arrays["t_write_s"] = np.asarray(w.t_write_s, np.float64)
        else:
            header["t_write_s"] = float(w.t_write_s)
        if w.write_count is not None:
            arrays["write_count"] = w.write_count
    if r.values is not None:
        arrays["values"] = r.values
    if r.failed is not None:
        arrays["failed"] = r.failed
    if r.verify is not None and r.verify.t_write_s is not None:
        arrays["verify_t_write_s"] = r.verify.t_write_s
    return header, arrays, w is not None


def replay_op(chip: Chip, h: dict[str, Any], arrays: dict[str, np.ndarray]) -> OpResult:
    """Apply a logged operation to its chip (no random draws); returns its recorded result.

    The caller checks that the record is the chip's next operation (``h["k"]``).
    """
    tile = h["tile"]
    if "t_write_s" in h:
        t_write = h["t_write_s"] if h["t_write_s"] is not None else arrays["t_write_s"]
        chip.apply_writes(DeviceWrites(
            tile, arrays["array"], arrays["index"], arrays["g_prog_us"], arrays["nu"],
            t_write, arrays.get("write_count"),
        ))  # fmt: skip
    if "periphery_seq" in h:
        chip.periphery_calls[(tile, h["kind"])] = (h["at_s"], h["periphery_seq"])
    elif h["kind"] in ("probe", "mvm"):  # a record written before periphery_seq was kept
        chip.record_periphery_call(tile, h["kind"], h["at_s"])
    chip.programmed[tile] = h["programmed"]
    chip.tile_version[tile] = h["tile_version"]
    chip.now_s = h["now_s"]
    chip.op_counter = h["op_counter"]
    if h["ledger"] is not None:
        chip.ledger.by_kind[h["kind"]] = LedgerEntry(**h["ledger"])
    return result_from(h, arrays.get("values"), arrays.get("failed"),
                       arrays.get("verify_t_write_s"))  # fmt: skip
