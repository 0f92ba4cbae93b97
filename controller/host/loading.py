"""Loading a network on the chip host, outside its lock: the network mapped on a chip, its
policy built, the words of a load's refusals, what programming cost, and where the network
sits on the chip (GetNetwork).

Everything here is checked before the chip host touches the twin, so that a refused load
changes nothing; every refusal names the request field at fault (``field=``/``violations=``,
answered as ``google.rpc.BadRequest`` field violations by ``pcmtwin.status``).
"""

from __future__ import annotations

import copy
import json
import math
from typing import Any

import numpy as np
import pydantic

from controller.firmware.policies import BUILTIN, PolicyLoadError, PolicyParamsInvalid, load_policy
from controller.firmware.quantities import PROGRAM
from controller.host.errors import PermissionDenied
from controller.workloads.mapping import fit_chip, map_network
from device_twin.config import ChipConfig
from device_twin.errors import InvalidArgument, ResourceExhausted
from pcmtwin.status import invalid_argument

#: Annealing moves per layer a LoadNetwork may ask for (the paper's schedule needs 150).
MAX_ANNEALING_MOVES = 1_000_000


# --- the policy -------------------------------------------------------------------------------
def parse_params(params_json: str) -> dict[str, Any]:
    """A policy's JSON parameters (``policy.params_json``) as a dict."""
    if not params_json:
        return {}
    try:
        params = json.loads(params_json)
    except json.JSONDecodeError as exc:
        raise InvalidArgument(f"policy params_json is not valid JSON: {exc}",
                              field="policy.params_json") from None  # fmt: skip
    if not isinstance(params, dict):
        raise InvalidArgument("policy params_json must be a JSON object of parameters, e.g. "
                              '{"interval_s": "1h"}', field="policy.params_json")  # fmt: skip
    return params


def build_policy(name: str, params: dict[str, Any], allow_user_policies: bool) -> Any:
    """The policy ``name`` with ``params``; refused with every parameter at fault named."""
    if name not in BUILTIN and ":" in name and not allow_user_policies:
        raise PermissionDenied(
            f"policy {name!r} is not a built-in ({', '.join(BUILTIN)}), and this server "
            "does not load user policies (start it with --allow-user-policies)",
            field="policy.name",
        )
    try:
        return load_policy(name, params)
    except PolicyParamsInvalid as exc:  # each parameter at fault, as a field violation
        violations = [("policy.params_json", f"{k}: {m}" if k else m) for k, m in exc.problems]
        raise InvalidArgument(str(exc), violations=violations) from None
    except PolicyLoadError as exc:
        raise InvalidArgument(str(exc), field="policy.name") from None


def policy_json(description: Any) -> str:
    """A policy's description (name and parameters) as JSON."""
    return json.dumps(description, default=str)


# --- the network on a chip ---------------------------------------------------------------------
def map_on_chip(description: Any, quantiser: Any, cfg: ChipConfig) -> tuple[ChipConfig, Any]:
    """The chip config with the tiles ``description`` needs, and the network mapped on it."""
    annealing = getattr(quantiser, "annealing", None)
    if annealing is not None:
        moves = int(annealing.n_steps) * int(annealing.moves_per_step)
        if moves > MAX_ANNEALING_MOVES:
            raise ResourceExhausted(
                f"annealing of {annealing.n_steps} steps x {annealing.moves_per_step} moves "
                f"per layer is over this host's limit of {MAX_ANNEALING_MOVES:,} moves",
                field="quantiser",
            )
    try:
        cfg = fit_chip(description, cfg)
    except pydantic.ValidationError as exc:  # e.g. more tiles than a chip may have
        raise invalid_argument(exc, "chip_config_json", "the chip this network needs") from None
    try:
        return cfg, map_network(description, quantiser, cfg)
    except ValueError as exc:
        raise InvalidArgument(f"cannot map the network on the chip: {exc}",
                              field="network") from None  # fmt: skip


def twin_is_full(exc: Exception, name: str, chip_id: str) -> ResourceExhausted:
    """The refusal of a load the twin has no room for next to the running network."""
    return ResourceExhausted(
        f"the twin refused the new chip: {exc}. The network {name!r} keeps running on chip "
        f"{chip_id}: the twin must hold it and the new chip at once while the new one is "
        "programmed; make room on the twin (its other chips), give it a larger "
        "--state-budget-bytes or --max-chips, or load with make_room (the running network is "
        "unloaded first)",
        field="make_room",
    )


def after_make_room(exc: Exception, unloaded: str) -> Exception:
    """``exc`` (same class and status) saying that the running network was unloaded to make
    room (``make_room``) and that no network is loaded now."""
    said = (f"{exc}. The network {unloaded!r} was unloaded to make room (make_room): no "
            "network is loaded now")  # fmt: skip
    out = copy.copy(exc)
    out.args = (said,)
    return out


def program_cost(model: Any, mapped: Any) -> dict[str, Any]:
    """What programming the network did: devices programmed (whole tiles), devices holding
    a weight, and the twin energy (from the model's ledger)."""
    programs = [e for e in model.ledger.events if e.kind == PROGRAM]
    return {
        "devices_programmed": int(sum(e.devices for e in programs)),
        "devices_in_use": 2 * model.firmware.pairs_per_weight * int(mapped.n_weights_on_chip()),
        "program_energy_pj": float(sum(e.energy_pj for e in programs)),
    }


# --- where the network sits (GetNetwork) ------------------------------------------------------
def layout(mapped: Any, chip_id: str, include_weights: bool) -> dict[str, Any]:
    """The analog layers of ``mapped``, each with its blocks on tiles (see host.proto's
    ``NetworkLayout``), and, with ``include_weights``, its quantised weight."""
    desc = mapped.description
    every = desc.walk()  # the analog layers' indices are into this list
    quantised = (mapped.quantised or desc).walk()
    layers = []
    for name, al in mapped.layers.items():
        layer = every[al.index]
        blocks = [
            {"tile": tm.tile, "row_offset": tm.row_offset, "col_offset": tm.col_offset,
             "rows": tm.block_rows, "cols": tm.block_cols, "layer_row_start": tm.row_range[0],
             "layer_col_start": tm.col_range[0]}
            for tm in mapped.layer_tiles(name)
        ]  # fmt: skip
        q = al.quantisation
        entry = {
            "index": al.index, "name": name, "kind": layer.kind, "rows": al.rows,
            "cols": al.cols, "blocks": blocks, "out_scale": float(al.out_scale),
            "q_pos_us": float(q.q_pos_us or 0.0), "q_neg_us": float(q.q_neg_us or 0.0),
        }  # fmt: skip
        if include_weights:
            w = quantised[al.index].weight.to_numpy()
            entry["weight"] = np.asarray(w, np.float32)
        layers.append(entry)
    return {
        "network": desc.name, "chip_id": chip_id, "quantiser": mapped.quantiser,
        "tile_rows": mapped.tile_rows, "tile_cols": mapped.tile_cols,
        "g_max_us": float(mapped.g_max_us), "layers": layers,
        "weights_on_chip": int(mapped.n_weights_on_chip()),
        "tiles": sorted({tm.tile for tm in mapped.tiles}),
    }  # fmt: skip


def weights_bytes(layout_: dict[str, Any]) -> int:
    """Bytes the weights of a layout take (float32)."""
    return sum(4 * math.prod(layer["weight"].shape) for layer in layout_["layers"]
               if "weight" in layer)  # fmt: skip
