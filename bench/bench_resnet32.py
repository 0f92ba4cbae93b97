"""ResNet-32 through the twin: what one evaluation costs, and the whole study (``make bench``).

``resnet32_eval_*``: a forward pass of Fashion-MNIST test images through ResNet-32 (464,144
weights, 62 tiles of 256 x 256) with every MVM through the twin's periphery, measured side by
side in one process: on an in-process ``Chip`` (the floor a run can reach without gRPC) and
over loopback gRPC to an embedded twin, as the scenario runner does. CPU time is the figure
(the machine is shared; wall time follows the load), per image; the gRPC record carries the
in-process one as its baseline. ``profile_split`` says where the in-process time goes.

``resnet32_study_wall``: ``pcm-twin run scenarios/joshi_resnet32.yaml`` end to end in a
subprocess with an empty trained-weights cache (training included), wall and CPU time, against
the issue's 30-minute target. It takes about an hour on two idle cores: set
``PCM_TWIN_BENCH_STUDY=0`` to leave it out.
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
from controller.workloads.datasets import load_dataset
from controller.workloads.mapping import MappedNetwork, chip_mvm, map_network, program_mapped
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
    """Per-image CPU time of a ResNet-32 forward pass in process and over loopback gRPC."""
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

            def over_grpc(at: float) -> Any:
                return lambda t, xx, r, c, n: client.mvm(cid, t, xx, at, r, c, n).values

            grpc_cpu, grpc_wall = _forward_cpu_s(mapped, x, over_grpc)
    local = _rec("resnet32_eval_in_process_ms_per_image", 1e3 * local_cpu / n_images, "ms CPU",
                 images=n_images, wall_ms_per_image=1e3 * local_wall / n_images)  # fmt: skip
    grpc = _rec("resnet32_eval_grpc_ms_per_image", 1e3 * grpc_cpu / n_images, "ms CPU",
                images=n_images, wall_ms_per_image=1e3 * grpc_wall / n_images)  # fmt: skip
    grpc |= {"baseline_name": local["name"], "baseline_value": local["value"],
             "ratio": grpc["value"] / local["value"]}  # fmt: skip
    return [local, grpc]


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
        "twin_mvm": cum("mvm", "device_twin/chip.py"),
        "aihwkit_periphery": cum("mvm", "device_twin/periphery.py"),
        "twin_energy_model": cum("mvm", "device_twin/energy.py"),
        "im2col": cum("im2col", "workloads/mapping.py"),
    }
    parts["controller_other"] = total - parts["twin_mvm"] - parts["im2col"]
    return {k: v / n_images for k, v in {"total": total, **parts}.items()}


def study_records() -> list[dict]:
    """The study end to end from a cold trained-weights cache, in a subprocess."""
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "PCM_TWIN_CACHE_DIR": str(Path(tmp) / "cache")}
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "controller.cli", "run", str(STUDY), "--out",
                        str(Path(tmp) / "run"), "--workers", "2"],
                       env=env, check=True, stdout=subprocess.DEVNULL)  # fmt: skip
        wall = time.perf_counter() - t0
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return [_rec("resnet32_study_wall", wall, "s", STUDY_TARGET_S, cpu_s=cpu,
                 load_average=os.getloadavg())]  # fmt: skip


def run() -> list[dict]:
    out = eval_records()
    split = profile_split()
    out[0]["split_s_per_image"] = split
    if os.environ.get("PCM_TWIN_BENCH_STUDY", "1") != "0":
        out += study_records()
    return out


if __name__ == "__main__":
    for record in run():
        print(record)
