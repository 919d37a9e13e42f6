"""Serve an ASGI app (the hub, a fake RP, an upstream app) on a real 127.0.0.1 port.

Real peers redirect a browser to it and may call it back (back-channel logout), so
integration tests need the app on a real socket, not an in-process transport. Fixture
``asgi_server`` (function scope) is a factory; servers stop when the test ends::

    def test_hub_login(oidc_provider_peer, asgi_server):
        hub_port = free_port()                       # from tests.peers.common
        hub_url = f"http://127.0.0.1:{hub_port}"
        acme = oidc_provider_peer("acme", ..., redirect_uris=[f"{hub_url}/oidc/callback"])
        app = create_app(...)                        # configured with acme.issuer
        asgi_server(app, port=hub_port)              # -> "http://127.0.0.1:<hub_port>"

Signature: ``asgi_server(app, *, port: int | None = None, host: str = "127.0.0.1") -> str``
(the base URL, no trailing slash). uvicorn runs in a thread with its own event loop and
lifespan; startup waits with a deadline; startup errors fail the test.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from typing import Any, Protocol

import pytest
import uvicorn

from tests.peers.common import free_port

START_TIMEOUT = 10.0


class ServeApp(Protocol):
    def __call__(self, app: Any, *, port: int | None = None, host: str = "127.0.0.1") -> str: ...


@contextmanager
def serving(app: Any, *, port: int | None = None, host: str = "127.0.0.1") -> Iterator[str]:
    """Serve ``app`` while the block runs (for module-scoped servers); yield the base URL."""
    port = port or free_port()
    config = uvicorn.Config(
        app, host=host, port=port, log_level="warning", lifespan="auto", ws="none"
    )
    server = uvicorn.Server(config)  # in a thread, uvicorn leaves signals alone
    thread = threading.Thread(target=server.run, name=f"asgi-{host}:{port}", daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while not server.started:
            if not thread.is_alive():
                raise RuntimeError(f"ASGI server on {host}:{port} did not start (see log above)")
            if time.monotonic() > deadline:
                raise TimeoutError(f"ASGI server on {host}:{port} not up in {START_TIMEOUT}s")
            time.sleep(0.01)  # poll interval
        yield f"http://{host}:{port}"
    finally:
        server.should_exit = True
        thread.join(START_TIMEOUT)


@pytest.fixture
def asgi_server() -> Iterator[ServeApp]:
    with ExitStack() as stack:

        def serve(app: Any, *, port: int | None = None, host: str = "127.0.0.1") -> str:
            return stack.enter_context(serving(app, port=port, host=host))

        yield serve
