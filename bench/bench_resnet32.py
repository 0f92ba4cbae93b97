"""ResNet-32 through the twin: what one evaluation costs, and the whole study.

``resnet32_eval_*``: a forward pass of Fashion-MNIST test images through ResNet-32 (464,144
weights, 62 tiles of 256 x 256) with every MVM through the twin's periphery, measured side by
side in one process: on an in-process ``Chip`` (the floor a run can reach without gRPC), over
loopback gRPC to an embedded twin as the scenario runner does (convolutions sent as their
activation, ``ConvMvm``), and over gRPC with the convolutions unrolled by the controller and
sent as ``Mvm`` rows (the way before ``ConvMvm``). CPU time of the process (client and
embedded server) is the figure (the machine is shared; wall time follows the load), per
image; the gRPC records carry the in-process one as their baseline. ``profile_split`` says
where the in-process time goes.

``resnet32_study_wall``: ``pcm-twin run scenarios/joshi_resnet32.yaml`` end to end in a
subprocess with an empty trained-weights cache (training included), wall and CPU time and the
load average, against the issue's 30-minute target. It takes about 55 minutes of two quiet
cores (measured 2026-12-01), more than the rest of ``make bench`` together, so it runs only
when asked:
``make bench-study`` (``PCM_TWIN_BENCH_STUDY=1 python -m bench resnet32``).
"""

from __future__ import annotations

import cProfile
import os
import pstats
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from controller.scenario.pool import sim_threads
from controller.scenario.twin import twin_client
from controller.workloads.chip_mvm import ChipMVM, chip_mvm
from controller.workloads.datasets import load_dataset
from controller.workloads.mapping import MappedNetwork, map_network, program_mapped
from controller.workloads.network import NetworkDescription
from controller.workloads.resnet import resnet32
from device_twin import Chip, ChipConfig

REPO = Path(__file__).resolve().parent.parent
STUDY = REPO / "scenarios" / "joshi_resnet32.yaml"
STUDY_TARGET_S = 30 * 60.0


def _rec(name: str, value: float, unit: str, target: float | None = None, **extra: Any) -> dict:
    return {"name": name, "value": value, "unit": unit, "target": target,
            "baseline_name": None, "baseline_value": None, "ratio": None, **extra}  # fmt: skip


def _network() -> MappedNetwork:
    torch.manual_seed(0)  # a random ResNet-32: the cost does not depend on the weights' values
    desc = NetworkDescription.from_torch(resnet32().eval(), (1, 28, 28), name="resnet32")
    return map_network(desc, "none", ChipConfig(n_tiles=62, seed=1))


def _forward_cpu_s(mapped: MappedNetwork, x: torch.Tensor, mvm_at: Any) -> tuple[float, float]:
    """(CPU seconds, wall seconds) of one forward pass of ``x``, after a small warm-up."""
    mapped.forward(x[:4], mvm_at(1.0))
    c0, t0 = time.process_time(), time.perf_counter()
    mapped.forward(x, mvm_at(2.0))
    return time.process_time() - c0, time.perf_counter() - t0


def eval_records(n_images: int = 200) -> list[dict]:
    """Per-image CPU time of a ResNet-32 forward pass in process and over loopback gRPC (with
    ``ConvMvm``, and with the convolutions unrolled by the controller)."""
    mapped = _network()
    x = load_dataset("fashion_mnist").test.x[:n_images]
    config = ChipConfig(n_tiles=62, seed=1)
    with sim_threads():
        chip = Chip(config)
        program_mapped(mapped, chip, 0.0)
        local_cpu, local_wall = _forward_cpu_s(mapped, x, lambda at: chip_mvm(chip, at))
        with twin_client() as client:
            cid = client.create_chip(config)
            for tm in mapped.tiles:
                client.program(cid, tm.tile, tm.g_target_pos_us, tm.g_target_neg_us, at_s=0.0)

            def over_grpc(at: float, conv: bool = True) -> Any:
                mvm = ChipMVM(_Bound(client, cid), at)
                return mvm if conv else (lambda t, xx, r, c, n: mvm(t, xx, r, c, n))

            grpc_cpu, grpc_wall = _forward_cpu_s(mapped, x, over_grpc)
            # later instants on the same chip: its clock only moves forward
            rows_cpu, rows_wall = _forward_cpu_s(mapped, x, lambda at: over_grpc(at + 2.0, False))
    local = _rec("resnet32_eval_in_process_ms_per_image", 1e3 * local_cpu / n_images, "ms CPU",
                 images=n_images, wall_ms_per_image=1e3 * local_wall / n_images)  # fmt: skip
    out = [local]
    for name, cpu, wall in (("resnet32_eval_grpc_ms_per_image", grpc_cpu, grpc_wall),
                            ("resnet32_eval_grpc_im2col_rows_ms_per_image", rows_cpu,
                             rows_wall)):  # fmt: skip
        r = _rec(name, 1e3 * cpu / n_images, "ms CPU", images=n_images,
                 wall_ms_per_image=1e3 * wall / n_images)  # fmt: skip
        out.append(r | {"baseline_name": local["name"], "baseline_value": local["value"],
                        "ratio": r["value"] / local["value"]})  # fmt: skip
    out[1]["target"] = 1.5  # the gRPC-to-in-process target for MVMs
    out[1]["target_on"] = "ratio"
    return out


class _Bound:
    """A ``TwinClient`` bound to one chip: ``mvm`` and ``conv_mvm`` with ``Chip``'s arguments."""

    def __init__(self, client: Any, chip_id: str) -> None:
        self.client, self.chip_id = client, chip_id

    def mvm(self, *args: Any) -> Any:
        return self.client.mvm(self.chip_id, *args)

    def conv_mvm(self, *args: Any) -> Any:
        return self.client.conv_mvm(self.chip_id, *args)


def profile_split(n_images: int = 100) -> dict[str, float]:
    """Where an in-process forward pass spends its CPU time (seconds per image by part)."""
    mapped = _network()
    chip = Chip(ChipConfig(n_tiles=62, seed=1))
    program_mapped(mapped, chip, 0.0)
    x = load_dataset("fashion_mnist").test.x[:n_images]
    with sim_threads():
        mapped.forward(x[:4], chip_mvm(chip, 1.0))
        prof = cProfile.Profile(time.process_time)
        prof.runcall(mapped.forward, x, chip_mvm(chip, 2.0))
    stats = pstats.Stats(prof).stats  # type: ignore[attr-defined]

    def cum(fn: str, file_part: str) -> float:
        return sum(v[3] for k, v in stats.items() if k[2] == fn and file_part in k[0])

    total = cum("forward", "workloads/mapping.py")
    parts = {
        "twin_mvm": cum("conv_mvm", "device_twin/chip.py") + cum("mvm", "device_twin/chip.py"),
        "periphery": cum("mvm", "device_twin/periphery.py"),
        "im2col": cum("im2col", "device_twin/unroll.py"),
        "weights_at_instant": cum("effective_weights", "device_twin/reads.py"),
    }
    parts["controller_other"] = total - parts["twin_mvm"]
    return {k: v / n_images for k, v in {"total": total, **parts}.items()}


def study_records() -> list[dict]:
    """The study end to end from a cold trained-weights cache, in a subprocess."""
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "PCM_TWIN_CACHE_DIR": str(Path(tmp) / "cache")}
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        load0 = os.getloadavg()
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "controller.cli", "run", str(STUDY), "--out",
                        str(Path(tmp) / "run"), "--workers", "2"],
                       env=env, check=True, stdout=subprocess.DEVNULL)  # fmt: skip
        wall = time.perf_counter() - t0
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return [_rec("resnet32_study_wall", wall, "s", STUDY_TARGET_S, cpu_s=cpu,
                 load_average_start=load0, load_average_end=os.getloadavg())]  # fmt: skip


def run() -> list[dict]:
    out = eval_records()
    split = profile_split()
    out[0]["split_s_per_image"] = split
    if os.environ.get("PCM_TWIN_BENCH_STUDY", "0") == "1":
        out += study_records()
    return out


if __name__ == "__main__":
    for record in run():
        print(record)
