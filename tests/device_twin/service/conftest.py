"""Shared pieces of the CrossbarTwin service tests: servers (in-process and real processes),
a small chip, and exact comparisons of operation results."""

from __future__ import annotations

import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from controller.rpc.client import TwinClient
from device_twin.chip import OpResult
from device_twin.config import ChipConfig
from device_twin.service.server import ServerOptions, TwinServer
from tests.pcmtwin.server_process import ServerProcess as _ServerProcess

REPO = Path(__file__).resolve().parents[3]
RESULT_FIELDS = ("kind", "tile", "at_s", "devices", "pulses", "iterations", "energy_pj",
                 "latency_s", "scale_us")  # fmt: skip


def small_config(**overrides) -> ChipConfig:
    return ChipConfig(**{"n_tiles": 2, "tile_rows": 24, "tile_cols": 16, "seed": 11, **overrides})


def assert_same_result(remote: OpResult, local: OpResult) -> None:
    """Every field of two operation results is identical (arrays bit for bit)."""
    for name in RESULT_FIELDS:
        assert getattr(remote, name) == getattr(local, name), name
    if local.values is None:
        assert remote.values is None
    else:
        assert remote.values.dtype == local.values.dtype
        assert remote.values.shape == local.values.shape
        assert remote.values.tobytes() == local.values.tobytes()
    if local.failed is None:
        assert remote.failed is None
    else:
        assert remote.failed.tolist() == local.failed.tolist()


OPENSSL = "/usr/bin/openssl"


def self_signed_cert(tmp: Path, name: str) -> tuple[Path, Path]:
    """A self-signed certificate and key for localhost / 127.0.0.1, made with openssl."""
    cert, key = tmp / f"{name}.crt", tmp / f"{name}.key"
    subprocess.run(
        [OPENSSL, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key),
         "-out", str(cert), "-days", "1", "-subj", "/CN=localhost",
         "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"],
        check=True, capture_output=True,
    )  # fmt: skip
    return cert, key


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerProcess(_ServerProcess):
    """A twin server process (``pcm-twin twin serve``), with a ready client at hand."""

    def client(self, **kw) -> TwinClient:
        c = TwinClient(self.address, **kw)
        c.wait_ready(timeout_s=300)
        return c


@pytest.fixture
def server_process(tmp_path: Path) -> Iterator[callable]:
    """Start server processes; every one still running is stopped at the end."""
    started: list[ServerProcess] = []

    def start(*args: str, **kw) -> ServerProcess:
        p = ServerProcess(tmp_path, *args, **kw)
        started.append(p)
        return p

    yield start
    for p in started:
        if p.proc.poll() is None:
            p.proc.kill()
            p.proc.wait(10)


def start_inprocess(**options) -> TwinServer:
    server = TwinServer(ServerOptions(address="127.0.0.1:0", **options))
    server.start()
    return server


def random_targets(rng: np.random.Generator, shape, g_max_us: float = 25.0) -> np.ndarray:
    return rng.uniform(0.0, g_max_us, shape).astype(np.float32)
