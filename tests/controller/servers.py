"""Servers for the ChipHost tests: in process (fast) and as real processes (end to end)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import grpc
import numpy as np
import torch
from torch import nn

from controller.host.service import ChipHostServer, HostServerOptions
from controller.workloads.network import NetworkDescription
from device_twin.service.server import ServerOptions, TwinServer
from pcmtwin.v1 import host_pb2_grpc

REPO = Path(__file__).resolve().parents[2]


def tiny_network(seed: int = 0) -> NetworkDescription:
    """Linear(16 -> 8) -> ReLU -> Linear(8 -> 4): a network that maps in a blink."""
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 4))
    return NetworkDescription.from_torch(model, (16,), name="tiny")


class InProcess:
    """A twin server and a chip host server in this process, and a host stub."""

    def __init__(
        self, token: str | None = None, twin_options: dict | None = None, **host_options
    ) -> None:
        self.twin = TwinServer(
            ServerOptions(address="127.0.0.1:0", token=token, **(twin_options or {}))
        )
        self.twin.start()
        self.host = ChipHostServer(
            HostServerOptions(
                twin_address=self.twin.address,
                address="127.0.0.1:0",
                token=token,
                twin_token=token,
                **host_options,
            )  # fmt: skip
        )
        self.host.start()
        self.channel = grpc.insecure_channel(self.host.address)
        self.stub = host_pb2_grpc.ChipHostStub(self.channel)

    def close(self) -> None:
        self.channel.close()
        self.host.stop(grace_s=0)
        self.twin.stop(grace_s=0)


class ServerProcess:
    """``python -m controller.cli <group> serve ...`` in a subprocess on a loopback port."""

    def __init__(self, tmp: Path, group: str, *args: str) -> None:
        tmp.mkdir(parents=True, exist_ok=True)
        self.port_file = tmp / f"{group}-port-{time.monotonic_ns()}"
        self.log_path = tmp / f"{group}.log"
        cmd = [sys.executable, "-m", "controller.cli", group, "serve",
               "--address", "127.0.0.1:0", "--port-file", str(self.port_file), *args]  # fmt: skip
        self._log = open(self.log_path, "ab")  # noqa: SIM115
        self.proc = subprocess.Popen(cmd, cwd=REPO, stdout=self._log, stderr=subprocess.STDOUT,
                                     env={**os.environ, "OMP_NUM_THREADS": "1"})  # fmt: skip
        deadline = time.monotonic() + 300  # a loaded machine starts Python slowly
        while not self.port_file.exists():
            if self.proc.poll() is not None:
                self._log.close()
                raise RuntimeError(f"{group} server exited: {self.log_path.read_text()}")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"{group} server did not bind in time")
            time.sleep(0.05)
        self.address = f"127.0.0.1:{int(self.port_file.read_text())}"

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self._log.close()
        return self.proc.returncode


def tensor(a: np.ndarray):
    """A pcmtwin.v1.Tensor from a numpy array, written with the generated message only."""
    from pcmtwin.v1 import tensor_pb2

    a = np.ascontiguousarray(a)
    return tensor_pb2.Tensor(data=a.astype(a.dtype.newbyteorder("<")).tobytes(),
                             dtype=a.dtype.name, shape=a.shape)  # fmt: skip


def from_tensor(t) -> np.ndarray:
    return np.frombuffer(t.data, np.dtype(t.dtype).newbyteorder("<")).reshape(tuple(t.shape))
