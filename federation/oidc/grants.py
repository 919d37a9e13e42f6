"""Grants and their token families, kept in the store (every key with a TTL, tokens hashed).

A *grant* is what one authorization gave one client: identity, scope, session, auth time.
Every token issued from one authorization code belongs to one *family*: the refresh
tokens that rotate from it and the access tokens minted along the way. Revoking the
family (code replay, refresh-token reuse, revocation of a refresh token, end of the
session) makes every one of them fail at once.

Store layout (``h(x)`` is SHA-256 hex; raw tokens are never stored):

* ``oidc:code:{h(code)}`` — the pending code (taken once), TTL ``code_ttl``
* ``oidc:code-used:{h(code)}`` — the family a redeemed code started (replay detection)
* ``oidc:family:{fid}`` — the live family: grant and current refresh token hash
* ``oidc:family-jtis:{fid}`` — set of access-token ``jti`` issued in the family
* ``oidc:refresh:{h(rt)}`` — a live refresh token → its family (taken once)
* ``oidc:refresh-used:{h(rt)}`` — a rotated refresh token → its family (reuse detection)
* ``oidc:revoked-jti:{jti}`` — a revoked access token, until it would have expired
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from federation.errors import InvalidGrant
from federation.identity import FederatedIdentity
from federation.oidc.context import ProviderContext
from federation.sessions import identity_for_sid
from federation.stores.base import Put, SetAdd


@dataclass(frozen=True, slots=True)
class Grant:
    client_id: str
    scope: tuple[str, ...]
    identity: FederatedIdentity
    sid: str
    auth_time: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "client_id": self.client_id,
            "scope": list(self.scope),
            "identity": self.identity.to_dict(),
            "sid": self.sid,
            "auth_time": self.auth_time,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Grant:
        return cls(
            client_id=str(data["client_id"]),
            scope=tuple(data["scope"]),
            identity=FederatedIdentity.from_dict(data["identity"]),
            sid=str(data["sid"]),
            auth_time=int(data["auth_time"]),
        )

    def narrowed(self, scope: tuple[str, ...]) -> Grant:
        return Grant(self.client_id, scope, self.identity, self.sid, self.auth_time)


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def new_token() -> str:
    return secrets.token_urlsafe(32)


# --- sessions -------------------------------------------------------------------------


async def session_identity(ctx: ProviderContext, sid: str) -> FederatedIdentity | None:
    """The identity of the hub session behind ``sid`` while it lives (logout ends it)."""
    return await identity_for_sid(ctx.store, sid, ctx.clock())


async def session_alive(ctx: ProviderContext, sid: str) -> bool:
    return await session_identity(ctx, sid) is not None


# --- families -------------------------------------------------------------------------


def new_family_id() -> str:
    return secrets.token_urlsafe(16)


def access_token_index(ctx: ProviderContext, family: str, jti: str) -> SetAdd:
    """The write that files an access token under its family (so revoking finds it)."""
    return (f"oidc:family-jtis:{family}", jti, ctx.tokens.access_token_ttl)


async def revoke_jti(ctx: ProviderContext, jti: str, ttl: float) -> None:
    if ttl > 0:
        await ctx.store.put(f"oidc:revoked-jti:{jti}", {}, ttl)


async def jti_revoked(ctx: ProviderContext, jti: str) -> bool:
    return await ctx.store.get(f"oidc:revoked-jti:{jti}") is not None


async def revoke_family(ctx: ProviderContext, family: str) -> None:
    """End a family: its live refresh token and every access token it minted."""
    record = await ctx.store.take(f"oidc:family:{family}")
    if record is not None and record.get("current"):
        await ctx.store.delete(f"oidc:refresh:{record['current']}")
    jtis_key = f"oidc:family-jtis:{family}"
    for jti in await ctx.store.set_members(jtis_key):
        await revoke_jti(ctx, jti, ctx.tokens.access_token_ttl + ctx.tokens.leeway_seconds)
    await ctx.store.delete(jtis_key)


async def redeem_once(ctx: ProviderContext, kind: str, hashed: str) -> dict[str, Any]:
    """Take a single-use credential (a code, a refresh token) by its hash.

    Presenting one again finds its ``{kind}-used`` marker: two parties hold it, so the
    family it started is revoked (RFC 6749 §4.1.2 for codes, RFC 9700 §4.14.2 for refresh
    tokens) and the request fails like any unknown one.
    """
    record = await ctx.store.take(f"oidc:{kind}:{hashed}")
    if record is not None:
        return record
    used = await ctx.store.get(f"oidc:{kind}-used:{hashed}")
    if used is not None:
        await revoke_family(ctx, str(used["family"]))
        raise InvalidGrant(f"{kind} presented again; family {used['family']} revoked")
    raise InvalidGrant(f"unknown, expired or revoked {kind}")


def refresh_token_writes(ctx: ProviderContext, family: str, grant: Grant) -> tuple[str, list[Put]]:
    """Mint the family's next refresh token and the writes that record it (sliding TTL):
    the token (hashed) → its family, and the family → its grant and current token."""
    token = new_token()
    hashed = token_hash(token)
    ttl = ctx.tokens.refresh_token_ttl
    family_record = {"grant": grant.to_dict(), "current": hashed, "expires_at": ctx.now() + ttl}
    return token, [
        (f"oidc:refresh:{hashed}", {"family": family}, ttl),
        (f"oidc:family:{family}", family_record, ttl),
    ]


async def family_grant(ctx: ProviderContext, family: str) -> tuple[Grant, int] | None:
    record = await ctx.store.get(f"oidc:family:{family}")
    if record is None:
        return None
    return Grant.from_dict(record["grant"]), int(record["expires_at"])
