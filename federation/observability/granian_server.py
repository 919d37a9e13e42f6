"""Serving the hub with granian (``listen.server: granian``, the ``isthmus[granian]`` extra).

granian's HTTP layer is Rust: ~1.3x the forward-auth decisions per core of uvicorn with
httptools (docs/benchmarks.md). It runs embedded (granian's ``embed.Server``) in this
process's uvloop loop, one worker, so the stop is ours and the same as uvicorn's
(federation/observability/shutdown.py):

1. SIGTERM: readiness turns false at once (``/readyz`` 503 ``shutdown``);
2. for ``drain_seconds`` the hub goes on serving;
3. granian stops: the listener closes, idle connections close, requests in flight get
   ``graceful_timeout_seconds`` to finish, then they are cancelled (answered 500);
4. the lifespan ends (run here, around the server, as uvicorn does): the hub closes and the
   audit sink flushes.

A second SIGTERM, or SIGINT, ends the drain early; SIGINT never drains; a signal during
step 3 cancels the requests in flight at once. Log lines go through the hub's logging
(granian's own loggers propagate to it); its access lines, when enabled, carry ``client``,
``method``, ``path`` (without the query string) and ``status``.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from federation.errors import ConfigError
from federation.observability.asgi import Observability
from federation.observability.logging import configure_logging

__all__ = ["GranianHub", "require_granian", "run_granian"]

_log = logging.getLogger("isthmus.shutdown")

INSTALL_HINT = (
    "granian is not installed: pip install 'isthmus[granian]' (or listen.server: uvicorn)"
)
# After the graceful timeout cancelled the requests in flight: how long granian gets to
# answer them (500) and close before the lifespan ends anyway.
CANCEL_GRACE_SECONDS = 5.0
# granian's access line (the fields are also set on the record, for JSON lines).
ACCESS_FORMAT = '%(addr)s - "%(method)s %(path)s %(protocol)s" %(status)d'
# Like the granian command line's default: up to 1024 connections wait to be accepted.
BACKLOG = 1024

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


def require_granian() -> None:
    """Raise a configuration problem when the granian extra is not installed."""
    try:
        import granian.server.embed  # noqa: F401
    except ImportError:
        raise ConfigError([("listen.server", INSTALL_HINT)]) from None


class _Requests:
    """The app, with the tasks of the requests in flight (cancelled after the graceful
    timeout, as uvicorn does)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.in_flight: set[asyncio.Task[Any]] = set()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        task = asyncio.current_task()
        if task is None:  # pragma: no cover - granian runs each request in a task
            await self.app(scope, receive, send)
            return
        self.in_flight.add(task)
        try:
            await self.app(scope, receive, send)
        finally:
            self.in_flight.discard(task)

    def cancel(self) -> int:
        tasks = [task for task in self.in_flight if not task.done()]
        for task in tasks:
            task.cancel()
        return len(tasks)


class _Lifespan:
    """The ASGI lifespan, run around the server (startup before the port opens)."""

    def __init__(self, app: ASGIApp) -> None:
        self._app = app
        self._inbox: asyncio.Queue[Message] = asyncio.Queue()
        self._started = asyncio.Event()
        self._stopped = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.failure: str | None = None

    async def startup(self) -> bool:
        self._task = asyncio.create_task(self._main())
        await self._inbox.put({"type": "lifespan.startup"})
        await self._started.wait()
        return self.failure is None

    async def shutdown(self) -> None:
        if self._task is None or self._task.done():
            return
        await self._inbox.put({"type": "lifespan.shutdown"})
        await self._stopped.wait()

    async def _main(self) -> None:
        scope = {"type": "lifespan", "asgi": {"version": "3.0", "spec_version": "2.0"}}
        try:
            await self._app(scope, self._inbox.get, self._send)
        except BaseException as exc:
            if self.failure is None:
                self.failure = repr(exc)
                _log.error("the application's lifespan failed", exc_info=exc)
        finally:
            self._started.set()
            self._stopped.set()

    async def _send(self, message: Message) -> None:
        kind = message["type"]
        if kind == "lifespan.startup.complete":
            self._started.set()
        elif kind == "lifespan.startup.failed":
            self.failure = str(message.get("message") or "startup failed")
            self._started.set()
        elif kind == "lifespan.shutdown.complete":
            self._stopped.set()
        elif kind == "lifespan.shutdown.failed":
            self.failure = str(message.get("message") or "shutdown failed")
            _log.error("application shutdown failed: %s", self.failure)
            self._stopped.set()


class _AccessFields(logging.Filter):
    """granian's access record args (a dict) as fields of the JSON line."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, dict):
            record.client = args.get("addr")
            record.method = args.get("method")
            record.path = args.get("path")  # the path alone: granian keeps the query apart
            record.status = args.get("status")
        return True


_ACCESS_FIELDS = _AccessFields()


def _route_granian_logs() -> None:
    """granian's loggers through the hub's handler (the root logger's)."""
    for name in ("_granian", "granian.access"):
        granian_logger = logging.getLogger(name)
        granian_logger.handlers.clear()
        granian_logger.propagate = True
        granian_logger.setLevel(logging.NOTSET)
    access = logging.getLogger("granian.access")
    if _ACCESS_FIELDS not in access.filters:
        access.addFilter(_ACCESS_FIELDS)


class GranianHub:
    """The hub's app on granian's embedded server, with the drain and the graceful stop."""

    def __init__(
        self,
        asgi_app: ASGIApp,
        host: str,
        port: int,
        observability: Observability,
    ) -> None:
        require_granian()
        from granian.constants import Interfaces
        from granian.server.embed import Server

        settings = observability.settings
        self.readiness = observability.readiness
        self.drain_seconds = settings.drain_seconds
        self.graceful_timeout = settings.graceful_timeout_seconds
        self.requests = _Requests(asgi_app)
        self.lifespan = _Lifespan(asgi_app)
        # No lifespan in granian (ASGINL): ours runs around the server.
        self.server: Any = Server(
            self.requests,
            address=host,
            port=port,
            interface=Interfaces.ASGINL,
            backlog=BACKLOG,
            log_access=settings.access_log,
            log_access_format=ACCESS_FORMAT,
        )
        # granian configured its loggers (its own handlers) when built: the hub's, again.
        configure_logging(
            settings.log_format, settings.log_level, audit_lines=settings.audit_log_lines
        )
        _route_granian_logs()
        self.stage = "serving"  # then draining, stopping, forced
        self._drain_timer: asyncio.TimerHandle | None = None
        self._stopping = asyncio.Event()
        self._forced = asyncio.Event()

    # --- signals (the loop's handlers: they run as callbacks, not in a signal frame) ------

    def on_signal(self, sig: int) -> None:
        self.readiness.drain()
        if self.stage == "serving" and sig == signal.SIGTERM and self.drain_seconds > 0:
            self.stage = "draining"
            _log.info(
                "SIGTERM: not ready; serving %.1f s more before closing the listener",
                self.drain_seconds,
            )
            loop = asyncio.get_running_loop()
            self._drain_timer = loop.call_later(self.drain_seconds, self.stop)
        elif self.stage in ("serving", "draining"):
            self.stop()
        elif self.stage == "stopping":
            self.stage = "forced"
            self._forced.set()

    def stop(self) -> None:
        """Close the listener; requests in flight get the graceful timeout."""
        if self.stage not in ("serving", "draining"):
            return
        if self._drain_timer is not None:
            self._drain_timer.cancel()
        self.stage = "stopping"
        self.readiness.drain()
        _log.info(
            "Shutting down: the listener closes; requests in flight have %.1f s",
            self.graceful_timeout,
        )
        self.server.stop()
        self._stopping.set()

    # --- the run --------------------------------------------------------------------------

    async def serve(self) -> int:
        """Serve until stopped; the exit status (0: stopped, 1: the server failed, 3: the
        lifespan's startup failed, as uvicorn's)."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.on_signal, sig)
        try:
            return await self._serve()
        finally:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(sig)

    async def _serve(self) -> int:
        if not await self.lifespan.startup():
            _log.error("Application startup failed. Exiting.")
            return 3
        _log.info("Application startup complete.")
        status = 0
        served = asyncio.create_task(self.server.serve())
        try:
            stopping = asyncio.create_task(self._stopping.wait())
            await asyncio.wait({served, stopping}, return_when=asyncio.FIRST_COMPLETED)
            stopping.cancel()
            if served.done() and not self._stopping.is_set():
                # granian ended on its own: the port could not be bound, its worker failed
                failure = served.exception()
                _log.error("the HTTP server stopped unexpectedly", exc_info=failure)
                status = 1
            else:
                await self._graceful(served)
        finally:
            _log.info("Waiting for application shutdown.")
            await self.lifespan.shutdown()
            _log.info("Application shutdown complete.")
        return status

    async def _graceful(self, served: asyncio.Task[Any]) -> None:
        forced = asyncio.create_task(self._forced.wait())
        await asyncio.wait(
            {served, forced}, timeout=self.graceful_timeout, return_when=asyncio.FIRST_COMPLETED
        )
        forced.cancel()
        if served.done():
            if not served.cancelled() and served.exception() is not None:
                _log.error("the HTTP server failed to stop", exc_info=served.exception())
            return
        cancelled = self.requests.cancel()
        _log.warning("graceful stop: cancelled %d request(s) still in flight", cancelled)
        await asyncio.wait({served}, timeout=CANCEL_GRACE_SECONDS)
        if not served.done():
            _log.warning("the HTTP server did not stop; ending the lifespan anyway")


def run_granian(asgi_app: Any, host: str, port: int, observability: Observability) -> int:
    """Serve the hub's app with granian until stopped; the exit status."""
    import uvloop

    async def main() -> int:
        return await GranianHub(asgi_app, host, port, observability).serve()

    # As for uvicorn (shutdown.py): what lives now lives as long as the process.
    gc.collect()
    gc.freeze()
    return uvloop.run(main())
