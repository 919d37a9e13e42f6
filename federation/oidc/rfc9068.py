"""RFC 9068 — JWT Profile for OAuth 2.0 Access Tokens (``typ: at+jwt``).

Claims: ``iss``, ``sub``, ``aud`` (the client), ``exp``, ``iat``, ``jti``, ``client_id``,
``scope``, ``sid``, ``auth_time`` and the partner claims. Verification is the hub's own
(signature through ``federation.jose``), then the revocation list and the session: a
token of an ended session or a revoked family is no longer active.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Any

from authlib.oauth2.rfc6749.util import list_to_scope

from federation.errors import InvalidToken
from federation.identity import FederatedIdentity
from federation.jose import JWTError, sign, verify
from federation.oidc import core
from federation.oidc.context import ProviderContext
from federation.oidc.grants import Grant, jti_revoked, session_identity

TYP = "at+jwt"


@dataclass(frozen=True, slots=True)
class AccessToken:
    token: str
    jti: str
    expires_in: int


def issue(ctx: ProviderContext, grant: Grant) -> AccessToken:
    now = ctx.now()
    ttl = ctx.tokens.access_token_ttl
    jti = secrets.token_urlsafe(16)
    claims: dict[str, Any] = {
        "iss": ctx.issuer,
        "sub": grant.identity.hub_subject,
        "aud": grant.client_id,
        "client_id": grant.client_id,
        "iat": now,
        "exp": now + ttl,
        "jti": jti,
        "scope": list_to_scope(list(grant.scope)),
        "sid": grant.sid,
        "auth_time": grant.auth_time,
        **core.partner_claims(ctx, grant.identity),
    }
    key = ctx.keys.keys.current
    return AccessToken(sign(claims, key.private_key, key.alg, key.kid, typ=TYP), jti, ttl)


def decode(ctx: ProviderContext, token: str, *, verify_exp: bool = True) -> dict[str, Any]:
    """Signature, issuer, type and expiry only; raises InvalidToken."""
    try:
        claims = verify(
            token,
            ctx.keys.keys.verification_keys(),
            issuer=ctx.issuer,
            audience=None,  # any registered client; checked below
            leeway=ctx.tokens.leeway_seconds,
            require=("exp", "iat", "jti", "sub", "client_id"),
            verify_exp=verify_exp,
            typ=TYP,
        )
    except JWTError as exc:
        raise InvalidToken(exc.detail) from None
    if ctx.registry.client(str(claims["client_id"])) is None:
        raise InvalidToken(f"access token for unknown client {claims['client_id']!r}")
    return claims


async def validate(ctx: ProviderContext, token: str) -> tuple[dict[str, Any], FederatedIdentity]:
    """An active access token: valid, not revoked, its session and partner still alive.

    Returns the claims and the identity of the session the token was issued in.
    """
    claims = decode(ctx, token)
    if await jti_revoked(ctx, str(claims["jti"])):
        raise InvalidToken(f"access token {claims['jti']} was revoked")
    identity = await session_identity(ctx, str(claims.get("sid", "")))
    if identity is None or identity.hub_subject != claims["sub"]:
        raise InvalidToken("the session of this access token has ended")
    if ctx.partner_may_sign_in(identity.partner_id) is None:
        raise InvalidToken(f"partner {identity.partner_id!r} may no longer sign in")
    return claims, identity
