"""Unit tests of the protocol modules, without the web layer."""

from __future__ import annotations

import asyncio
import base64
from typing import Any

import pytest

from federation.errors import (
    InvalidGrant,
    InvalidRedirectUri,
    InvalidRequest,
    InvalidScope,
    InvalidToken,
    UnsupportedResponseType,
)
from federation.identity import FederatedIdentity
from federation.keys import KeyManager
from federation.oidc import core, discovery, rfc6749, rfc7009, rfc7636, rfc7662, rfc9068
from federation.oidc.context import ProviderContext
from federation.oidc.grants import Grant
from federation.oidc.refresh import exchange_refresh_token
from federation.oidc.rpinitiated import validate_logout_request
from federation.registry import StaticRegistry
from federation.sessions import SessionManager
from federation.settings import ClientSettings
from federation.stores.memory import MemoryStore
from tests.oidc.support import APP_BYE, APP_CB, ISSUER, SECRET, SPA_CB, make_settings, pkce_pair

ALICE = FederatedIdentity(
    partner_id="acme",
    connection_id="acme-mock",
    issuer="urn:mock",
    subject="alice",
    email="alice@acme.test",
    email_verified=True,
    name="Alice",
    groups=("buyers",),
    amr=("mock",),
)


@pytest.fixture
def ctx() -> ProviderContext:
    settings = make_settings()
    return ProviderContext(
        ISSUER,
        StaticRegistry.from_settings(settings),
        MemoryStore(),
        KeyManager(None),
        settings.tokens,
    )


def client(ctx: ProviderContext, client_id: str) -> ClientSettings:
    found = ctx.registry.client(client_id)
    assert found is not None
    return found


async def signed_in(ctx: ProviderContext) -> Grant:
    session = await SessionManager(ctx.store, 3600).create(ALICE)
    return Grant("orders", ("openid", "email"), ALICE, session.sid, session.created_at)


# --- rfc7636 ----------------------------------------------------------------------------


def test_pkce_s256_round_trip() -> None:
    verifier, challenge = pkce_pair()
    assert rfc7636.validate_challenge(challenge, "S256", public=True) == challenge
    rfc7636.verify(verifier, challenge)
    with pytest.raises(InvalidGrant):
        rfc7636.verify(pkce_pair()[0], challenge)
    with pytest.raises(InvalidGrant):
        rfc7636.verify(None, challenge)


def test_pkce_rfc_appendix_b_vector() -> None:
    rfc7636.verify(
        "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk", "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
    )


@pytest.mark.parametrize(
    ("challenge", "method", "public"),
    [
        (None, None, True),  # public client: PKCE required
        ("a" * 43, "plain", False),  # plain refused
        ("a" * 43, None, False),  # default method is plain: refused
        ("short", "S256", False),  # malformed
        (None, "S256", False),  # method without challenge
    ],
)
def test_pkce_refusals(challenge: str | None, method: str | None, public: bool) -> None:
    with pytest.raises(InvalidRequest):
        rfc7636.validate_challenge(challenge, method, public=public)


def test_pkce_optional_for_confidential_but_no_downgrade() -> None:
    assert rfc7636.validate_challenge(None, None, public=False) is None
    rfc7636.verify(None, None)
    with pytest.raises(InvalidGrant):
        rfc7636.verify(pkce_pair()[0], None)


# --- rfc6749 ----------------------------------------------------------------------------


def test_parameters_refuse_repeats_and_drop_empties() -> None:
    assert rfc6749.parameters([("a", "1"), ("b", "")]) == {"a": "1"}
    with pytest.raises(InvalidRequest):
        rfc6749.parameters([("a", "1"), ("a", "2")])


def _basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def test_client_authentication_methods(ctx: ProviderContext) -> None:
    auth = rfc6749.authenticate_client
    assert auth(ctx, _basic("orders", SECRET), {}).client_id == "orders"
    assert (
        auth(ctx, None, {"client_id": "orders-post", "client_secret": SECRET}).client_id
        == "orders-post"
    )
    assert auth(ctx, None, {"client_id": "spa"}).client_id == "spa"


@pytest.mark.parametrize(
    ("header", "form"),
    [
        (_basic("orders", "nope"), {}),
        ("Basic !!!", {}),
        ("Bearer abc", {}),
        (None, {"client_id": "orders"}),  # registered for basic
        (None, {"client_id": "orders", "client_secret": SECRET}),  # post, registered for basic
        (_basic("orders-post", SECRET), {}),  # basic, registered for post
        (None, {"client_id": "ghost"}),
        (None, {}),
        (None, {"client_id": "spa", "client_secret": "x"}),
    ],
)
def test_client_authentication_refusals(
    ctx: ProviderContext, header: str | None, form: dict[str, str]
) -> None:
    with pytest.raises(rfc6749.ClientAuthenticationFailed) as caught:
        rfc6749.authenticate_client(ctx, header, form)
    assert caught.value.status == 401 and caught.value.error == "invalid_client"


def test_client_credentials_in_two_places(ctx: ProviderContext) -> None:
    with pytest.raises(InvalidRequest):
        rfc6749.authenticate_client(ctx, _basic("orders", SECRET), {"client_secret": SECRET})


def test_resolve_client_exact_redirect(ctx: ProviderContext) -> None:
    assert rfc6749.resolve_client(ctx, {"client_id": "orders", "redirect_uri": APP_CB})[1] == APP_CB
    with pytest.raises(InvalidRedirectUri):
        rfc6749.resolve_client(ctx, {"client_id": "orders", "redirect_uri": APP_CB + "#x"})
    with pytest.raises(InvalidRedirectUri):
        rfc6749.resolve_client(ctx, {"client_id": "orders"})
    with pytest.raises(InvalidRequest):
        rfc6749.resolve_client(ctx, {"client_id": "ghost", "redirect_uri": APP_CB})


def test_authorization_request_validation(ctx: ProviderContext) -> None:
    orders = client(ctx, "orders")
    ok = rfc6749.validate_authorization_request(
        orders,
        APP_CB,
        {
            "response_type": "code",
            "scope": "openid email openid",
            "prompt": "login",
            "max_age": "60",
        },
    )
    assert ok.scope == ("openid", "email") and ok.prompt == {"login"} and ok.max_age == 60
    bad: list[tuple[dict[str, str], type[Exception]]] = [
        ({"response_type": "token", "scope": "openid"}, UnsupportedResponseType),
        ({"response_type": "code", "scope": "profile"}, InvalidScope),
        ({"response_type": "code", "scope": "openid admin"}, InvalidScope),
        ({"response_type": "code", "scope": "openid", "prompt": "none login"}, InvalidRequest),
        ({"response_type": "code", "scope": "openid", "max_age": "-1"}, InvalidRequest),
        ({"response_type": "code", "scope": "openid", "response_mode": "fragment"}, InvalidRequest),
        (
            {"response_type": "code", "scope": "openid", "request": "x.y.z"},
            rfc6749.RequestNotSupported,
        ),
    ]
    for params, error in bad:
        with pytest.raises(error):
            rfc6749.validate_authorization_request(orders, APP_CB, params)


async def _code(
    ctx: ProviderContext, client_id: str, redirect_uri: str, challenge: str | None = None
) -> str:
    session = await SessionManager(ctx.store, 3600).create(ALICE)
    request = rfc6749.AuthorizationRequest(
        client(ctx, client_id), redirect_uri, ("openid",), "s", "n", challenge, frozenset(), None
    )
    return await rfc6749.issue_code(ctx, request, session)


async def test_code_is_bound_to_its_client(ctx: ProviderContext) -> None:
    code = await _code(ctx, "orders", APP_CB)
    with pytest.raises(InvalidGrant):
        await rfc6749.exchange_code(
            ctx, client(ctx, "orders-post"), {"code": code, "redirect_uri": APP_CB}
        )


async def test_concurrent_code_redemption_has_one_winner(ctx: ProviderContext) -> None:
    verifier, challenge = pkce_pair()
    code = await _code(ctx, "spa", SPA_CB, challenge)
    form = {"code": code, "redirect_uri": SPA_CB, "code_verifier": verifier}
    results = await asyncio.gather(
        *(rfc6749.exchange_code(ctx, client(ctx, "spa"), form) for _ in range(5)),
        return_exceptions=True,
    )
    winners = [r for r in results if isinstance(r, dict)]
    assert len(winners) == 1
    assert all(isinstance(r, InvalidGrant) for r in results if not isinstance(r, dict))
    # The losers were replays: what the winner got is revoked.
    with pytest.raises(InvalidToken):
        await rfc9068.validate(ctx, winners[0]["access_token"])


# --- refresh ------------------------------------------------------------------------------


async def test_concurrent_refresh_counts_as_reuse(ctx: ProviderContext) -> None:
    code = await _code(ctx, "orders", APP_CB)
    orders = client(ctx, "orders")
    tokens = await rfc6749.exchange_code(ctx, orders, {"code": code, "redirect_uri": APP_CB})
    form = {"refresh_token": tokens["refresh_token"]}
    results = await asyncio.gather(
        exchange_refresh_token(ctx, orders, form),
        exchange_refresh_token(ctx, orders, form),
        return_exceptions=True,
    )
    winner = next(r for r in results if isinstance(r, dict))
    assert any(isinstance(r, InvalidGrant) for r in results)
    with pytest.raises(InvalidGrant):
        await exchange_refresh_token(ctx, orders, {"refresh_token": winner["refresh_token"]})


async def test_refresh_tokens_are_stored_hashed(ctx: ProviderContext) -> None:
    code = await _code(ctx, "orders", APP_CB)
    tokens = await rfc6749.exchange_code(
        ctx, client(ctx, "orders"), {"code": code, "redirect_uri": APP_CB}
    )
    store = ctx.store
    assert isinstance(store, MemoryStore)
    dump = repr(store._entries)
    assert tokens["refresh_token"] not in dump and code not in dump


# --- tokens ---------------------------------------------------------------------------------


async def test_access_token_claims_and_validation(ctx: ProviderContext) -> None:
    grant = await signed_in(ctx)
    access = rfc9068.issue(ctx, grant)
    claims, identity = await rfc9068.validate(ctx, access.token)
    assert identity == ALICE
    assert claims["sub"] == ALICE.hub_subject and claims["client_id"] == "orders"
    assert claims["partner_kind"] == "supplier" and claims["scope"] == "openid email"


async def test_id_token_is_not_an_access_token(ctx: ProviderContext) -> None:
    grant = await signed_in(ctx)
    id_token = core.id_token(ctx, grant, nonce="n", access_token=None)
    with pytest.raises(InvalidToken):
        await rfc9068.validate(ctx, id_token)  # typ JWT, not at+jwt


async def test_expired_access_token_is_inactive() -> None:
    now = [1_000_000.0]
    settings = make_settings()
    ctx = ProviderContext(
        ISSUER,
        StaticRegistry.from_settings(settings),
        MemoryStore(),
        KeyManager(None),
        settings.tokens,
        clock=lambda: now[0],
    )
    grant = await signed_in(ctx)
    access = rfc9068.issue(ctx, grant)
    now[0] += settings.tokens.access_token_ttl + settings.tokens.leeway_seconds + 1
    assert await rfc7662.introspect(ctx, client(ctx, "orders"), access.token) == {"active": False}


def test_at_hash_matches_oidc_example() -> None:
    # OIDC Core, Appendix A.3 (the example access token and its at_hash)
    assert core.at_hash("jHkWEdUXMU1BwAsC4vtUsZwnNvTIxEl0z9K3vx5KF0Y") == "77QmUPtjPfzWtF2AnpK9RQ"


def test_userinfo_claims_follow_scope(ctx: ProviderContext) -> None:
    info = core.userinfo(ctx, ALICE, ("openid",))
    assert set(info) == {"sub", "partner_id", "partner_kind", "groups", "amr"}
    assert core.userinfo(ctx, ALICE, ("openid", "email"))["email"] == "alice@acme.test"


async def test_revocation_ignores_other_clients_tokens(ctx: ProviderContext) -> None:
    grant = await signed_in(ctx)
    access = rfc9068.issue(ctx, grant)
    assert await rfc7009.revoke(ctx, client(ctx, "spa"), access.token) is False
    assert await rfc7009.revoke(ctx, client(ctx, "orders"), access.token) is True
    assert await rfc7009.revoke(ctx, client(ctx, "orders"), "garbage") is False


def test_discovery_lists_only_what_is_built() -> None:
    meta: dict[str, Any] = discovery.metadata(ISSUER, "RS256")
    assert meta["response_types_supported"] == ["code"]
    assert meta["id_token_signing_alg_values_supported"] == ["RS256"]
    assert meta["request_parameter_supported"] is False


# --- rpinitiated ----------------------------------------------------------------------------


async def test_logout_request_validation(ctx: ProviderContext) -> None:
    grant = await signed_in(ctx)
    hint = core.id_token(ctx, grant, nonce=None, access_token=None)
    ok = validate_logout_request(
        ctx, {"id_token_hint": hint, "post_logout_redirect_uri": APP_BYE, "state": "a b"}
    )
    assert ok.may_end(grant.sid) and not ok.may_end("another-session")
    assert ok.redirect_url() == f"{APP_BYE}?state=a+b"
    with pytest.raises(InvalidRedirectUri):
        validate_logout_request(
            ctx, {"id_token_hint": hint, "post_logout_redirect_uri": APP_BYE + "/"}
        )
    with pytest.raises(InvalidRequest):
        validate_logout_request(ctx, {"id_token_hint": hint, "client_id": "spa"})
    without = validate_logout_request(
        ctx, {"client_id": "orders", "post_logout_redirect_uri": APP_BYE}
    )
    assert not without.may_end(grant.sid)
    with pytest.raises(InvalidRedirectUri):
        validate_logout_request(ctx, {"post_logout_redirect_uri": APP_BYE})
