"""Servers for the ChipHost tests: in process (fast) and as real processes (end to end)."""

from __future__ import annotations

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
from tests.pcmtwin.server_process import ServerProcess

__all__ = ["InProcess", "ServerProcess", "from_tensor", "tensor", "tiny_network", "until"]

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


def tensor(a: np.ndarray):
    """A pcmtwin.v1.Tensor from a numpy array, written with the generated message only."""
    from pcmtwin.v1 import tensor_pb2

    a = np.ascontiguousarray(a)
    return tensor_pb2.Tensor(data=a.astype(a.dtype.newbyteorder("<")).tobytes(),
                             dtype=a.dtype.name, shape=a.shape)  # fmt: skip


def from_tensor(t) -> np.ndarray:
    return np.frombuffer(t.data, np.dtype(t.dtype).newbyteorder("<")).reshape(tuple(t.shape))


def until(what: str, check, timeout_s: float = 120.0, poll_s: float = 0.02):
    """Poll ``check()`` until it returns something true, and return that (a hang check with
    a generous timeout, not a timing one)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        got = check()
        if got:
            return got
        time.sleep(poll_s)
    raise AssertionError(f"{what}: not within {timeout_s} s")
