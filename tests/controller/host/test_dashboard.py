"""The live view of a chip (pcm-twin chip serve --dashboard): its routes, its security (the
gRPC services' token, bind rules and TLS), and its event stream."""

from __future__ import annotations

import http.client
import json
import ssl
import threading
from dataclasses import dataclass
from pathlib import Path

import pytest
from typer.testing import CliRunner

from controller.cli import app
from controller.host.dashboard import Dashboard, DashboardOptions
from pcmtwin.credentials import ConfigError, make_channel
from pcmtwin.v1 import host_pb2, host_pb2_grpc
from tests.controller.host.test_host_service import HOUR, _load
from tests.controller.servers import InProcess
from tests.device_twin.service.conftest import self_signed_cert

TOKEN = "dashboard-secret"


@pytest.fixture
def live():
    """A twin and a chip host with a live view on loopback, a token on both."""
    s = InProcess(token=TOKEN, dashboard="127.0.0.1:0")
    channel = make_channel(s.host.address, token=TOKEN)
    s.stub = host_pb2_grpc.ChipHostStub(channel)
    yield s
    channel.close()
    s.close()


@dataclass
class Answer:
    status: int
    headers: http.client.HTTPMessage
    body: bytes

    def getheader(self, name: str) -> str | None:
        return self.headers.get(name)

    def read(self) -> bytes:
        return self.body


def _get(port: int, path: str, headers: dict | None = None) -> Answer:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", path, headers=headers or {})
        resp = conn.getresponse()
        return Answer(resp.status, resp.headers, resp.read())
    finally:
        conn.close()


def _auth(live) -> dict:
    return {"Authorization": f"Bearer {TOKEN}"}


def test_the_dashboard_needs_the_token(live) -> None:
    """Without the token every page is refused (401); with it (header, or the cookie that
    /?token= sets) the page and the status are served; the health check needs none."""
    port = live.host.dashboard.port
    assert _get(port, "/").status == 401
    assert _get(port, "/api/status", {"Authorization": "Bearer wrong"}).status == 401
    assert _get(port, "/healthz").status == 200
    assert _get(port, "/?token=wrong").status == 401
    login = _get(port, f"/?token={TOKEN}")
    assert login.status == 303 and login.getheader("Location") == "/"
    cookie = login.getheader("Set-Cookie")
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie
    page = _get(port, "/", {"Cookie": cookie.split(";")[0]})
    assert page.status == 200 and b"/static/plotly.min.js" in page.read()
    assert "default-src 'self'" in page.getheader("Content-Security-Policy")
    status = _get(port, "/api/status", _auth(live))
    assert status.status == 200 and json.loads(status.read())["loaded"] is False


def test_the_dashboard_refuses_what_it_does_not_serve(live) -> None:
    """Other hosts (DNS rebinding), unknown paths and other methods are refused, and the
    server keeps serving."""
    port = live.host.dashboard.port
    assert _get(port, "/", {**_auth(live), "Host": "evil.example:80"}).status == 403
    assert _get(port, "/nope", _auth(live)).status == 404
    assert _get(port, "/static/../service.py", _auth(live)).status == 404
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request("POST", "/api/status", body=b"{}", headers=_auth(live))
    assert conn.getresponse().status == 405
    conn.close()
    assert _get(port, "/api/status", _auth(live)).status == 200


def test_the_dashboard_keeps_the_bind_rules() -> None:
    """A dashboard on a public address needs a token or TLS (as the gRPC services do)."""
    with pytest.raises(ConfigError, match="not a loopback address"):
        Dashboard(host=None, options=DashboardOptions(address="0.0.0.0:0"))  # type: ignore[arg-type]
    Dashboard(host=None, options=DashboardOptions(address="0.0.0.0:0", token="t"))  # type: ignore[arg-type]


def test_the_event_stream_sends_status_and_ledger_events(live) -> None:
    """/api/events sends the status, then each ledger event with its seq as the SSE id, as
    the chip produces them; drift per tile comes with its layer."""
    _load(live.stub, "threshold", {"interval_s": HOUR})
    port = live.host.dashboard.port
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.request("GET", "/api/events", headers=_auth(live))
    resp = conn.getresponse()
    assert resp.status == 200 and resp.getheader("Content-Type") == "text/event-stream"
    # time moves in a thread of its own, joined before the test ends (the fixture then stops
    # the server: a call still running would fail in the thread, unreported)
    advancing = threading.Thread(
        target=lambda: live.stub.AdvanceTime(host_pb2.AdvanceTimeRequest(to_s=2 * HOUR + 5)),
        daemon=True,
    )
    advancing.start()
    seen: dict[str, list] = {"status": [], "ledger": []}
    ids = []
    event = None
    while len([e for e in seen["ledger"] if e["kind"] == "probe"]) < 2:
        line = resp.readline().decode().rstrip("\n")
        if line.startswith("id: "):
            ids.append(int(line[4:]))
        elif line.startswith("event: "):
            event = line[7:]
        elif line.startswith("data: "):
            seen[event].append(json.loads(line[6:]))
    conn.close()
    assert seen["status"] and seen["status"][0]["loaded"] is True
    seqs = [e["seq"] for e in seen["ledger"]]
    assert seqs == sorted(seqs) == ids and seqs[0] == 1
    probe = next(e for e in seen["ledger"] if e["kind"] == "probe")
    assert probe["detail"]["drift_metric"] >= 0
    status = json.loads(_get(port, "/api/status", _auth(live)).read())
    layers = status["tile_layers"]  # the tiny network's two Linear layers, one tile each
    assert sorted(layers.values()) == ["0", "2"] and str(probe["tile"]) in layers
    assert set(status["drift"]) == set(layers)
    advancing.join(timeout=120)
    assert not advancing.is_alive(), "AdvanceTime did not return"


def test_the_dashboard_serves_tls_with_the_servers_certificate(tmp_path: Path) -> None:
    """With --tls-cert/--tls-key the live view is https with the same certificate: a client
    trusting it gets the page, a plaintext client gets nothing."""
    cert, key = self_signed_cert(tmp_path, "host")
    s = InProcess(token=TOKEN, dashboard="127.0.0.1:0", tls_cert=cert, tls_key=key)
    try:
        port = s.host.dashboard.port
        assert s.host.dashboard.url.startswith("https://")
        context = ssl.create_default_context(cafile=str(cert))
        conn = http.client.HTTPSConnection("127.0.0.1", port, timeout=10, context=context)
        conn.request("GET", "/api/status", headers={"Authorization": f"Bearer {TOKEN}"})
        assert conn.getresponse().status == 200
        conn.close()
        with pytest.raises((http.client.HTTPException, ConnectionError, OSError)):
            _get(port, "/healthz")
    finally:
        s.close()


@pytest.mark.parametrize(
    ("dashboard", "message"),
    [("0.0.0.0:0", "refusing to bind 0.0.0.0:0"), ("localhost", "expected HOST:PORT")],
)
def test_chip_serve_refuses_a_bad_dashboard_address(dashboard: str, message: str) -> None:
    """`pcm-twin chip serve --dashboard` refuses a public address without token or TLS and an
    address without a port: exit status 2, saying why, before anything is served."""
    res = CliRunner().invoke(app, ["chip", "serve", "--twin", "127.0.0.1:9",
                                   "--address", "127.0.0.1:0", "--dashboard", dashboard],
                             env={"PCM_TWIN_TOKEN": ""})  # fmt: skip
    assert res.exit_code == 2
    assert message in res.output


def test_the_event_stream_starts_again_for_a_new_network(live) -> None:
    """When LoadNetwork replaces the network, the stream says reset and goes on with the new
    network's events, from seq 1."""
    _load(live.stub, "threshold", {"interval_s": HOUR})
    conn = http.client.HTTPConnection("127.0.0.1", live.host.dashboard.port, timeout=30)
    conn.request("GET", "/api/events", headers=_auth(live))
    resp = conn.getresponse()
    order: list[tuple[str, int | None]] = []
    event = None
    while not any(kind == "ledger" for kind, _ in order):
        line = resp.readline().decode().rstrip("\n")
        if line.startswith("event: "):
            event = line[7:]
        elif line.startswith("data: "):
            order.append((event, json.loads(line[6:]).get("seq")))
    _load(live.stub, "gdc")
    while ("reset", None) not in order or order[-1][0] != "ledger":
        line = resp.readline().decode().rstrip("\n")
        if line.startswith("event: "):
            event = line[7:]
        elif line.startswith("data: "):
            order.append((event, json.loads(line[6:]).get("seq")))
    conn.close()
    after_reset = [seq for kind, seq in order[order.index(("reset", None)) :] if kind == "ledger"]
    assert after_reset[0] == 1
