"""Flows: a partner user signs in through the mock IdP into an app that is an OIDC client
of the hub — public and confidential clients, tokens, userinfo, introspection,
revocation, refresh rotation and reuse, refusals, logout and key rotation."""

from __future__ import annotations

import httpx
import jwt
import pytest

from tests.oidc.support import (
    APP_BYE,
    APP_CB,
    ISSUER,
    SECRET,
    SPA_CB,
    Browser,
    Env,
    basic,
    confidential_tokens,
    make_env,
    make_settings,
    pkce_pair,
    public_tokens,
    query_of,
    secret_post_token_response,
    token_request,
    validate_id_token,
)


async def introspect(env: Env, token: str) -> dict[str, object]:
    response = await env.http.post(
        "/oauth2/introspect", data={"token": token}, headers=basic("orders")
    )
    assert response.status_code == 200, response.text
    assert response.headers["cache-control"] == "no-store"
    body: dict[str, object] = response.json()
    return body


async def refresh(env: Env, token: str) -> httpx.Response:
    return await token_request(
        env.http, {"grant_type": "refresh_token", "refresh_token": token}, basic("orders")
    )


# --- discovery and keys -----------------------------------------------------------------


async def test_discovery_document(env: Env) -> None:
    meta = (await env.http.get("/.well-known/openid-configuration")).json()
    assert meta["issuer"] == ISSUER
    assert meta["authorization_endpoint"] == f"{ISSUER}/oauth2/authorize"
    assert meta["jwks_uri"] == f"{ISSUER}/oauth2/jwks"
    assert meta["end_session_endpoint"] == f"{ISSUER}/oauth2/logout"
    assert meta["code_challenge_methods_supported"] == ["S256"]
    assert meta["authorization_response_iss_parameter_supported"] is True
    assert "partner_id" in meta["claims_supported"]
    jwks = (await env.http.get(meta["jwks_uri"])).json()
    assert len(jwks["keys"]) == 2  # current + next
    assert all("d" not in k for k in jwks["keys"])


# --- the code flow ----------------------------------------------------------------------


async def test_confidential_client_full_login(browser: Browser, env: Env) -> None:
    first = await browser.authorize("orders", APP_CB)
    assert first.status_code == 303 and first.headers["location"].startswith("/login?rd=")
    tokens = await confidential_tokens(browser)
    assert tokens["token_type"] == "Bearer" and tokens["refresh_token"]
    claims = await validate_id_token(env.http, tokens["id_token"], "orders")
    alice_sub = claims["sub"]
    assert "@" not in alice_sub and claims["nonce"] == "n-1"
    assert claims["partner_id"] == "acme" and claims["partner_kind"] == "supplier"
    assert claims["groups"] == ["buyers"] and claims["amr"] == ["mock"]
    assert claims["email"] == "alice@acme.test" and claims["sid"] and claims["auth_time"]
    assert claims["at_hash"]
    access = jwt.decode(tokens["access_token"], options={"verify_signature": False})
    assert jwt.get_unverified_header(tokens["access_token"])["typ"] == "at+jwt"
    assert access["client_id"] == "orders" and access["jti"] and access["sid"] == claims["sid"]
    assert access["partner_id"] == "acme" and access["scope"] == "openid email profile groups"


async def test_public_client_full_login_with_pkce(browser: Browser, env: Env) -> None:
    tokens = await public_tokens(browser)
    claims = await validate_id_token(env.http, tokens["id_token"], "spa")
    assert claims["partner_id"] == "acme"


async def test_client_secret_post(browser: Browser, env: Env) -> None:
    response = await secret_post_token_response(browser)
    assert response.status_code == 200, response.text


async def test_second_app_reuses_the_hub_session(browser: Browser) -> None:
    await confidential_tokens(browser)
    _, challenge = pkce_pair()
    response = await browser.authorize(
        "spa", SPA_CB, code_challenge=challenge, code_challenge_method="S256"
    )
    assert response.headers["location"].startswith(SPA_CB + "?code=")


async def test_userinfo(browser: Browser, env: Env) -> None:
    tokens = await confidential_tokens(browser)
    info = await env.http.get(
        "/oauth2/userinfo", headers={"Authorization": f"Bearer {tokens['access_token']}"}
    )
    assert info.status_code == 200
    body = info.json()
    assert body["email"] == "alice@acme.test" and body["name"] == "Alice"
    assert body["partner_id"] == "acme" and body["groups"] == ["buyers"]
    assert body["roles"] == ["approver"]
    assert body["sub"] == (await validate_id_token(env.http, tokens["id_token"], "orders"))["sub"]
    posted = await env.http.post("/oauth2/userinfo", data={"access_token": tokens["access_token"]})
    assert posted.status_code == 200


async def test_userinfo_scope_limits_claims(browser: Browser, env: Env) -> None:
    tokens = await confidential_tokens(browser, scope="openid")
    body = (
        await env.http.get(
            "/oauth2/userinfo", headers={"Authorization": f"Bearer {tokens['access_token']}"}
        )
    ).json()
    assert "email" not in body and "name" not in body
    assert body["partner_id"] == "acme"  # partner claims always travel


async def test_userinfo_refuses_bad_token(env: Env) -> None:
    response = await env.http.get("/oauth2/userinfo", headers={"Authorization": "Bearer x.y.z"})
    assert response.status_code == 401
    assert 'error="invalid_token"' in response.headers["www-authenticate"]
    assert env.failures("oidc.userinfo")


# --- introspection and revocation -------------------------------------------------------


async def test_introspection_active_then_inactive_after_revocation(
    browser: Browser, env: Env
) -> None:
    tokens = await confidential_tokens(browser)
    active = await introspect(env, tokens["access_token"])
    assert active["active"] is True and active["client_id"] == "orders"
    assert active["partner_id"] == "acme" and active["token_type"] == "Bearer"
    assert (await introspect(env, tokens["refresh_token"]))["active"] is True
    revoked = await env.http.post(
        "/oauth2/revoke", data={"token": tokens["access_token"]}, headers=basic("orders")
    )
    assert revoked.status_code == 200
    assert await introspect(env, tokens["access_token"]) == {"active": False}
    assert (await introspect(env, tokens["refresh_token"]))["active"] is True


async def test_revoking_refresh_token_ends_its_family(browser: Browser, env: Env) -> None:
    tokens = await confidential_tokens(browser)
    await env.http.post(
        "/oauth2/revoke",
        data={"token": tokens["refresh_token"], "token_type_hint": "refresh_token"},
        headers=basic("orders"),
    )
    assert await introspect(env, tokens["refresh_token"]) == {"active": False}
    assert await introspect(env, tokens["access_token"]) == {"active": False}
    assert (await refresh(env, tokens["refresh_token"])).status_code == 400


async def test_revocation_of_unknown_token_is_200(env: Env) -> None:
    response = await env.http.post(
        "/oauth2/revoke", data={"token": "nothing-like-it"}, headers=basic("orders")
    )
    assert response.status_code == 200


async def test_revocation_by_another_client_does_nothing(browser: Browser, env: Env) -> None:
    tokens = await confidential_tokens(browser)
    response = await env.http.post(
        "/oauth2/revoke", data={"token": tokens["access_token"], "client_id": "spa"}
    )
    assert response.status_code == 200
    assert (await introspect(env, tokens["access_token"]))["active"] is True


async def test_introspection_needs_confidential_client(browser: Browser, env: Env) -> None:
    tokens = await public_tokens(browser)
    anonymous = await env.http.post("/oauth2/introspect", data={"token": tokens["access_token"]})
    assert anonymous.status_code == 401
    public = await env.http.post(
        "/oauth2/introspect", data={"token": tokens["access_token"], "client_id": "spa"}
    )
    assert public.status_code == 401 and public.json()["error"] == "invalid_client"


async def test_introspection_inactive_after_logout(browser: Browser, env: Env) -> None:
    tokens = await confidential_tokens(browser)
    page = await env.http.get("/logout")
    csrf = env.http.cookies["isthmus_csrf"]
    assert page.status_code == 200
    await env.http.post("/logout", data={"csrf": csrf})
    assert await introspect(env, tokens["access_token"]) == {"active": False}
    assert await introspect(env, tokens["refresh_token"]) == {"active": False}
    response = await refresh(env, tokens["refresh_token"])
    assert response.json()["error"] == "invalid_grant"


# --- refresh ----------------------------------------------------------------------------


async def test_refresh_rotation_and_reuse_detection(browser: Browser, env: Env) -> None:
    tokens = await confidential_tokens(browser)
    first = tokens["refresh_token"]
    rotated = await refresh(env, first)
    assert rotated.status_code == 200
    assert rotated.headers["cache-control"] == "no-store"
    second = rotated.json()["refresh_token"]
    assert second != first
    claims = await validate_id_token(env.http, rotated.json()["id_token"], "orders")
    assert "nonce" not in claims and claims["partner_id"] == "acme"
    third = (await refresh(env, second)).json()
    newest, newest_access = third["refresh_token"], third["access_token"]
    # The first token again: somebody else has the family. All of it dies.
    reused = await refresh(env, first)
    assert reused.status_code == 400
    assert reused.json()["error"] == "invalid_grant"
    assert (await refresh(env, newest)).json()["error"] == "invalid_grant"
    assert await introspect(env, newest_access) == {"active": False}
    assert any("presented again" in e.get("detail", "") for e in env.failures("oidc.token"))


async def test_refresh_can_narrow_but_not_widen_scope(browser: Browser, env: Env) -> None:
    tokens = await confidential_tokens(browser, scope="openid email")
    wide = await token_request(
        env.http,
        {
            "grant_type": "refresh_token",
            "scope": "openid groups",
            "refresh_token": tokens["refresh_token"],
        },
        basic("orders"),
    )
    assert wide.json()["error"] == "invalid_scope"
    narrow = await token_request(
        env.http,
        {
            "grant_type": "refresh_token",
            "scope": "openid",
            "refresh_token": tokens["refresh_token"],
        },
        basic("orders"),
    )
    assert narrow.status_code == 200 and narrow.json()["scope"] == "openid"
    again = (await refresh(env, narrow.json()["refresh_token"])).json()
    assert again["scope"] == "openid email"


async def test_refresh_by_another_client_is_refused(browser: Browser, env: Env) -> None:
    tokens = await confidential_tokens(browser)
    response = await token_request(
        env.http,
        {
            "grant_type": "refresh_token",
            "refresh_token": tokens["refresh_token"],
            "client_id": "orders-post",
            "client_secret": SECRET,
        },
    )
    assert response.json()["error"] == "invalid_grant"


async def test_refresh_refused_once_partner_may_not_sign_in(browser: Browser, env: Env) -> None:
    tokens = await confidential_tokens(browser)
    from federation.registry import StaticRegistry
    from federation.settings import PartnerStatus

    env.hub.registry = StaticRegistry.from_settings(make_settings(PartnerStatus.suspended))
    response = await refresh(env, tokens["refresh_token"])
    assert response.json()["error"] == "invalid_grant"
    assert await introspect(env, tokens["access_token"]) == {"active": False}


async def test_client_without_refresh_grant_gets_no_refresh_token(
    browser: Browser, env: Env
) -> None:
    code = await browser.code("code-only", APP_CB)
    body = (
        await token_request(
            env.http,
            {"grant_type": "authorization_code", "code": code, "redirect_uri": APP_CB},
            basic("code-only"),
        )
    ).json()
    assert "refresh_token" not in body and body["access_token"]
    refused = await token_request(
        env.http, {"grant_type": "refresh_token", "refresh_token": "x"}, basic("code-only")
    )
    assert refused.json()["error"] == "unauthorized_client"


# --- code and PKCE refusals ---------------------------------------------------------------


async def test_code_replay_fails_and_revokes_what_it_issued(browser: Browser, env: Env) -> None:
    code = await browser.code("orders", APP_CB)
    form = {"grant_type": "authorization_code", "code": code, "redirect_uri": APP_CB}
    tokens = (await token_request(env.http, form, basic("orders"))).json()
    replay = await token_request(env.http, form, basic("orders"))
    assert replay.status_code == 400 and replay.json()["error"] == "invalid_grant"
    assert await introspect(env, tokens["access_token"]) == {"active": False}
    assert await introspect(env, tokens["refresh_token"]) == {"active": False}
    assert any("presented again" in e.get("detail", "") for e in env.failures("oidc.token"))


async def test_bad_pkce_verifier(browser: Browser, env: Env) -> None:
    _, challenge = pkce_pair()
    wrong, _ = pkce_pair()
    code = await browser.code("spa", SPA_CB, code_challenge=challenge, code_challenge_method="S256")
    response = await token_request(
        env.http,
        {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": SPA_CB,
            "client_id": "spa",
            "code_verifier": wrong,
        },
    )
    assert response.status_code == 400 and response.json()["error"] == "invalid_grant"


async def test_confidential_client_challenge_is_enforced(browser: Browser, env: Env) -> None:
    _, challenge = pkce_pair()
    code = await browser.code(
        "orders", APP_CB, code_challenge=challenge, code_challenge_method="S256"
    )
    response = await token_request(
        env.http,
        {"grant_type": "authorization_code", "code": code, "redirect_uri": APP_CB},
        basic("orders"),
    )
    assert response.json()["error"] == "invalid_grant"


async def test_public_client_without_pkce_is_sent_back_an_error(browser: Browser, env: Env) -> None:
    await browser.sign_in()
    response = await browser.authorize("spa", SPA_CB)
    location = response.headers["location"]
    assert location.startswith(SPA_CB)
    query = query_of(location)
    assert query["error"] == "invalid_request" and query["state"] == "st-1"
    assert query["iss"] == ISSUER
    assert env.failures("oidc.authorize")[-1]["client"] == "spa"


async def test_plain_pkce_is_refused(browser: Browser) -> None:
    response = await browser.authorize(
        "spa", SPA_CB, code_challenge="a" * 43, code_challenge_method="plain"
    )
    assert query_of(response.headers["location"])["error"] == "invalid_request"


async def test_redirect_uri_must_match_at_the_token_endpoint(browser: Browser, env: Env) -> None:
    code = await browser.code("orders", APP_CB)
    response = await token_request(
        env.http,
        {"grant_type": "authorization_code", "code": code, "redirect_uri": APP_CB + "/x"},
        basic("orders"),
    )
    assert response.json()["error"] == "invalid_grant"


# --- authorization request refusals --------------------------------------------------------


async def refused_authorize_page(env: Env, client_id: str, redirect_uri: str) -> httpx.Response:
    """An authorization request the hub cannot redirect back: an HTML page, no redirect."""
    response = await env.http.get(
        "/oauth2/authorize",
        headers={"Accept": "text/html"},
        params={
            "response_type": "code",
            "client_id": client_id,
            "redirect_uri": redirect_uri,
            "scope": "openid",
        },
    )
    assert response.status_code == 400 and "location" not in response.headers
    return response


async def test_unknown_client_is_a_page_not_a_redirect(browser: Browser, env: Env) -> None:
    response = await refused_authorize_page(env, "nobody", APP_CB)
    assert "invalid_request" in response.text
    assert env.failures("oidc.authorize")[-1]["client"] == "nobody"


@pytest.mark.parametrize(
    "uri", [APP_CB + "/", APP_CB + "?x=1", "https://evil.test/callback", APP_CB.upper()]
)
async def test_mismatched_redirect_uri_is_a_page(browser: Browser, env: Env, uri: str) -> None:
    response = await refused_authorize_page(env, "orders", uri)
    assert "invalid_redirect_uri" in response.text
    assert env.failures("oidc.authorize")[-1]["reason"] == "invalid_redirect_uri"


async def test_repeated_parameter_is_a_page(env: Env) -> None:
    response = await env.http.get(
        f"/oauth2/authorize?client_id=orders&redirect_uri={APP_CB}&redirect_uri=https://e.test"
    )
    assert response.status_code == 400 and "location" not in response.headers


async def test_unsupported_response_type(browser: Browser) -> None:
    response = await browser.authorize("orders", APP_CB, response_type="token")
    query = query_of(response.headers["location"])
    assert query["error"] == "unsupported_response_type" and query["state"] == "st-1"


async def test_scope_without_openid_or_beyond_client(browser: Browser) -> None:
    for scope in ("email", "openid admin"):
        response = await browser.authorize("orders", APP_CB, scope=scope)
        assert query_of(response.headers["location"])["error"] == "invalid_scope"


async def test_prompt_none_without_session(browser: Browser) -> None:
    response = await browser.authorize("orders", APP_CB, prompt="none")
    query = query_of(response.headers["location"])
    assert query["error"] == "login_required" and query["iss"] == ISSUER


async def test_prompt_login_ends_the_session_and_signs_in_again(browser: Browser, env: Env) -> None:
    await browser.sign_in()
    old_cookie = env.http.cookies["isthmus_session"]
    response = await browser.authorize("orders", APP_CB, prompt="login")
    assert response.status_code == 303
    location = response.headers["location"]
    assert location.startswith("/login?rd=")
    assert "prompt" not in query_of(location)["rd"]
    assert "isthmus_session" not in env.http.cookies
    code = await browser.code("orders", APP_CB, prompt="")
    assert code and env.http.cookies["isthmus_session"] != old_cookie


async def test_authorize_by_post(browser: Browser, env: Env) -> None:
    await browser.sign_in()
    response = await env.http.post(
        "/oauth2/authorize",
        data={
            "response_type": "code",
            "client_id": "orders",
            "redirect_uri": APP_CB,
            "scope": "openid",
            "state": "p",
        },
    )
    assert response.status_code == 303
    assert query_of(response.headers["location"])["state"] == "p"


# --- token endpoint refusals ---------------------------------------------------------------


async def test_wrong_client_secret(browser: Browser, env: Env) -> None:
    code = await browser.code("orders", APP_CB)
    response = await token_request(
        env.http,
        {"grant_type": "authorization_code", "code": code, "redirect_uri": APP_CB},
        basic("orders", "wrong"),
    )
    assert response.status_code == 401
    assert response.json()["error"] == "invalid_client"
    assert response.headers["www-authenticate"].startswith("Basic")
    assert response.headers["cache-control"] == "no-store"
    failure = env.failures("oidc.token")[-1]
    assert failure["client"] == "orders" and failure["reason"] == "invalid_client"
    assert failure["request_id"] == response.headers["x-request-id"]


async def test_auth_method_must_be_the_registered_one(env: Env) -> None:
    response = await token_request(
        env.http,
        {
            "grant_type": "authorization_code",
            "code": "x",
            "redirect_uri": APP_CB,
            "client_id": "orders",
        },
    )
    assert response.status_code == 401 and response.json()["error"] == "invalid_client"


async def test_unsupported_grant_type(env: Env) -> None:
    response = await token_request(
        env.http, {"grant_type": "password", "username": "a"}, basic("orders")
    )
    assert response.status_code == 400
    assert response.json()["error"] == "unsupported_grant_type"


# --- RP-initiated logout ------------------------------------------------------------------


async def test_rp_initiated_logout_with_hint(browser: Browser, env: Env) -> None:
    tokens = await confidential_tokens(browser)
    response = await env.http.get(
        "/oauth2/logout",
        params={
            "id_token_hint": tokens["id_token"],
            "post_logout_redirect_uri": APP_BYE,
            "state": "bye-1",
        },
    )
    assert response.status_code == 303
    assert response.headers["location"] == f"{APP_BYE}?state=bye-1"
    assert "isthmus_session" not in env.http.cookies
    assert await introspect(env, tokens["access_token"]) == {"active": False}


async def test_rp_initiated_logout_unregistered_uri_is_refused(browser: Browser, env: Env) -> None:
    tokens = await confidential_tokens(browser)
    response = await env.http.get(
        "/oauth2/logout",
        headers={"Accept": "text/html"},
        params={
            "id_token_hint": tokens["id_token"],
            "post_logout_redirect_uri": "https://evil.test/",
        },
    )
    assert response.status_code == 400 and "location" not in response.headers
    assert (await introspect(env, tokens["access_token"]))["active"] is True
    assert env.failures("oidc.logout")


async def test_rp_initiated_logout_without_hint_asks_first(browser: Browser, env: Env) -> None:
    tokens = await confidential_tokens(browser)
    response = await env.http.get("/oauth2/logout", headers={"Accept": "text/html"})
    assert response.status_code == 200 and 'id="logout-form"' in response.text
    assert (await introspect(env, tokens["access_token"]))["active"] is True


async def test_rp_initiated_logout_with_forged_hint_asks_first(browser: Browser, env: Env) -> None:
    tokens = await confidential_tokens(browser)
    head, body, _ = tokens["id_token"].split(".")
    response = await env.http.get("/oauth2/logout", params={"id_token_hint": f"{head}.{body}.AAAA"})
    assert response.status_code == 200 and 'id="logout-form"' in response.text
    assert (await introspect(env, tokens["access_token"]))["active"] is True


# --- keys -------------------------------------------------------------------------------------


async def test_key_rotation_keeps_earlier_tokens_valid(browser: Browser, env: Env) -> None:
    before = await confidential_tokens(browser)
    old_kid = jwt.get_unverified_header(before["id_token"])["kid"]
    env.hub.keys.rotate()
    jwks = (await env.http.get("/oauth2/jwks")).json()
    assert old_kid in {k["kid"] for k in jwks["keys"]} and len(jwks["keys"]) == 3
    await validate_id_token(env.http, before["id_token"], "orders")
    assert (await introspect(env, before["access_token"]))["active"] is True
    after = (await refresh(env, before["refresh_token"])).json()
    assert jwt.get_unverified_header(after["id_token"])["kid"] == env.hub.keys.keys.current.kid
    assert jwt.get_unverified_header(after["id_token"])["kid"] != old_kid
    await validate_id_token(env.http, after["id_token"], "orders")


async def test_inactive_partner_session_gets_access_denied() -> None:
    env = make_env()
    async with env.http:
        browser = Browser(env)
        await browser.sign_in()
        from federation.registry import StaticRegistry
        from federation.settings import PartnerStatus

        env.hub.registry = StaticRegistry.from_settings(make_settings(PartnerStatus.suspended))
        response = await browser.authorize("orders", APP_CB)
        assert query_of(response.headers["location"])["error"] == "access_denied"
