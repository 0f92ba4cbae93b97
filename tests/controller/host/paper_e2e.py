"""The paper's experiment through the two services, as host software would run it.

A twin server process and a chip host server process on loopback; the host side uses only
the generated ChipHost stubs (plus the workloads package for the trained network and the test
images). For each policy: load ``paper_cnn`` (multiplicative quantisation), then at 1 s, 1 h,
1 day, 1 month and 1 year advance device time to T and infer on the 1,000 test images. An
inference made at T runs before the correction scheduled at T, so it sees the worst point of
the correction cycle; a second inference a second later (``after``) sees the corrected chip.

``python -m tests.controller.host.paper_e2e --seeds 3`` measures the README's table (mean of the
seeds); ``tests/controller/host/test_paper_e2e.py`` runs one seed.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import grpc
import numpy as np

from pcmtwin.v1 import host_pb2, host_pb2_grpc
from tests.controller.servers import ServerProcess, from_tensor, tensor

ONE_THREAD = {"OMP_NUM_THREADS": "1"}

YEAR_S = 365.25 * 86400.0
TIMES_S = {"1 s": 1.0, "1 h": 3600.0, "1 day": 86400.0, "1 month": YEAR_S / 12, "1 year": YEAR_S}
#: The chip: the paper's g_max and device model, tiles of 256 rows (every layer fits) and 16
#: columns (no layer has more than 12 outputs: a probe reads only what holds weights).
CHIP = {"tile_rows": 256, "tile_cols": 16}
MAX_MESSAGE = 64 * 1024**2


def run_policy(stub: Any, network: Any, x: np.ndarray, y: np.ndarray, policy: str,
               params: dict[str, Any], seed: int) -> dict[str, Any]:  # fmt: skip
    """One policy on one chip seed: accuracy at each time (before and after the correction)."""
    t0 = time.perf_counter()
    stub.LoadNetwork(host_pb2.LoadNetworkRequest(
        network=network, quantiser="multiplicative",
        chip_config_json=json.dumps({**CHIP, "seed": seed}),
        policy=host_pb2.PolicySpec(name=policy, params_json=json.dumps(params)),
    ))  # fmt: skip
    rows = []
    for label, t_s in TIMES_S.items():
        stub.AdvanceTime(host_pb2.AdvanceTimeRequest(to_s=t_s))
        acc = _accuracy(stub, x, y, f"{label} (before correction)")
        stub.AdvanceTime(host_pb2.AdvanceTimeRequest(to_s=t_s + 1.0))
        acc_after = _accuracy(stub, x, y, f"{label} (after correction)")
        s = stub.GetStatus(host_pb2.GetStatusRequest())
        rows.append({
            "time": label, "scheduled_s": t_s, "accuracy": acc, "accuracy_after": acc_after,
            "corrections": s.corrections, "devices_corrected": s.devices_corrected,
            "failed_devices": s.failed_devices, "correction_pulses": s.correction_pulses,
            "upkeep_energy_pj": s.upkeep_energy_pj,
            "energy_correction_pj": s.energy_by_kind_pj.get("correction", 0.0),
            "energy_probe_pj": s.energy_by_kind_pj.get("probe", 0.0),
            "availability": s.availability, "error": s.error,
        })  # fmt: skip
    return {"policy": policy, "seed": seed, "rows": rows, "wall_s": time.perf_counter() - t0}


def _accuracy(stub: Any, x: np.ndarray, y: np.ndarray, label: str) -> float:
    out = stub.Infer(host_pb2.InferRequest(x=tensor(x), label=label))
    return float((from_tensor(out.y).argmax(axis=1) == y).mean())


def run(seeds: list[int], policies: dict[str, dict[str, Any]], tmp: Path) -> list[dict]:
    from controller.workloads.datasets import load_dataset
    from controller.workloads.training import train_digital

    network = train_digital("paper_cnn").description.to_proto()
    test = load_dataset("mnist").test
    x, y = test.x.numpy().astype(np.float32), test.y.numpy()
    twin = ServerProcess(tmp, group="twin", env=ONE_THREAD)
    try:
        host = ServerProcess(tmp, "--twin", twin.address, group="chip", env=ONE_THREAD)
    except BaseException:
        twin.stop()
        raise
    channel = grpc.insecure_channel(host.address, options=[
        ("grpc.max_receive_message_length", MAX_MESSAGE),
        ("grpc.max_send_message_length", MAX_MESSAGE),
    ])  # fmt: skip
    try:
        stub = host_pb2_grpc.ChipHostStub(channel)
        return [run_policy(stub, network, x, y, p, params, s)
                for s in seeds for p, params in policies.items()]  # fmt: skip
    finally:
        channel.close()
        host.stop()
        twin.stop()


def main() -> None:
    import signal
    import sys

    # SIGTERM ends the run like Ctrl-C: the server processes are stopped on the way out
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=3, help="chip seeds 0..N-1")
    ap.add_argument("--only-seed", type=int, default=None, help="run this one seed")
    ap.add_argument("--out", type=Path, default=None, help="write the results as JSON here")
    args = ap.parse_args()
    policies = {"threshold": {"interval_s": 3600.0, "threshold": 0.05}, "none": {}, "gdc": {}}
    seeds = [args.only_seed] if args.only_seed is not None else list(range(args.seeds))
    results = run(seeds, policies, Path(tempfile.mkdtemp()))
    if args.out:
        args.out.write_text(json.dumps(results, indent=1))
    for p in policies:
        runs = [r for r in results if r["policy"] == p]
        print(
            f"\n{p} (mean of {len(runs)} seeds; wall {np.mean([r['wall_s'] for r in runs]):.0f} s each)"
        )
        for i, label in enumerate(TIMES_S):
            acc = [r["rows"][i]["accuracy"] for r in runs]
            after = [r["rows"][i]["accuracy_after"] for r in runs]
            e = np.mean([r["rows"][i]["energy_correction_pj"] for r in runs])
            print(
                f"  {label:>8}: {100 * np.mean(acc):5.1f} % (+-{100 * np.std(acc):.1f})  "
                f"after correction {100 * np.mean(after):5.1f} %  correction energy {e / 1e6:8.2f} uJ"
            )


if __name__ == "__main__":
    main()
