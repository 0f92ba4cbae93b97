"""The chip host's answers as ChipHost messages: status, events, the network's layout, the
catalogue of policies and quantisers, the config schemas.

Plain data from :class:`~controller.host.chip_host.ChipHost` and
:mod:`~controller.host.catalogue` in, ``pcmtwin.v1.host_pb2`` messages out; nothing here
decides anything. Status fields are only ever added (a dashboard reads them).
"""

from __future__ import annotations

import json
from typing import Any

from controller.firmware import Event
from pcmtwin import codec
from pcmtwin.v1 import host_pb2


def advance_to_proto(a: dict[str, Any] | None) -> host_pb2.AdvanceProgress:
    if not a:
        return host_pb2.AdvanceProgress()
    return host_pb2.AdvanceProgress(
        state=host_pb2.AdvanceState.Value(f"ADVANCE_STATE_{a['state']}"),
        from_s=float(a["from_s"]), target_s=float(a["target_s"]), reached_s=float(a["reached_s"]),
        fraction=float(a["fraction"]), wall_s=float(a["wall_s"]),
        monitor_wakeups=int(a["monitor_wakeups"]),
    )  # fmt: skip


def status_to_proto(s: dict[str, Any]) -> host_pb2.ChipStatus:
    msg = host_pb2.ChipStatus(
        sim_time_s=float(s.get("sim_time_s", 0.0)),
        loaded=bool(s.get("loaded", False)),
        network=s.get("network", ""),
        chip_id=s.get("chip_id", ""),
        policy=str(s.get("policy", "")),
        policy_json=s.get("policy_json", ""),
        corrections=int(s.get("corrections", 0)),
        devices_corrected=int(s.get("devices_corrected", 0)),
        failed_devices=int(s.get("failed_devices", 0)),
        correction_pulses=int(s.get("correction_pulses", 0)),
        energy_by_kind_pj={k: float(v) for k, v in s.get("energy_by_kind_pj", {}).items()},
        twin_energy_pj=float(s.get("twin_energy_pj", 0.0)),
        controller_energy_pj=float(s.get("controller_energy_pj", 0.0)),
        availability=float(s.get("availability", 1.0)),
        monitor_wakeups=int(s.get("monitor_wakeups", 0)),
        inferences=int(s.get("inferences", 0)),
        inference_latency_s_mean=float(s.get("inference_latency_s_mean", 0.0)),
        inference_latency_s_max=float(s.get("inference_latency_s_max", 0.0)),
        error=s.get("error") or "",
        realtime_factor=float(s.get("realtime_factor", 0.0)),
        last_event_seq=int(s.get("last_event_seq", 0)),
        upkeep_energy_pj=float(s.get("upkeep_energy_pj", 0.0)),
        advance=advance_to_proto(s.get("advance")),
        twin_reachable=bool(s.get("twin_reachable", True)),
        twin_unreachable_s=float(s.get("twin_unreachable_s", 0.0)),
        stale=bool(s.get("stale", False)),
    )
    if s.get("next_wake_s") is not None:
        msg.next_wake_s = float(s["next_wake_s"])
    for tile, d in sorted(s.get("drift", {}).items()):
        msg.drift.add(tile=int(tile), at_s=float(d["at_s"]), drift_metric=float(d["drift_metric"]),
                      max_distance=float(d["max_distance"]), rows=int(d["rows"]))  # fmt: skip
    return msg


def event_to_proto(ev: Event) -> host_pb2.LedgerEvent:
    return host_pb2.LedgerEvent(
        seq=ev.seq, end_s=ev.end_s, start_s=ev.start_s, kind=ev.kind, tile=ev.tile,
        devices=ev.devices, pulses=ev.pulses, energy_pj=ev.energy_pj,
        controller_energy_pj=ev.controller_energy_pj, policy=ev.policy,
        detail_json=json.dumps(ev.detail, default=str),
    )  # fmt: skip


def layout_to_proto(lay: dict[str, Any]) -> host_pb2.NetworkLayout:
    msg = host_pb2.NetworkLayout(
        network=lay["network"], chip_id=lay["chip_id"], quantiser=lay["quantiser"],
        tile_rows=lay["tile_rows"], tile_cols=lay["tile_cols"], g_max_us=lay["g_max_us"],
        weights_on_chip=lay["weights_on_chip"], tiles=lay["tiles"],
    )  # fmt: skip
    for layer in lay["layers"]:
        fields = {k: v for k, v in layer.items() if k not in ("blocks", "weight")}
        out = msg.layers.add(**fields)
        for b in layer["blocks"]:
            out.blocks.add(**b)
        if "weight" in layer:
            out.weight.CopyFrom(codec.numpy_to_tensor(layer["weight"]))
    return msg


def policies_to_proto(entries: list[dict[str, Any]], user_policies_allowed: bool):
    msg = host_pb2.ListPoliciesResponse(user_policies_allowed=user_policies_allowed)
    for e in entries:
        info = msg.policies.add(name=e["name"], summary=e["summary"],
                                params_schema_json=json.dumps(e["params_schema"]))  # fmt: skip
        for p in e["parameters"]:
            info.parameters.add(name=p["name"], type=p["type"], unit=p["unit"],
                                default_json=p["default_json"], default_text=p["default_text"],
                                description=p["description"])  # fmt: skip
    return msg


def quantisers_to_proto(entries: list[dict[str, Any]], default_kind: str):
    msg = host_pb2.ListQuantisersResponse(default_kind=default_kind)
    for e in entries:
        msg.quantisers.add(kind=e["kind"], summary=e["summary"],
                           config_schema_json=json.dumps(e["config_schema"]))  # fmt: skip
    return msg


def schemas_to_proto(schemas: dict[str, dict[str, Any]]) -> host_pb2.ConfigSchemas:
    return host_pb2.ConfigSchemas(**{k: json.dumps(v) for k, v in schemas.items()})
