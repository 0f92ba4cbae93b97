"""A pcm-twin server, either service, as a real process: ``python -m controller.cli <group>
serve`` on a loopback port, found through its port file (the one way tests start one)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


class ServerProcess:
    """``pcm-twin <group> serve --address 127.0.0.1:<port> --port-file ... <args>``; ``group``
    is ``twin`` (CrossbarTwin) or ``chip`` (ChipHost). Its output goes to ``log_path``."""

    def __init__(
        self, tmp: Path, *args: str, group: str = "twin", port: int = 0,
        env: dict | None = None,
    ) -> None:  # fmt: skip
        self.tmp = Path(tmp)
        self.tmp.mkdir(parents=True, exist_ok=True)
        self.group = group
        self.port_file = self.tmp / f"{group}-port-{time.monotonic_ns()}"
        self.log_path = self.tmp / f"{group}.log"
        cmd = [sys.executable, "-m", "controller.cli", group, "serve",
               "--address", f"127.0.0.1:{port}", "--port-file", str(self.port_file), *args]  # fmt: skip
        self._log = open(self.log_path, "ab")  # noqa: SIM115
        self.proc = subprocess.Popen(
            cmd, cwd=REPO, stdout=self._log, stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
        )  # fmt: skip
        self.port = self._wait_port()

    def _wait_port(self, timeout_s: float = 300.0) -> int:  # generous: CI machines get loaded
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.port_file.exists():
                return int(self.port_file.read_text())
            if self.proc.poll() is not None:
                self._log.close()
                raise RuntimeError(f"{self.group} server exited: {self.log_path.read_text()}")
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"{self.group} server did not bind in time")

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def kill(self) -> None:
        """SIGKILL: no shutdown, no final snapshot."""
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)
        self._log.close()

    def stop(self) -> int:
        """SIGTERM (a graceful stop), SIGKILL if that takes over two minutes; the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(120)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self._log.close()
        return self.proc.returncode
