"""RFC 6749 §6 — the refresh_token grant, with rotation and reuse detection.

Each refresh returns a new refresh token and retires the presented one (OAuth 2.0
Security BCP, RFC 9700 §4.14.2). Presenting a retired token again means two parties hold
the family: the whole family is revoked, so the newest refresh token and every access
token it minted stop working too. Taking the token is atomic (``Store.take``): of two
concurrent refreshes with one token, one wins and the other is treated as reuse.

A refresh token lives no longer than its hub session, and is refused once the partner
may no longer sign in (suspended, offboarded, contract over).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from authlib.oauth2.rfc6749.util import scope_to_list

from federation.errors import InvalidGrant, InvalidRequest, InvalidScope
from federation.oidc.context import ProviderContext
from federation.oidc.grants import family_grant, redeem_once, revoke_family, token_hash
from federation.oidc.rfc6749 import ensure_still_allowed, issue_tokens
from federation.settings import ClientSettings


async def exchange_refresh_token(
    ctx: ProviderContext, client: ClientSettings, form: Mapping[str, str]
) -> dict[str, Any]:
    token = form.get("refresh_token")
    if not token or len(token) > 128:
        raise InvalidRequest("refresh request without refresh_token")
    hashed = token_hash(token)
    record = await redeem_once(ctx, "refresh", hashed)
    family = str(record["family"])
    await ctx.store.put(
        f"oidc:refresh-used:{hashed}", {"family": family}, ctx.tokens.refresh_token_ttl
    )
    found = await family_grant(ctx, family)
    if found is None:
        raise InvalidGrant(f"family {family} was revoked")
    grant, _ = found
    try:
        if grant.client_id != client.client_id:
            raise InvalidGrant(
                f"refresh token of {grant.client_id} presented by {client.client_id}"
            )
        await ensure_still_allowed(ctx, grant)
    except InvalidGrant:
        await revoke_family(ctx, family)
        raise
    requested = scope_to_list(form.get("scope")) if form.get("scope") else None
    if requested is None:
        return await issue_tokens(ctx, client, grant, family)
    extra = [s for s in requested if s not in grant.scope]
    if extra:
        # A malformed request, not an attack: the presented token stays valid.
        await ctx.store.delete(f"oidc:refresh-used:{hashed}")
        await ctx.store.put(f"oidc:refresh:{hashed}", record, ctx.tokens.refresh_token_ttl)
        raise InvalidScope(f"refresh asked for scopes {extra} beyond the grant")
    narrowed = grant.narrowed(tuple(s for s in grant.scope if s in requested))
    # The new tokens carry the narrowed scope; the family keeps the original grant (§6).
    return await issue_tokens(ctx, client, narrowed, family, refresh_grant=grant)
