"""RFC 7009 — OAuth 2.0 Token Revocation.

An access token's ``jti`` goes into the revoked set until the token would have expired;
a refresh token revokes its whole family (the live refresh token and every access token
minted in it). Unknown tokens, tokens of other clients and malformed ones get the same
silent 200 as a success (§2.2): the endpoint is no oracle.
"""

from __future__ import annotations

from federation.errors import InvalidToken
from federation.oidc import rfc9068
from federation.oidc.context import ProviderContext
from federation.oidc.grants import family_grant, revoke_family, revoke_jti, token_hash
from federation.oidc.rfc7662 import looks_like_jwt
from federation.settings import ClientSettings


async def revoke(ctx: ProviderContext, caller: ClientSettings, token: str | None) -> bool:
    """True when something was revoked (for the audit trail only; the client sees 200)."""
    if not token or len(token) > 8192:
        return False
    if looks_like_jwt(token):
        try:
            claims = rfc9068.decode(ctx, token, verify_exp=False)
        except InvalidToken:
            return False
        if claims["client_id"] != caller.client_id:
            return False
        ttl = int(claims["exp"]) - ctx.now() + ctx.tokens.leeway_seconds
        await revoke_jti(ctx, str(claims["jti"]), ttl)
        return ttl > 0
    record = await ctx.store.get(f"oidc:refresh:{token_hash(token)}")
    if record is None:
        return False
    family = str(record["family"])
    found = await family_grant(ctx, family)
    if found is None or found[0].client_id != caller.client_id:
        return False
    await revoke_family(ctx, family)
    return True
