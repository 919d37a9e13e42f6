"""A small extranet app meant to run BEHIND the hub's proxy.

The proxy signs a 60-second assertion (a JWT, audience = this app's id) into the
``X-Isthmus-Assertion`` header of every request it forwards. The app believes nothing
else: the plain identity headers (``X-Isthmus-User`` …) are convenient but anyone who can
reach the app directly could send them; the assertion can only come from the hub. A
request without a valid assertion is answered 401.

Run (the hub's proxy forwards to it; see README.md)::

    ISTHMUS_ISSUER=http://127.0.0.1:8080 APP_ID=orders \\
        uvicorn --factory examples.proxied_app.app:create_app --port 9001
"""

from __future__ import annotations

import html
import os
from dataclasses import dataclass

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from federation.sdk import HubClaims, InvalidToken, TokenValidator


@dataclass(frozen=True)
class Config:
    issuer: str  # the hub's issuer URL, as in its discovery document
    app_id: str  # the app's id in the hub's settings: the assertion's audience
    assertion_header: str = "X-Isthmus-Assertion"

    @classmethod
    def from_env(cls) -> Config:
        return cls(
            issuer=os.environ.get("ISTHMUS_ISSUER", "http://127.0.0.1:8080"),
            app_id=os.environ.get("APP_ID", "orders"),
            assertion_header=os.environ.get("ASSERTION_HEADER", "X-Isthmus-Assertion"),
        )


class NotFromTheHub(Exception):
    pass


def create_app(
    config: Config | None = None, *, validator: TokenValidator | None = None
) -> Starlette:
    config = config or Config.from_env()
    # One validator for the process: it caches the hub's keys (fetched through discovery)
    # and refetches them only for a key id it has not seen (a rotation).
    validator = validator or TokenValidator(config.issuer, audience=config.app_id)

    def caller(request: Request) -> HubClaims:
        value = request.headers.get(config.assertion_header)
        if not value:
            raise NotFromTheHub("no assertion: this request did not come through the hub")
        try:
            return validator.validate_assertion(value)
        except InvalidToken as exc:
            raise NotFromTheHub(f"assertion refused: {exc.reason}") from None

    # Plain (sync) endpoints: Starlette runs them in its thread pool, so the validator's
    # first key fetch never blocks the event loop.
    def home(request: Request) -> Response:
        who = caller(request)
        groups = ", ".join(who.groups) or "none"
        body = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Orders</title></head>
<body>
<h1>Orders</h1>
<p id="who">Signed in as <b>{html.escape(who.name or who.email or who.subject)}</b>
({html.escape(who.email or "no email")})</p>
<p id="partner">Partner: <b>{html.escape(who.partner_id or "?")}</b>
({html.escape(who.partner_kind or "?")})</p>
<p id="groups">Groups: {html.escape(groups)}</p>
</body></html>"""
        return HTMLResponse(body)

    def whoami(request: Request) -> Response:
        who = caller(request)
        return JSONResponse(
            {
                "subject": who.subject,
                "email": who.email,
                "name": who.name,
                "partner_id": who.partner_id,
                "partner_kind": who.partner_kind,
                "groups": list(who.groups),
                "roles": list(who.roles),
                "acr": who.acr,
                "sid": who.sid,
            }
        )

    def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def refused(request: Request, exc: Exception) -> Response:
        return JSONResponse(
            {"error": "not_from_the_hub", "detail": str(exc)},
            status_code=401,
            headers={"Cache-Control": "no-store"},
        )

    app = Starlette(
        routes=[
            Route("/healthz", healthz),
            Route("/api/whoami", whoami),
            Route("/{path:path}", home),
        ],
        exception_handlers={NotFromTheHub: refused},
    )
    app.state.validator = validator
    return app
