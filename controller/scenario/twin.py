"""The twin a scenario runs against: an embedded CrossbarTwin server, or one at an address.

The twin is embedded (a CrossbarTwin server started in this process on a free loopback port)
unless an address is given; either way the controller reaches it only through
``TwinClient``, whose patient retries (``TWIN_RETRY``) ride out a twin that is killed and
restarted on its state directory (``twin serve --state-dir``): the run then completes with
the same results as an uninterrupted one (tests/reliability/test_faults.py).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from controller.rpc.client import TWIN_RETRY, TwinClient
from device_twin.service.server import ServerOptions, TwinServer
from pcmtwin.credentials import load_token


@contextmanager
def twin_client(address: str | None = None) -> Iterator[TwinClient]:
    """A ``TwinClient`` to ``address``, or to an embedded twin started on a free loopback
    port (stopped on exit). The bearer token, if any, comes from ``$PCM_TWIN_TOKEN``."""
    server = None
    if address is None:
        server = TwinServer(ServerOptions(address="127.0.0.1:0", max_workers=4))
        server.start()
        address = server.address
        token = None
    else:
        token = load_token(None)
    # a session stream per client (one call's set-up for all the controller's operations);
    # patient retries: a twin restarted on its state dir is waited for, not given up on
    client = TwinClient(address, token=token, session=True, **TWIN_RETRY)
    try:
        client.wait_ready()
        yield client
    finally:
        client.close()
        if server is not None:
            server.stop(0)
