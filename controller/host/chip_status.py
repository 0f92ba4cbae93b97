"""What a chip host's status holds (GetStatus, and the status every call answers with).

The counters and totals come from the model (``ChipModel.totals``: the names of
:mod:`controller.firmware.quantities`, derived there once); the chip host adds what the host
side knows: the network, its chip, the policy's next wake-up, the twin's reachability.
Fields are only ever added (a dashboard reads them).
"""

from __future__ import annotations

import time
from typing import Any

from controller.host.loading import policy_json
from controller.host.twin_link import reachable


def twin_fields(twin: Any) -> dict[str, Any]:
    """Whether the twin answers, and for how long it has not (wall seconds)."""
    up, since = reachable(twin)
    away = 0.0 if up or since is None else time.monotonic() - since
    return {"twin_reachable": up, "twin_unreachable_s": away}


def unloaded(policy: str, realtime: float | None, lost: str | None, twin: Any) -> dict[str, Any]:
    """The status without a network (``lost``: why there is none, the twin lost the chip)."""
    return {"loaded": False, "policy": policy, "sim_time_s": 0.0,
            "realtime_factor": realtime or 0.0, "error": lost or "", **twin_fields(twin),
            "stale": False}  # fmt: skip


def loaded(
    model: Any, network: str, chip_id: str, realtime: float | None, mapped: Any
) -> dict[str, Any]:
    """The status of a running network (under the host's lock)."""
    tot = model.totals()  # sim_time_s, the counters (controller.firmware.quantities), ...
    return {
        **tot,
        "loaded": True,
        "network": network,
        "chip_id": chip_id,
        "policy": model.policy_name,
        "policy_json": policy_json(tot["policy"]),
        "drift": model.drift_metrics(),
        "tile_layers": {tm.tile: tm.layer for tm in mapped.tiles},
        "realtime_factor": realtime or 0.0,
        "last_event_seq": model.ledger.last_seq,
        "next_wake_s": model.monitor.next_wake_s,
        "stale": False,
    }


def correction(outcomes: list[Any], reports: list[Any], start_s: float, now_s: float):
    """What a triggered correction did and cost: its jobs, and its probes (twin and
    controller energy both)."""
    probe_pj = float(sum(r.energy_pj for r in reports))
    jobs_pj = sum(o.energy_pj + o.controller_energy_pj for o in outcomes)
    return {
        "jobs": len(outcomes),
        "devices": sum(o.job.devices for o in outcomes),
        "failed_devices": sum(o.n_failed for o in outcomes),
        "pulses": sum(o.pulses for o in outcomes),
        "energy_pj": jobs_pj + probe_pj,
        "probe_energy_pj": probe_pj,
        "probes": sum(len(r.tiles) for r in reports),
        "start_s": start_s,
        "end_s": max((o.end_s for o in outcomes), default=now_s),
    }
