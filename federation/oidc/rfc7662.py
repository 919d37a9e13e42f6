"""RFC 7662 — OAuth 2.0 Token Introspection.

Only confidential clients may ask (a public client cannot authenticate). Any confidential
client may introspect any token: resource servers are registered as clients. Access
tokens are active while their signature and expiry hold, their ``jti`` is not revoked,
their session lives and their partner may sign in; refresh tokens while they are the
live token of a live family under the same conditions. Everything else is
``{"active": false}`` with nothing more said.
"""

from __future__ import annotations

from typing import Any

from authlib.oauth2.rfc6749.util import list_to_scope

from federation.errors import InvalidToken
from federation.oidc import core, rfc9068
from federation.oidc.context import ProviderContext
from federation.oidc.grants import family_grant, session_alive, token_hash
from federation.oidc.rfc6749 import ClientAuthenticationFailed
from federation.settings import ClientSettings

INACTIVE: dict[str, Any] = {"active": False}


def looks_like_jwt(token: str) -> bool:
    return token.count(".") == 2


async def introspect(
    ctx: ProviderContext, caller: ClientSettings, token: str | None
) -> dict[str, Any]:
    if caller.public:
        raise ClientAuthenticationFailed(
            f"public client {caller.client_id} may not introspect",
            client_id=caller.client_id,
            basic=False,
        )
    if not token or len(token) > 8192:
        return INACTIVE
    if looks_like_jwt(token):
        try:
            claims, _ = await rfc9068.validate(ctx, token)
        except InvalidToken:
            return INACTIVE
        return {"active": True, "token_type": "Bearer", **claims}
    return await _refresh_token(ctx, token)


async def _refresh_token(ctx: ProviderContext, token: str) -> dict[str, Any]:
    hashed = token_hash(token)
    record = await ctx.store.get(f"oidc:refresh:{hashed}")
    if record is None:
        return INACTIVE
    found = await family_grant(ctx, str(record["family"]))
    if found is None:
        return INACTIVE
    grant, expires_at = found
    if ctx.partner_may_sign_in(grant.identity.partner_id) is None:
        return INACTIVE
    if not await session_alive(ctx, grant.sid):
        return INACTIVE
    return {
        "active": True,
        "iss": ctx.issuer,
        "client_id": grant.client_id,
        "sub": grant.identity.hub_subject,
        "scope": list_to_scope(list(grant.scope)),
        "exp": expires_at,
        "sid": grant.sid,
        **core.partner_claims(ctx, grant.identity),
    }
