"""OpenID Connect RP-Initiated Logout 1.0 — the end-session endpoint.

The ``id_token_hint`` is verified as an ID token the hub issued (signature, issuer; its
expiry may be past). ``post_logout_redirect_uri`` must exactly match one registered for
the hint's client (or, without a hint, for ``client_id``); otherwise the request is
refused on a page, never redirected. ``state`` is echoed. Without a valid hint, or when
the hint names another session than the browser's, the user is asked to confirm instead
of being logged out silently.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from federation.errors import InvalidRedirectUri, InvalidRequest
from federation.jose import JWTError, verify
from federation.oidc.context import ProviderContext
from federation.settings import ClientSettings


@dataclass(frozen=True, slots=True)
class LogoutRequest:
    hint: dict[str, Any] | None  # the verified ID token claims, None without a valid hint
    client: ClientSettings | None
    post_logout_redirect_uri: str | None
    state: str | None

    def may_end(self, session_sid: str | None) -> bool:
        """Log out without asking: a valid hint for this very session (or no session left)."""
        if self.hint is None:
            return False
        return session_sid is None or self.hint.get("sid") == session_sid

    def redirect_url(self) -> str | None:
        if self.post_logout_redirect_uri is None:
            return None
        if not self.state:
            return self.post_logout_redirect_uri
        sep = "&" if "?" in self.post_logout_redirect_uri else "?"
        return f"{self.post_logout_redirect_uri}{sep}{urlencode({'state': self.state})}"


def verify_hint(ctx: ProviderContext, token: str) -> dict[str, Any] | None:
    try:
        claims = verify(
            token,
            ctx.keys.keys.verification_keys(),
            issuer=ctx.issuer,
            audience=None,
            leeway=ctx.tokens.leeway_seconds,
            require=("iat", "sub", "aud"),
            verify_exp=False,  # the point of a hint is often an expired ID token
            typ="JWT",
        )
    except JWTError:
        return None
    return claims


def _audience(claims: Mapping[str, Any]) -> str | None:
    aud = claims.get("aud")
    if isinstance(aud, list):
        return str(aud[0]) if len(aud) == 1 else claims.get("azp")
    return str(aud) if aud is not None else None


def validate_logout_request(ctx: ProviderContext, params: Mapping[str, str]) -> LogoutRequest:
    hint = verify_hint(ctx, params["id_token_hint"]) if params.get("id_token_hint") else None
    client_id = params.get("client_id")
    client: ClientSettings | None = None
    if hint is not None:
        audience = _audience(hint)
        if client_id is not None and client_id != audience:
            raise InvalidRequest(f"client_id {client_id!r} is not the hint's audience {audience!r}")
        client = ctx.registry.client(audience) if audience else None
        if client is None:
            hint = None  # a hint for a client we no longer know is no hint
    elif client_id is not None:
        client = ctx.registry.client(client_id)
    uri = params.get("post_logout_redirect_uri")
    if uri is not None and (client is None or uri not in client.post_logout_redirect_uris):
        raise InvalidRedirectUri(
            f"post_logout_redirect_uri {uri!r} not registered for "
            f"{client.client_id if client else 'an unidentified client'}",
            public_message="The address to return to after sign-out is not registered "
            "for this application.",
        )
    return LogoutRequest(hint, client, uri, params.get("state"))
