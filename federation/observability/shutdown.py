"""Serving the hub with uvicorn, and stopping it without dropping work.

(``listen.server: granian``: federation/observability/granian_server.py, the same steps.)

On SIGTERM (Kubernetes deleting the pod, ``docker stop``):

1. readiness turns false at once (``/readyz`` answers 503 ``shutdown``);
2. for ``drain_seconds`` the hub goes on serving, so load balancers that still send
   traffic find it up while they take the replica out;
3. uvicorn's graceful shutdown: the listener closes, idle connections close, requests in
   flight get ``graceful_timeout_seconds`` to finish (then they are cancelled);
4. the lifespan ends: the proxy's upstream pool closes, the hub releases the registry
   watcher, back-channel deliveries, connectors, the store, and the audit sink flushes
   what it buffers to the audit log.

Login flows, sessions and codes live in the store, not in the process: with Redis, a flow
begun on a replica that stops completes on any other.

A second SIGTERM, or SIGINT, ends the drain early; SIGINT (Ctrl-C in a terminal) never
drains, and a second one during step 3 stops at once (uvicorn's own rule).
"""

from __future__ import annotations

import gc
import logging
import signal
import time
from collections.abc import Callable
from types import FrameType
from typing import Any

import uvicorn

from federation.observability.asgi import Observability
from federation.observability.health import Readiness
from federation.observability.logging import configure_logging

__all__ = ["GracefulServer", "observability_of", "run_server", "server_of"]

_log = logging.getLogger("isthmus.shutdown")


class GracefulServer(uvicorn.Server):
    """uvicorn's server with the drain of step 2 before its own graceful shutdown."""

    def __init__(
        self,
        config: uvicorn.Config,
        readiness: Readiness,
        drain_seconds: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(config)
        self.readiness = readiness
        self.drain_seconds = drain_seconds
        self._clock = clock
        self._drain_until: float | None = None
        self._announced = False

    @property
    def draining(self) -> bool:
        return self._drain_until is not None

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        # A signal handler: flags only (no logging, no awaiting); on_tick does the rest.
        self.readiness.drain()
        drain = sig == signal.SIGTERM and self.drain_seconds > 0
        if drain and self._drain_until is None and not self.should_exit:
            self._drain_until = self._clock() + self.drain_seconds
            return
        self._drain_until = None
        super().handle_exit(sig, frame)

    async def on_tick(self, counter: int) -> bool:
        if self._drain_until is not None:
            if not self._announced:
                self._announced = True
                _log.info(
                    "SIGTERM: not ready; serving %.1f s more before closing the listener",
                    self.drain_seconds,
                )
            if self._clock() >= self._drain_until:
                self._drain_until = None
                super().handle_exit(signal.SIGTERM, None)
        return await super().on_tick(counter)


def observability_of(asgi_app: Any) -> Observability | None:
    """The observability of an app built by ``create_app`` (None for any other app)."""
    found = getattr(getattr(asgi_app, "state", None), "observability", None)
    return found if isinstance(found, Observability) else None


def server_of(asgi_app: Any) -> str:
    """``listen.server`` of the hub whose app this is (uvicorn for any other app)."""
    hub = getattr(getattr(asgi_app, "state", None), "hub", None)
    listen = getattr(getattr(hub, "settings", None), "listen", None)
    return str(getattr(listen, "server", "uvicorn"))


def run_server(asgi_app: Any, host: str, port: int) -> None:
    """Serve until stopped. The hub's app gets its logging, access log, drain and graceful
    timeout from ``observability`` settings, on the server of ``listen.server``; any other
    app uvicorn's defaults."""
    observability = observability_of(asgi_app)
    if observability is None:
        uvicorn.run(asgi_app, host=host, port=port, log_level="info", proxy_headers=False)
        return
    if server_of(asgi_app) == "granian":
        from federation.observability.granian_server import run_granian

        status = run_granian(asgi_app, host, port, observability)
        if status:
            raise SystemExit(status)
        return
    settings = observability.settings
    configure_logging(settings.log_format, settings.log_level, audit_lines=settings.audit_log_lines)
    config = uvicorn.Config(
        asgi_app,
        host=host,
        port=port,
        log_config=None,
        access_log=settings.access_log,
        proxy_headers=False,
        lifespan="on",
        timeout_graceful_shutdown=settings.graceful_timeout_seconds,
    )
    # What is alive now (modules, settings, compiled policies, templates) lives as long
    # as the process: out of the collector's sight, a full collection no longer walks
    # ~150k objects (~80 ms on a 2-vCPU VM, a pause every request in flight waits out).
    gc.collect()
    gc.freeze()
    GracefulServer(config, observability.readiness, settings.drain_seconds).run()
