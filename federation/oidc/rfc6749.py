"""RFC 6749 — OAuth 2.0: client authentication, the authorization request, the code grant.

* Client authentication (§2.3): ``client_secret_basic``, ``client_secret_post`` or
  ``none`` — exactly the method the client is registered with, secrets compared in
  constant time. Basic credentials are parsed by authlib's helper.
* The authorization request (§4.1.1, OIDC Core §3.1.2.1) is validated in two steps: the
  client and its ``redirect_uri`` (exact string match, invariant 5) first — a failure
  there is shown to the user, never redirected — then everything else, whose errors go
  back to that redirect URI.
* The authorization code (§4.1.2, §4.1.3): single use (``Store.take``), short-lived, bound
  to the client, redirect URI, PKCE challenge, nonce, scope, session and identity. A
  replayed code fails with ``invalid_grant`` and revokes every token issued from it.
"""

from __future__ import annotations

import hmac
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from authlib.oauth2.rfc6749.util import extract_basic_authorization, list_to_scope, scope_to_list

from federation.errors import (
    InvalidClient,
    InvalidGrant,
    InvalidRedirectUri,
    InvalidRequest,
    InvalidScope,
    IsthmusError,
    UnauthorizedClient,
    UnsupportedResponseType,
)
from federation.oidc import backchannel, core, rfc7636, rfc9068
from federation.oidc.context import ProviderContext
from federation.oidc.grants import (
    Grant,
    access_token_index,
    new_family_id,
    new_token,
    redeem_once,
    refresh_token_writes,
    session_alive,
    token_hash,
)
from federation.sessions import Session
from federation.settings import ClientSettings
from federation.stores.base import Put, SetAdd

MAX_PARAM = 2048
PROMPTS = frozenset({"none", "login", "consent", "select_account"})


class RequestNotSupported(IsthmusError):
    error = "request_not_supported"
    status = 400
    public_message = "Request objects are not supported."


class ClientAuthenticationFailed(InvalidClient):
    """invalid_client, remembering whether the client tried HTTP Basic (→ 401 + challenge)."""

    def __init__(self, detail: str, *, client_id: str | None, basic: bool) -> None:
        super().__init__(detail)
        self.client_id = client_id
        self.basic = basic


def parameters(pairs: Iterable[tuple[str, str]]) -> dict[str, str]:
    """Request parameters; each may appear once (§3.1), empty ones count as absent."""
    params: dict[str, str] = {}
    for name, value in pairs:
        if name in params:
            raise InvalidRequest(f"parameter {name!r} repeated")
        if len(value) > MAX_PARAM:
            raise InvalidRequest(f"parameter {name!r} is too long")
        if value:
            params[name] = value
    return params


# --- client authentication (§2.3) ------------------------------------------------------


def authenticate_client(
    ctx: ProviderContext, authorization: str | None, form: Mapping[str, str]
) -> ClientSettings:
    basic = authorization is not None
    if basic:
        client_id, secret = extract_basic_authorization({"Authorization": authorization})
        if client_id is None:
            raise ClientAuthenticationFailed(
                "unreadable Basic credentials", client_id=None, basic=True
            )
        if "client_secret" in form:
            raise InvalidRequest("client credentials sent in two ways")
        method = "client_secret_basic"
    elif "client_secret" in form:
        client_id, secret = form.get("client_id"), form["client_secret"]
        method = "client_secret_post"
    else:
        client_id, secret, method = form.get("client_id"), None, "none"
    if not client_id:
        raise ClientAuthenticationFailed("no client identification", client_id=None, basic=basic)
    if "client_id" in form and form["client_id"] != client_id:
        raise InvalidRequest("client_id differs from the authenticated client")
    client = ctx.registry.client(client_id)
    if client is None:
        raise ClientAuthenticationFailed(
            f"unknown client {client_id!r}", client_id=client_id, basic=basic
        )
    if client.token_endpoint_auth_method != method:
        raise ClientAuthenticationFailed(
            f"client {client_id} authenticated with {method}, registered for "
            f"{client.token_endpoint_auth_method}",
            client_id=client_id,
            basic=basic,
        )
    if method != "none":
        expected = (client.client_secret or "").encode()
        if not expected or not hmac.compare_digest((secret or "").encode(), expected):
            raise ClientAuthenticationFailed(
                f"wrong secret for client {client_id}", client_id=client_id, basic=basic
            )
    return client


# --- the authorization request (§4.1.1) ------------------------------------------------


@dataclass(frozen=True, slots=True)
class AuthorizationRequest:
    client: ClientSettings
    redirect_uri: str
    scope: tuple[str, ...]
    state: str | None
    nonce: str | None
    code_challenge: str | None
    prompt: frozenset[str]
    max_age: int | None


def resolve_client(ctx: ProviderContext, params: Mapping[str, str]) -> tuple[ClientSettings, str]:
    """Step one: a known client and one of its registered redirect URIs, byte for byte."""
    client_id = params.get("client_id")
    if not client_id:
        raise InvalidRequest(
            "authorization request without client_id",
            public_message="The application did not identify itself.",
        )
    client = ctx.registry.client(client_id)
    if client is None:
        raise InvalidRequest(
            f"unknown client {client_id!r}",
            public_message="This application is not known to the sign-in service.",
        )
    redirect_uri = params.get("redirect_uri")
    if not redirect_uri:
        raise InvalidRedirectUri(f"client {client_id} sent no redirect_uri")
    if redirect_uri not in client.redirect_uris:
        raise InvalidRedirectUri(f"client {client_id}: unregistered redirect_uri {redirect_uri!r}")
    return client, redirect_uri


def validate_authorization_request(
    client: ClientSettings, redirect_uri: str, params: Mapping[str, str]
) -> AuthorizationRequest:
    """Step two: errors raised here are sent back to ``redirect_uri``."""
    if "request" in params or "request_uri" in params:
        raise RequestNotSupported("request object sent")
    if params.get("response_type") != "code":
        raise UnsupportedResponseType(f"response_type {params.get('response_type')!r}")
    if params.get("response_mode", "query") != "query":
        raise InvalidRequest(f"response_mode {params.get('response_mode')!r}")
    if "authorization_code" not in client.grant_types:
        raise UnauthorizedClient(f"client {client.client_id} may not use the code grant")
    scope = tuple(dict.fromkeys(scope_to_list(params.get("scope", "")) or []))
    if "openid" not in scope:
        raise InvalidScope("scope without openid")
    unknown = [s for s in scope if s not in client.scopes]
    if unknown:
        raise InvalidScope(f"scopes {unknown} not allowed for client {client.client_id}")
    prompt = frozenset(params.get("prompt", "").split())
    if "none" in prompt and len(prompt) > 1:
        raise InvalidRequest("prompt=none combined with other values")
    max_age = params.get("max_age")
    if max_age is not None and not (max_age.isdigit() and len(max_age) <= 9):
        raise InvalidRequest("max_age is not a non-negative integer")
    challenge = rfc7636.validate_challenge(
        params.get("code_challenge"), params.get("code_challenge_method"), public=client.public
    )
    return AuthorizationRequest(
        client=client,
        redirect_uri=redirect_uri,
        scope=scope,
        state=params.get("state"),
        nonce=params.get("nonce"),
        code_challenge=challenge,
        prompt=prompt & PROMPTS,
        max_age=int(max_age) if max_age is not None else None,
    )


def needs_fresh_login(request: AuthorizationRequest, session: Session, now: int) -> bool:
    if "login" in request.prompt:
        return True
    auth_time = session.identity.auth_time or session.created_at
    return request.max_age is not None and now - auth_time > request.max_age


# --- the authorization code (§4.1.2, §4.1.3) -------------------------------------------


async def issue_code(ctx: ProviderContext, request: AuthorizationRequest, session: Session) -> str:
    grant = Grant(
        client_id=request.client.client_id,
        scope=request.scope,
        identity=session.identity,
        sid=session.sid,
        auth_time=session.identity.auth_time or session.created_at,
    )
    code = new_token()
    await ctx.store.put(
        f"oidc:code:{token_hash(code)}",
        {
            "grant": grant.to_dict(),
            "redirect_uri": request.redirect_uri,
            "code_challenge": request.code_challenge,
            "nonce": request.nonce,
            # how long the session can live: the sid → clients record for back-channel
            # logout (written with the tokens) lasts exactly that long
            "session_expires_at": session.expires_at,
        },
        ctx.tokens.code_ttl,
    )
    return code


async def exchange_code(
    ctx: ProviderContext, client: ClientSettings, form: Mapping[str, str]
) -> dict[str, Any]:
    code = form.get("code")
    if not code or len(code) > 128:
        raise InvalidRequest("token request without code")
    hashed = token_hash(code)
    record = await redeem_once(ctx, "code", hashed)
    family = new_family_id()
    await ctx.store.put(
        f"oidc:code-used:{hashed}",
        {"family": family},
        max(ctx.tokens.code_ttl, ctx.tokens.access_token_ttl),
    )
    grant = Grant.from_dict(record["grant"])
    if grant.client_id != client.client_id:
        raise InvalidGrant(f"code of client {grant.client_id} presented by {client.client_id}")
    if form.get("redirect_uri") != record["redirect_uri"]:
        raise InvalidGrant("redirect_uri differs from the authorization request's")
    rfc7636.verify(form.get("code_verifier"), record.get("code_challenge"))
    await ensure_still_allowed(ctx, grant)
    session_left = int(record.get("session_expires_at") or 0) - ctx.now()
    return await issue_tokens(
        ctx,
        client,
        grant,
        family,
        nonce=record.get("nonce"),
        adds=backchannel.record_client(client, grant.sid, session_left),
    )


async def ensure_still_allowed(ctx: ProviderContext, grant: Grant) -> None:
    if ctx.partner_may_sign_in(grant.identity.partner_id) is None:
        raise InvalidGrant(f"partner {grant.identity.partner_id} may no longer sign in")
    if not await session_alive(ctx, grant.sid):
        raise InvalidGrant(f"session {grant.sid} has ended")


async def issue_tokens(
    ctx: ProviderContext,
    client: ClientSettings,
    grant: Grant,
    family: str,
    *,
    nonce: str | None = None,
    refresh_grant: Grant | None = None,
    adds: Sequence[SetAdd] = (),
) -> dict[str, Any]:
    """The token response (§5.1): access token, ID token, and a refresh token if allowed.

    ``adds`` are set additions written in the same round trip (the client filed under
    its session for back-channel logout)."""
    access = rfc9068.issue(ctx, grant)
    response: dict[str, Any] = {
        "access_token": access.token,
        "token_type": "Bearer",
        "expires_in": access.expires_in,
        "scope": list_to_scope(list(grant.scope)),
        "id_token": core.id_token(ctx, grant, nonce=nonce, access_token=access.token),
    }
    puts: list[Put] = []
    if "refresh_token" in client.grant_types:
        response["refresh_token"], puts = refresh_token_writes(ctx, family, refresh_grant or grant)
    await ctx.store.write_many(puts=puts, adds=[access_token_index(ctx, family, access.jti), *adds])
    return response
