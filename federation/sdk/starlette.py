"""ASGI middleware (Starlette or any ASGI app): who is calling, per the hub.

Reads the proxy's assertion header (when ``assertion_header`` is set and present) or
``Authorization: Bearer <token>``, validates it and puts the :class:`HubClaims` in
``scope["state"]["isthmus"]`` (``request.state.isthmus`` in Starlette). Without a
credential, or with a bad one, it answers 401 with ``WWW-Authenticate: Bearer``
(RFC 6750 §3) and the app is not called. ``skip_paths`` are let through untouched:
an exact path, or a prefix when it ends with ``/``.
"""

from __future__ import annotations

from collections.abc import Sequence

from starlette.types import ASGIApp, Receive, Scope, Send

from federation.sdk.validator import HubClaims, InvalidToken, TokenValidator

__all__ = ["STATE_KEY", "IsthmusAuthMiddleware", "claims_of"]

STATE_KEY = "isthmus"


def claims_of(scope: Scope) -> HubClaims | None:
    """The caller's claims put there by the middleware (None on a skipped path)."""
    found = scope.get("state", {}).get(STATE_KEY)
    return found if isinstance(found, HubClaims) else None


class IsthmusAuthMiddleware:
    def __init__(
        self,
        app: ASGIApp,
        validator: TokenValidator,
        *,
        assertion_header: str | None = None,
        skip_paths: Sequence[str] = (),
        typ: str | None = None,
        realm: str = "isthmus",
    ) -> None:
        self.app = app
        self.validator = validator
        self.assertion_header = assertion_header.lower().encode() if assertion_header else None
        self.exact = frozenset(p for p in skip_paths if not p.endswith("/"))
        self.prefixes = tuple(p for p in skip_paths if p.endswith("/"))
        self.typ = typ
        self.realm = realm

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        path: str = scope.get("path", "")
        if path in self.exact or (self.prefixes and path.startswith(self.prefixes)):
            await self.app(scope, receive, send)
            return
        assertion: str | None = None
        bearer: str | None = None
        for name, value in scope.get("headers", ()):
            if self.assertion_header is not None and name == self.assertion_header:
                assertion = value.decode("latin-1")
            elif name == b"authorization":
                scheme, _, credentials = value.decode("latin-1").partition(" ")
                if scheme.lower() == "bearer" and credentials.strip():
                    bearer = credentials.strip()
        try:
            if assertion is not None:
                claims = self.validator.validate_assertion(assertion)
            elif bearer is not None:
                claims = await self.validator.avalidate(bearer, typ=self.typ)
            else:
                await self._deny(scope, receive, send, None)
                return
        except InvalidToken as exc:
            await self._deny(scope, receive, send, exc)
            return
        scope.setdefault("state", {})[STATE_KEY] = claims
        await self.app(scope, receive, send)

    async def _deny(
        self, scope: Scope, receive: Receive, send: Send, error: InvalidToken | None
    ) -> None:
        challenge = f'Bearer realm="{self.realm}"'
        if error is not None:
            # RFC 6750 §3.1; the reason code is safe to show, the detail may not be.
            challenge += f', error="invalid_token", error_description="{error.reason}"'
        body = b'{"error":"invalid_token"}' if error else b'{"error":"unauthorized"}'
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008})
            return
        await send(
            {
                "type": "http.response.start",
                "status": 401,
                "headers": [
                    (b"www-authenticate", challenge.encode()),
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"cache-control", b"no-store"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})
