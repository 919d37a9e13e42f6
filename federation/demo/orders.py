"""The demo's proxied app: a tiny "orders" application that only trusts the hub's proxy.

``isthmus demo`` serves it on its own 127.0.0.1 port (a second uvicorn server in the demo's
event loop) and the hub proxies ``/orders/`` to it, guarded by the ``orders`` policy in
``demo.yaml``. Every page shows what the app received: the identity headers the proxy
added and the claims of the proxy's signed assertion (``X-Isthmus-Assertion``), verified
with the SDK against the hub's JWKS. The app believes only the assertion: a request
without a valid one (someone calling the app directly, with or without made-up
``X-Isthmus-*`` headers) gets a 401.
"""

from __future__ import annotations

import asyncio
import contextlib
import html
import json
import socket
from collections.abc import Mapping
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from federation.sdk import HubClaims, InvalidToken, TokenValidator

SHOWN_CLAIMS = (
    "sub",
    "name",
    "email",
    "partner",
    "partner_kind",
    "partner_name",
    "connection",
    "groups",
    "roles",
    "aud",
    "iss",
    "exp",
)
# Request headers worth showing besides the X-Isthmus-* identity headers.
SHOWN_HEADERS = ("x-request-id", "x-forwarded-for", "x-forwarded-host", "x-forwarded-proto")
METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"]


class NotFromTheHub(Exception):
    pass


def create_orders_app(
    issuer: str,
    *,
    app_id: str = "orders",
    prefix: str = "/orders",
    assertion_header: str = "X-Isthmus-Assertion",
    validator: TokenValidator | None = None,
) -> Starlette:
    """The app for ``prefix`` on the hub (the proxy forwards the full path: no strip)."""
    prefix = "/" + prefix.strip("/")
    validator = validator or TokenValidator(issuer, audience=app_id)

    def caller(request: Request) -> HubClaims:
        value = request.headers.get(assertion_header)
        if not value:
            raise NotFromTheHub("no assertion: this request did not come through the hub")
        try:
            return validator.validate_assertion(value)
        except InvalidToken as exc:
            raise NotFromTheHub(f"assertion refused: {exc.reason}") from None

    # A plain (sync) endpoint: Starlette runs it in its thread pool, so the validator's
    # first key fetch from the hub (served by the same event loop) never blocks the loop.
    def page(request: Request) -> Response:
        who = caller(request)
        headers = {
            name: value
            for name, value in request.headers.items()
            if (name.startswith("x-isthmus-") and name != assertion_header.lower())
            or name in SHOWN_HEADERS
        }
        body = _body(prefix, request.method, request.url.path, who, headers)
        return _page(_title(prefix, request.url.path), body)

    async def refused(request: Request, exc: Exception) -> Response:
        if "application/json" in request.headers.get("accept", ""):
            return JSONResponse(
                {"error": "not_from_the_hub", "detail": str(exc)},
                status_code=401,
                headers={"Cache-Control": "no-store"},
            )
        body = (
            '<h1>Not through the hub</h1><p class="error" role="alert" id="message">'
            f"{html.escape(str(exc))}</p><p>This app answers only requests that the Isthmus "
            "hub forwarded with its signed assertion. Open it through the hub.</p>"
        )
        return _page("Orders — refused", body, status=401)

    app = Starlette(
        routes=[Route("/{path:path}", page, methods=METHODS)],
        exception_handlers={NotFromTheHub: refused},
    )
    app.state.validator = validator
    return app


def _title(prefix: str, path: str) -> str:
    section = path[len(prefix) :].strip("/").split("/", 1)[0] if path.startswith(prefix) else ""
    return {"": "Orders", "reports": "Orders — reports", "admin": "Orders — admin"}.get(
        section, f"Orders — {section}"
    )


def _body(prefix: str, method: str, path: str, who: HubClaims, headers: Mapping[str, str]) -> str:
    name = who.name or who.email or who.subject
    partner = who.raw.get("partner_name") or who.partner_id or "?"
    posted = (
        f'<p class="notice" id="posted">Your {html.escape(method)} reached the app: '
        "an order would be placed here.</p>"
        if method not in ("GET", "HEAD")
        else ""
    )
    claims = "".join(
        f'<dt>{html.escape(key)}</dt><dd id="claim-{html.escape(key)}">'
        f"{html.escape(_show(who.raw[key]))}</dd>"
        for key in SHOWN_CLAIMS
        if key in who.raw
    )
    rows = "".join(
        f'<dt>{html.escape(key)}</dt><dd id="header-{html.escape(key)}">{html.escape(value)}</dd>'
        for key, value in sorted(headers.items())
    )
    return f"""<h1>{html.escape(_title(prefix, path))}</h1>
<p id="who">Hello, <b>{html.escape(str(name))}</b> of <b>{html.escape(str(partner))}</b>
({html.escape(who.partner_kind or "?")}).</p>
{posted}
<p class="muted" id="received">This app received <code>{html.escape(method)}
{html.escape(path)}</code> from the hub's proxy, which let it through after the
<code>orders</code> policy allowed it.</p>
<p><a href="{prefix}/">Orders</a> · <a href="{prefix}/reports">Reports</a> ·
<a href="{prefix}/admin">Admin</a> · <a href="/">The hub</a></p>
<form method="post" action="{prefix}/" id="order-form">
<button class="button" type="submit">Place a test order (POST)</button></form>
<h2>The hub's assertion, verified</h2>
<p class="muted">Checked with the SDK (signature with the hub's JWKS, issuer, audience
<code>{html.escape(", ".join(who.audience))}</code>, expiry): the only thing this app believes.</p>
<dl class="facts" id="claims">{claims}</dl>
<h2>Identity headers</h2>
<p class="muted">Added by the proxy after it removed any the browser sent.</p>
<dl class="facts" id="headers">{rows}</dl>"""


def _show(value: Any) -> str:
    if isinstance(value, list | tuple):
        return ", ".join(str(v) for v in value) or "—"
    if isinstance(value, dict):
        return json.dumps(value, sort_keys=True)
    return str(value)


def _page(title: str, body: str, status: int = 200) -> HTMLResponse:
    # The stylesheet is the hub's: the browser reaches this app through the hub's origin.
    return HTMLResponse(
        f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{html.escape(title)}</title><link rel="stylesheet" href="/static/style.css"></head>
<body><header class="bar"><span class="brand">Orders</span>
<span class="tag">a demo app behind the Isthmus proxy</span></header>
<main class="card" id="main">{body}</main></body></html>""",
        status_code=status,
        headers={"Cache-Control": "no-store"},
    )


class OrdersServer:
    """The orders app on ``host:port`` under uvicorn, as a task of the running event loop.

    Started and stopped by the demo's lifespan; it leaves signal handling and logging
    configuration to the hub's own uvicorn server (whose access log then shows the
    requests of both: the browser's to the hub, the proxy's to this app).
    """

    def __init__(self, app: Any, host: str, port: int) -> None:
        self.app, self.host, self.port = app, host, port
        self.server: Any = None
        self._task: asyncio.Task[None] | None = None
        self._socket: socket.socket | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    async def start(self) -> None:
        import uvicorn

        class Quiet(uvicorn.Server):
            @contextlib.contextmanager
            def capture_signals(self) -> Any:  # the hub's server handles Ctrl+C
                yield

        # Bound here, so that a port in use fails the demo's start-up with a clear error.
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((self.host, self.port))
        except OSError as exc:
            sock.close()
            raise OSError(f"the demo orders app cannot listen on {self.url}: {exc}") from None
        self._socket = sock
        config = uvicorn.Config(
            self.app,
            lifespan="off",
            log_config=None,  # the hub's server configured logging; its access log shows both
            proxy_headers=False,
            ws="none",
        )
        self.server = Quiet(config)
        self._task = asyncio.create_task(self.server.serve(sockets=[sock]))
        while not self.server.started:
            if self._task.done():
                self._task.result()  # raise what stopped it
                raise RuntimeError(f"the demo orders app did not start on {self.url}")
            await asyncio.sleep(0.01)

    async def stop(self) -> None:
        if self.server is not None:
            self.server.should_exit = True
        if self._task is not None:
            await self._task
            self._task = None
        if self._socket is not None:
            self._socket.close()
            self._socket = None
