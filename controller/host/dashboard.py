"""The live view of a chip: a web page beside the ChipHost service, fed by server-sent events.

``pcm-twin chip serve ... --dashboard 127.0.0.1:8080`` serves, next to the gRPC service, a
page with the chip's status (device time, network, policy, corrections, availability, the
error that stopped it), the drift metric per tile and layer (now, and over time from the
probes), energy by kind, and the ledger's events as they happen. It reads the
:class:`~controller.host.chip_host.ChipHost` the gRPC servicer drives; it never changes it.

Routes (GET only; anything else 405):

=====================  ====================================================================
``/``                  the page (``dashboard_static/dashboard.html``)
``/static/NAME``       its script and style, and plotly.js from the installed plotly package
                       (nothing is fetched from the network)
``/api/status``        the status as JSON (ChipHost's, with ``tile_layers``)
``/api/events``        ``text/event-stream``: ``status`` every ``status_interval_s``; each
                       ledger event as a ``ledger`` message with its ``seq`` as the SSE id (a
                       reconnecting browser sends ``Last-Event-ID`` and gets what it missed,
                       of the events the chip keeps); ``reset`` when a new network replaced
                       the one whose events were streamed
``/healthz``           ``ok``, without a token (as the gRPC health check)
=====================  ====================================================================

Security: the gRPC services' rules, from the same code. The bind policy is
``pcmtwin.serving.check_bind_policy`` (loopback by default; any other address needs the
bearer token or TLS, or ``insecure``); TLS uses the same certificate and key; the token is
the services' (``pcmtwin.credentials.load_token``: ``--token-file`` or ``$PCM_TWIN_TOKEN``),
sent as ``Authorization: Bearer <token>`` or, for a browser, once as ``/?token=<token>``,
which sets an HttpOnly, SameSite=Strict cookie and redirects to ``/`` (compared in constant
time; never logged). A server bound to loopback answers only requests whose ``Host`` is a
loopback name (no DNS rebinding). At most ``max_streams`` event streams at once (503 beyond).
"""

from __future__ import annotations

import hmac
import http.server
import json
import logging
import math
import queue
import ssl
import threading
import time
import urllib.parse
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from controller.host.chip_host import ChipHost
from device_twin.errors import FailedPrecondition
from pcmtwin.credentials import ConfigError
from pcmtwin.serving import ServingOptions, check_bind_policy, is_loopback, split_host

log = logging.getLogger(__name__)

COOKIE = "pcm_twin_token"
STATIC = {
    "dashboard.js": "text/javascript; charset=utf-8",
    "dashboard.css": "text/css; charset=utf-8",
}
_LOOPBACK_NAMES = {"localhost", "127.0.0.1", "::1", "[::1]"}
_SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    # plotly.js compiles some of its code at run time ('unsafe-eval') and sets inline styles
    "Content-Security-Policy": "default-src 'self'; script-src 'self' 'unsafe-eval'; "
    "style-src 'self' 'unsafe-inline'; img-src 'self' data:; connect-src 'self'; "
    "frame-ancestors 'none'",
}


@dataclass(kw_only=True)
class DashboardOptions(ServingOptions):
    """Where and how the dashboard serves (``ServingOptions``: address, token, TLS, insecure)."""

    address: str = "127.0.0.1:8080"
    status_interval_s: float = 0.5
    max_streams: int = 16
    #: Ledger events a new page is sent first (the chip keeps more; older ones are summed
    #: in the status).
    replay_events: int = 2000


def _clean(value: Any) -> Any:
    """JSON-safe: numpy scalars to Python, NaN and infinities to None, keys to strings."""
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    if hasattr(value, "item") and not isinstance(value, str | bytes):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _json(value: Any) -> str:
    return json.dumps(_clean(value), separators=(",", ":"), default=str, allow_nan=False)


class Dashboard:
    """The dashboard's HTTP server (see the module docstring)."""

    def __init__(self, host: ChipHost, options: DashboardOptions) -> None:
        check_bind_policy(options)
        self.host = host
        self.options = options
        self._expected = f"Bearer {options.token}".encode() if options.token else None
        self._streams = threading.BoundedSemaphore(options.max_streams)
        self._stopping = threading.Event()
        self._httpd: http.server.ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.port: int | None = None

    # --- lifecycle ------------------------------------------------------------------------
    def start(self) -> int:
        """Bind and serve in a thread; returns the bound port."""
        host = split_host(self.options.address)
        port = int(self.options.address.rpartition(":")[2])
        handler = type("Handler", (_Handler,), {"dashboard": self})
        try:
            httpd = http.server.ThreadingHTTPServer((host, port), handler)
        except OSError as exc:
            raise ConfigError(
                f"cannot bind the dashboard to {self.options.address}: {exc}"
            ) from None
        httpd.daemon_threads = True
        if self.options.tls_cert is not None and self.options.tls_key is not None:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(self.options.tls_cert, self.options.tls_key)
            httpd.socket = context.wrap_socket(httpd.socket, server_side=True)
        self._httpd = httpd
        self.port = httpd.server_address[1]
        self._thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.2},
                                        name="dashboard", daemon=True)  # fmt: skip
        self._thread.start()
        return self.port

    @property
    def url(self) -> str:
        scheme = "https" if self.options.tls_cert else "http"
        host = split_host(self.options.address)
        host = f"[{host}]" if ":" in host else host
        return f"{scheme}://{host}:{self.port}/"

    def stop(self) -> None:
        """End the event streams and stop serving."""
        self._stopping.set()
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    # --- checks ---------------------------------------------------------------------------
    def authorised(self, header: str | None, cookie: str | None) -> bool:
        if self._expected is None:
            return True
        given = header or (f"Bearer {cookie}" if cookie else "")
        return hmac.compare_digest(given.encode(), self._expected)

    def token_matches(self, token: str) -> bool:
        return self._expected is not None and hmac.compare_digest(
            f"Bearer {token}".encode(), self._expected
        )

    def host_allowed(self, host_header: str | None) -> bool:
        """On a loopback bind, only loopback names (a page elsewhere cannot rebind its name to
        127.0.0.1 and read the dashboard)."""
        if not is_loopback(self.options.address) or self.options.address.startswith("unix"):
            return True
        if not host_header:
            return False
        name = host_header.rsplit(":", 1)[0] if not host_header.endswith("]") else host_header
        return name.lower() in _LOOPBACK_NAMES or name.startswith("127.")

    # --- data -----------------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        s = self.host.status()
        s.pop("ledger", None)  # per-kind totals: energy_by_kind_pj says what the page shows
        return s


class _Handler(http.server.BaseHTTPRequestHandler):
    """One request (a thread each; an event stream keeps its thread)."""

    dashboard: Dashboard
    server_version = "pcm-twin-dashboard"
    sys_version = ""
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (the base's name)
        log.debug("%s %s", self.address_string(), format % args)

    # --- answers --------------------------------------------------------------------------
    def _send(self, code: int, body: bytes, content_type: str, extra: dict | None = None) -> None:
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        for k, v in {**_SECURITY_HEADERS, **(extra or {})}.items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _text(self, code: int, text: str) -> None:
        self._send(code, (text + "\n").encode(), "text/plain; charset=utf-8")

    def _cookie(self) -> str | None:
        for part in (self.headers.get("Cookie") or "").split(";"):
            name, _, value = part.strip().partition("=")
            if name == COOKIE:
                return urllib.parse.unquote(value)
        return None

    # --- methods --------------------------------------------------------------------------
    def do_POST(self) -> None:  # noqa: N802 (http.server's names)
        self._text(405, "the dashboard only reads: GET")

    do_PUT = do_DELETE = do_PATCH = do_POST  # noqa: N815

    def do_HEAD(self) -> None:  # noqa: N802
        self.do_GET()

    def do_GET(self) -> None:  # noqa: N802
        d = self.dashboard
        url = urllib.parse.urlsplit(self.path)
        if not d.host_allowed(self.headers.get("Host")):
            self._text(403, "this dashboard answers only to a loopback host name")
            return
        if url.path == "/healthz":
            self._text(200, "ok")
            return
        query = urllib.parse.parse_qs(url.query)
        if url.path == "/" and "token" in query:
            if not d.token_matches(query["token"][0]):
                self._text(401, "wrong token")
                return
            secure = "; Secure" if d.options.tls_cert else ""
            cookie = f"{COOKIE}={urllib.parse.quote(query['token'][0])}; HttpOnly; " \
                     f"SameSite=Strict; Path=/{secure}"  # fmt: skip
            self._send(303, b"", "text/plain", {"Location": "/", "Set-Cookie": cookie})
            return
        if not d.authorised(self.headers.get("Authorization"), self._cookie()):
            self._text(401, "this dashboard needs its token: open /?token=<token> once, or "
                       "send 'Authorization: Bearer <token>'")  # fmt: skip
            return
        if url.path in ("/", "/index.html"):
            self._static("dashboard.html", "text/html; charset=utf-8")
        elif url.path == "/static/plotly.min.js":
            from plotly.offline import get_plotlyjs

            self._send(200, get_plotlyjs().encode(), "text/javascript; charset=utf-8")
        elif url.path.startswith("/static/") and url.path[len("/static/") :] in STATIC:
            name = url.path[len("/static/") :]
            self._static(name, STATIC[name])
        elif url.path == "/api/status":
            self._send(200, _json(d.status()).encode(), "application/json")
        elif url.path == "/api/events":
            self._events(self.headers.get("Last-Event-ID"))
        else:
            self._text(404, f"no such page: {url.path}")

    def _static(self, name: str, content_type: str) -> None:
        body = resources.files("controller.host").joinpath("dashboard_static", name).read_bytes()
        self._send(200, body, content_type)

    # --- the event stream -----------------------------------------------------------------
    def _events(self, last_id: str | None) -> None:
        d = self.dashboard
        if not d._streams.acquire(blocking=False):
            self._text(503, f"too many open event streams (at most {d.options.max_streams})")
            return
        try:
            after = int(last_id) if last_id and last_id.isdigit() else 0
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Cache-Control", "no-store")
            self.send_header("Connection", "close")
            for k, v in _SECURITY_HEADERS.items():
                self.send_header(k, v)
            self.end_headers()
            self.close_connection = True
            if self.command != "HEAD":
                self._stream(after)
        except (BrokenPipeError, ConnectionResetError, ssl.SSLError, OSError):
            pass  # the page went away
        finally:
            d._streams.release()

    def _write(self, event: str, data: str, id_: int | None = None) -> None:
        head = f"id: {id_}\n" if id_ is not None else ""
        self.wfile.write(f"{head}event: {event}\ndata: {data}\n\n".encode())
        self.wfile.flush()

    def _stream(self, after: int) -> None:
        """Status now and every interval; the ledger's events from ``after`` on, then live;
        ``reset`` and the new network's events when one replaces it."""
        d = self.dashboard
        self._write("status", _json(d.status()))
        self._sub = None
        try:
            self._loop(after, time.monotonic() + d.options.status_interval_s)
        finally:
            if self._sub is not None:  # the page went away, or the server stops
                self._sub.close()
                self._sub.on_end(self._sub)

    def _loop(self, after: int, next_status: float) -> None:
        d = self.dashboard
        opts = d.options
        sub = None
        while not d._stopping.is_set():
            if sub is None:
                try:
                    last = d.host.status().get("last_event_seq", 0)
                    sub = d.host.subscribe(max(after, int(last) - opts.replay_events))
                except FailedPrecondition:  # no network loaded yet
                    sub = None
                self._sub = sub
            try:
                item = sub.queue.get(timeout=0.1) if sub is not None else None
            except queue.Empty:
                item = None
            if sub is not None and item is sub._END:
                sub.on_end(sub)
                if sub.replaced:  # a new network: its events start again from 1
                    self._write("reset", "{}")
                    after = 0
                self._sub = sub = None  # (fell behind: subscribe again from ``after``)
            elif item is not None:
                after = item.seq
                self._write("ledger", _json(item.to_dict()), item.seq)
            if time.monotonic() >= next_status:
                self._write("status", _json(d.status()))
                next_status = time.monotonic() + opts.status_interval_s
            if sub is None:
                time.sleep(0.1)


def check_dashboard_address(address: str) -> None:
    """Refuse a dashboard address without a port (``ConfigError``)."""
    port = address.rpartition(":")[2]
    if not port.isdigit():
        raise ConfigError(f"--dashboard {address!r}: expected HOST:PORT, e.g. 127.0.0.1:8080")


def static_dir() -> Path:
    """Where the page's files are (for tests and packaging)."""
    return Path(str(resources.files("controller.host").joinpath("dashboard_static")))
