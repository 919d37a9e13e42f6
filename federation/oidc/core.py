"""OpenID Connect Core 1.0 — the ID token (§2, §3.1.3.6) and UserInfo claims (§5.3, §5.4).

``sub`` is the identity's ``hub_subject`` (opaque, stable, never the email). Every token
and the UserInfo answer carry the partner claims: ``partner_id``, ``partner_kind``,
``groups``, ``acr``, ``amr``. Standard claims follow the granted scopes.
"""

from __future__ import annotations

import base64
import hashlib
from typing import Any

from federation.identity import FederatedIdentity
from federation.jose import sign
from federation.oidc.context import ProviderContext
from federation.oidc.grants import Grant

# Scope → standard claims it releases (OIDC Core §5.4, plus the hub's "groups").
SCOPE_CLAIMS: dict[str, tuple[str, ...]] = {
    "profile": ("name",),
    "email": ("email", "email_verified"),
    "groups": ("roles",),
}
PARTNER_CLAIMS = ("partner_id", "partner_kind", "groups", "acr", "amr")


def partner_claims(ctx: ProviderContext, identity: FederatedIdentity) -> dict[str, Any]:
    partner = ctx.registry.partner(identity.partner_id)
    claims: dict[str, Any] = {
        "partner_id": identity.partner_id,
        "partner_kind": partner.settings.kind.value if partner else None,
        "groups": list(identity.groups),
        "acr": identity.acr,
        "amr": list(identity.amr),
    }
    return {k: v for k, v in claims.items() if v is not None}


def scoped_claims(identity: FederatedIdentity, scope: tuple[str, ...]) -> dict[str, Any]:
    values: dict[str, Any] = {
        "name": identity.name,
        "email": identity.email,
        # Only a verified email reaches a bound identity (invariant 1); say so explicitly.
        "email_verified": identity.email_verified if identity.email else None,
        "roles": list(identity.roles),
    }
    claims: dict[str, Any] = {}
    for name in scope:
        for claim in SCOPE_CLAIMS.get(name, ()):
            if values.get(claim) is not None:
                claims[claim] = values[claim]
    return claims


def userinfo(
    ctx: ProviderContext, identity: FederatedIdentity, scope: tuple[str, ...]
) -> dict[str, Any]:
    return {
        "sub": identity.hub_subject,
        **scoped_claims(identity, scope),
        **partner_claims(ctx, identity),
    }


def at_hash(access_token: str) -> str:
    """Left half of the SHA-256 of the access token (RS256 and ES256 both hash with SHA-256)."""
    half = hashlib.sha256(access_token.encode("ascii")).digest()[:16]
    return base64.urlsafe_b64encode(half).decode().rstrip("=")


def id_token(
    ctx: ProviderContext, grant: Grant, *, nonce: str | None, access_token: str | None
) -> str:
    now = ctx.now()
    claims: dict[str, Any] = {
        "iss": ctx.issuer,
        "sub": grant.identity.hub_subject,
        "aud": grant.client_id,
        "azp": grant.client_id,
        "iat": now,
        "exp": now + ctx.tokens.id_token_ttl,
        "auth_time": grant.auth_time,
        "sid": grant.sid,
        **scoped_claims(grant.identity, grant.scope),
        **partner_claims(ctx, grant.identity),
    }
    if nonce:
        claims["nonce"] = nonce
    if access_token:
        claims["at_hash"] = at_hash(access_token)
    key = ctx.keys.keys.current
    return sign(claims, key.private_key, key.alg, key.kid, typ="JWT")
