"""The upstream OIDC connector against the in-process fake IdP (OIDC Core 1.0, RFC 7636, 9207)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from connectors.base import CallbackConnector, CallbackRequest, LoginRedirect, LoginRequest
from connectors.oidc import JWKS_REFRESH_INTERVAL, OidcConnector
from connectors.registry import ConnectorContext
from federation.errors import (
    InvalidGrant,
    InvalidState,
    InvalidUpstreamResponse,
    IsthmusError,
    UpstreamError,
)
from federation.identity import FederatedIdentity
from federation.settings import MockConnectionSettings, PartnerKind, PartnerSettings
from tests.fakes.clock import FakeClock
from tests.fakes.oidc_idp import FakeOidcProvider, FakeUser

CALLBACK = "https://hub.test/callback/acme-oidc"
ALICE = FakeUser(
    "alice-123",
    email="alice@acme.test",
    name="Alice Martin",
    groups=("engineering", "buyers"),
    extra={
        "acr": "urn:acme:mfa",
        "amr": ["pwd", "otp"],
        "profile": {"work_mail": "a.martin@acme.test", "team": "ops"},
        "realm_access": {"roles": ["approver"]},
    },
)
BOB = FakeUser("bob-456", email="bob@acme.test", email_verified="false", name="Bob")


@dataclass
class Rig:
    idp: FakeOidcProvider
    connector: OidcConnector
    clock: FakeClock

    async def start(self, hint: str | None = None, state: str = "flow-1") -> LoginRedirect:
        return await self.connector.login_url(LoginRequest(CALLBACK, state, login_hint=hint))

    async def callback_params(
        self, hint: str | None = None
    ) -> tuple[dict[str, str], LoginRedirect]:
        redirect = await self.start(hint)
        return await self.idp.authorize(redirect.url), redirect

    async def finish(self, params: Mapping[str, Any], redirect: LoginRedirect) -> FederatedIdentity:
        return await self.connector.handle_callback(
            CallbackRequest(CALLBACK, params), redirect.flow_state
        )

    async def sign_in(self, hint: str | None = None) -> FederatedIdentity:
        params, redirect = await self.callback_params(hint)
        return await self.finish(params, redirect)


def make_rig(
    idp: FakeOidcProvider | None = None,
    transport: httpx.AsyncBaseTransport | None = None,
    **settings: Any,
) -> Rig:
    idp = idp or FakeOidcProvider(users=[ALICE, BOB])
    clock = FakeClock()
    context = ConnectorContext(
        hub_base_url="https://hub.test", transport=transport or idp.transport, clock=clock
    )
    connection = idp.connection_settings(**settings)
    return Rig(idp, OidcConnector("acme", connection, context), clock)


@pytest.fixture
def rig() -> Rig:
    return make_rig()


def query(url: str) -> dict[str, list[str]]:
    return parse_qs(urlsplit(url).query)


# --- happy paths ---------------------------------------------------------------------------


async def test_connector_claims_the_callback_capability(rig: Rig) -> None:
    assert isinstance(rig.connector, CallbackConnector)


async def test_login_url_sends_code_flow_with_s256_pkce_nonce_state_and_hint(rig: Rig) -> None:
    redirect = await rig.start(hint="alice@acme.test", state="flow-42")

    sent = query(redirect.url)
    assert redirect.url.startswith("https://idp.acme.test/authorize?")
    assert sent["response_type"] == ["code"]
    assert sent["client_id"] == ["isthmus"]
    assert sent["redirect_uri"] == [CALLBACK]
    assert sent["scope"] == ["openid email profile"]
    assert sent["state"] == ["flow-42"]
    assert sent["login_hint"] == ["alice@acme.test"]
    assert sent["code_challenge_method"] == ["S256"]
    assert sent["nonce"] == [redirect.flow_state["nonce"]]
    assert redirect.flow_state["redirect_uri"] == CALLBACK
    assert 43 <= len(redirect.flow_state["code_verifier"]) <= 128
    assert redirect.flow_state["code_verifier"] not in redirect.url
    json.dumps(redirect.flow_state)  # the hub stores it as JSON


async def test_each_login_gets_its_own_verifier_and_nonce(rig: Rig) -> None:
    first, second = await rig.start(), await rig.start()

    assert first.flow_state["code_verifier"] != second.flow_state["code_verifier"]
    assert first.flow_state["nonce"] != second.flow_state["nonce"]


async def test_rs256_sign_in_maps_the_identity(rig: Rig) -> None:
    identity = await rig.sign_in("alice-123")

    assert identity.key == ("acme", "acme-oidc", "https://idp.acme.test", "alice-123")
    assert identity.email == "alice@acme.test"
    assert identity.email_verified is True
    assert identity.name == "Alice Martin"
    assert identity.groups == ("engineering", "buyers")
    assert isinstance(identity.auth_time, int)
    assert identity.raw_claims["profile"] == {"work_mail": "a.martin@acme.test", "team": "ops"}
    assert rig.idp.last_authorize_params["login_hint"] == "alice-123"


async def test_http_clients_are_pooled_per_connector_and_closed_by_aclose(rig: Rig) -> None:
    await rig.sign_in()
    clients = (rig.connector._oauth, rig.connector._http)
    await rig.sign_in()
    assert (rig.connector._oauth, rig.connector._http) == clients  # keep-alive, not per call
    assert all(c is not None and not c.is_closed for c in clients)

    await rig.connector.aclose()

    assert all(c is not None and c.is_closed for c in clients)
    await rig.sign_in()  # usable again after a close: new clients
    assert rig.connector._oauth is not None and not rig.connector._oauth.is_closed


async def test_es256_sign_in() -> None:
    rig = make_rig(FakeOidcProvider(users=[ALICE], alg="ES256"))

    identity = await rig.sign_in()

    assert identity.subject == "alice-123"


@pytest.mark.parametrize("method", ["client_secret_basic", "client_secret_post", "none"])
async def test_every_client_authentication_method(method: str) -> None:
    secret = None if method == "none" else "s3cret"
    idp = FakeOidcProvider(users=[ALICE], auth_method=method, client_secret=secret)  # type: ignore[arg-type]

    identity = await make_rig(idp).sign_in()

    assert identity.subject == "alice-123"


async def test_userinfo_is_merged_under_the_id_token_claims() -> None:
    rig = make_rig(FakeOidcProvider(users=[ALICE], profile_in_id_token=False))
    rig.idp.tamper_next_id_token(claims={"name": "Name From ID Token"})

    identity = await rig.sign_in()

    assert rig.idp.hits["userinfo"] == 1
    assert identity.email == "alice@acme.test"  # only userinfo had it
    assert identity.groups == ("engineering", "buyers")
    assert identity.name == "Name From ID Token"  # the signed token wins


async def test_userinfo_is_skipped_when_disabled() -> None:
    rig = make_rig(FakeOidcProvider(users=[ALICE], profile_in_id_token=False), use_userinfo=False)

    identity = await rig.sign_in()

    assert rig.idp.hits["userinfo"] == 0
    assert identity.email is None


async def test_claim_mapping_reaches_nested_claims_and_single_strings() -> None:
    mapping = {
        "email": "profile.work_mail",
        "groups": "profile.team",
        "roles": "realm_access.roles",
    }
    rig = make_rig(claims=mapping)

    identity = await rig.sign_in()

    assert identity.email == "a.martin@acme.test"
    assert identity.groups == ("ops",)
    assert identity.roles == ("approver",)


@pytest.mark.parametrize(
    ("value", "expected"),
    [("true", True), ("false", False), ("TRUE", True), (True, True), ("yes", False), (1, False)],
)
async def test_email_verified_accepts_bools_and_their_strings(value: Any, expected: bool) -> None:
    rig = make_rig()
    rig.idp.tamper_next_id_token(claims={"email_verified": value})

    identity = await rig.sign_in()

    assert identity.email_verified is expected


async def test_email_verified_string_false_from_the_idp() -> None:
    identity = await make_rig().sign_in("bob@acme.test")

    assert identity.subject == "bob-456"
    assert identity.email_verified is False


@pytest.mark.parametrize("trusted", [True, False])
async def test_acr_and_amr_are_kept_only_when_trusted(trusted: bool) -> None:
    identity = await make_rig(trust_acr=trusted).sign_in()

    assert identity.acr == ("urn:acme:mfa" if trusted else None)
    assert identity.amr == (("pwd", "otp") if trusted else ())
    assert identity.raw_claims["acr"] == "urn:acme:mfa"


async def test_several_audiences_with_our_azp_are_accepted(rig: Rig) -> None:
    rig.idp.tamper_next_id_token(claims={"aud": ["isthmus", "other-app"], "azp": "isthmus"})

    assert (await rig.sign_in()).subject == "alice-123"


async def test_a_token_without_kid_is_accepted_when_one_key_fits(rig: Rig) -> None:
    rig.idp.tamper_next_id_token(header={"kid": None})

    assert (await rig.sign_in()).subject == "alice-123"


async def test_discovery_and_jwks_are_cached_per_connector(rig: Rig) -> None:
    await rig.sign_in()
    await rig.sign_in()

    assert rig.idp.hits["discovery"] == 1
    assert rig.idp.hits["jwks"] == 1


async def test_caches_expire_after_an_hour(rig: Rig) -> None:
    await rig.sign_in()
    rig.clock.advance(3601)
    await rig.sign_in()

    assert rig.idp.hits["discovery"] == 2
    assert rig.idp.hits["jwks"] == 2


async def test_a_rotated_key_is_fetched_once_and_accepted(rig: Rig) -> None:
    await rig.sign_in()
    rig.idp.rotate_signing_key()
    rig.clock.advance(JWKS_REFRESH_INTERVAL)

    identity = await rig.sign_in()

    assert identity.subject == "alice-123"
    assert rig.idp.hits["jwks"] == 2


# --- authorization response ----------------------------------------------------------------


async def refused(rig: Rig, params: Mapping[str, Any], redirect: LoginRedirect) -> IsthmusError:
    with pytest.raises(IsthmusError) as caught:
        await rig.finish(params, redirect)
    return caught.value


@pytest.mark.parametrize(
    ("change", "error"),
    [
        (lambda p: p.pop("state"), InvalidState),
        (lambda p: p.update(state="flow-other"), InvalidState),
        (lambda p: p.pop("code"), InvalidUpstreamResponse),
        (lambda p: p.update(code=""), InvalidUpstreamResponse),
        (lambda p: p.update(code="x" * 5000), InvalidUpstreamResponse),
        (lambda p: p.update(code=["a", "b"]), InvalidUpstreamResponse),
        (lambda p: p.update(iss="https://evil.test"), InvalidUpstreamResponse),
        (lambda p: p.pop("iss"), InvalidUpstreamResponse),  # advertised, so required
        (lambda p: p.update(code="forged-code"), InvalidGrant),
    ],
    ids=[
        "no-state",
        "foreign-state",
        "no-code",
        "empty-code",
        "huge-code",
        "list-code",
        "wrong-iss",
        "missing-iss",
        "forged-code",
    ],
)
async def test_malformed_callbacks_are_refused(
    rig: Rig, change: Callable[[dict[str, Any]], object], error: type[IsthmusError]
) -> None:
    params, redirect = await rig.callback_params()
    tampered: dict[str, Any] = dict(params)
    change(tampered)

    assert type(await refused(rig, tampered, redirect)) is error


async def test_iss_is_optional_when_the_idp_does_not_advertise_it() -> None:
    rig = make_rig(FakeOidcProvider(users=[ALICE], iss_in_response=False))

    assert (await rig.sign_in()).subject == "alice-123"


async def test_an_error_answer_is_an_upstream_error_with_details_in_the_log_only(rig: Rig) -> None:
    rig.idp.authorize_error = "access_denied"
    params, redirect = await rig.callback_params()

    exc = await refused(rig, params, redirect)

    assert isinstance(exc, UpstreamError)
    assert "access_denied" in exc.detail and "refused by the fake IdP" in exc.detail
    assert "access_denied" not in exc.public_message
    assert rig.idp.hits["token"] == 0


async def test_an_incomplete_flow_state_is_refused(rig: Rig) -> None:
    params, redirect = await rig.callback_params()
    broken = LoginRedirect(
        redirect.url, {k: v for k, v in redirect.flow_state.items() if k != "nonce"}
    )

    assert isinstance(await refused(rig, params, broken), InvalidState)


# --- token endpoint ------------------------------------------------------------------------


async def test_a_code_is_redeemed_once(rig: Rig) -> None:
    params, redirect = await rig.callback_params()
    await rig.finish(params, redirect)

    exc = await refused(rig, params, redirect)

    assert isinstance(exc, InvalidGrant)
    assert "invalid_grant" in exc.detail


async def test_a_wrong_pkce_verifier_is_refused_by_the_idp(rig: Rig) -> None:
    params, redirect = await rig.callback_params()
    other = LoginRedirect(redirect.url, {**redirect.flow_state, "code_verifier": "x" * 64})

    assert isinstance(await refused(rig, params, other), InvalidGrant)


async def test_bad_client_credentials_are_an_upstream_error() -> None:
    rig = make_rig(client_secret="wrong")
    params, redirect = await rig.callback_params()

    exc = await refused(rig, params, redirect)

    assert isinstance(exc, UpstreamError)
    assert "invalid_client" in exc.detail


# --- ID token ------------------------------------------------------------------------------

NOW = int(time.time())


@pytest.mark.parametrize(
    "tamper",
    [
        {"claims": {"nonce": "someone-elses-nonce"}},
        {"drop": ["nonce"]},
        {"claims": {"iss": "https://evil.test"}},
        {"claims": {"aud": "another-client"}},
        {"claims": {"aud": ["isthmus", "other-app"]}},  # several audiences, no azp
        {"claims": {"azp": "other-app"}},
        {"claims": {"exp": NOW - 3600, "iat": NOW - 7200}},
        {"claims": {"iat": NOW + 3600, "exp": NOW + 7200}},
        {"drop": ["exp"]},
        {"drop": ["sub"]},
        {"claims": {"sub": ""}},
        {"signing": "foreign"},
        {"signing": "none"},
        {"signing": "hs256-public-key"},
        {"header": {"crit": ["urn:acme:policy"], "urn:acme:policy": 1}},
    ],
    ids=[
        "wrong-nonce",
        "no-nonce",
        "wrong-iss",
        "wrong-aud",
        "several-aud-no-azp",
        "foreign-azp",
        "expired",
        "iat-in-future",
        "no-exp",
        "no-sub",
        "empty-sub",
        "foreign-key",
        "alg-none",
        "hs256-with-public-key",
        "unknown-crit",
    ],
)
async def test_tampered_id_tokens_are_refused(rig: Rig, tamper: dict[str, Any]) -> None:
    rig.idp.tamper_next_id_token(**tamper)
    params, redirect = await rig.callback_params()

    exc = await refused(rig, params, redirect)

    assert isinstance(exc, InvalidUpstreamResponse)
    assert rig.idp.hits["userinfo"] == 0
    assert rig.idp.hits["jwks"] <= 1  # none of these may force a JWKS refetch


async def test_a_token_signed_with_an_algorithm_outside_the_allow_list_is_refused() -> None:
    idp = FakeOidcProvider(users=[ALICE], alg="ES256")
    rig = make_rig(idp, algorithms=("RS256",))
    params, redirect = await rig.callback_params()

    assert isinstance(await refused(rig, params, redirect), InvalidUpstreamResponse)


async def test_leeway_tolerates_a_small_clock_skew(rig: Rig) -> None:
    rig.idp.tamper_next_id_token(claims={"iat": int(time.time()) + 30})

    assert (await rig.sign_in()).subject == "alice-123"


async def test_an_unknown_kid_refetches_the_jwks_once_then_refuses(rig: Rig) -> None:
    await rig.sign_in()
    rig.clock.advance(JWKS_REFRESH_INTERVAL)

    rig.idp.tamper_next_id_token(header={"kid": "unknown-kid"})
    params, redirect = await rig.callback_params()
    exc = await refused(rig, params, redirect)

    assert isinstance(exc, InvalidUpstreamResponse)
    assert "unknown-kid" in exc.detail
    assert rig.idp.hits["jwks"] == 2

    rig.idp.tamper_next_id_token(header={"kid": "unknown-kid"})
    params, redirect = await rig.callback_params()
    assert isinstance(await refused(rig, params, redirect), InvalidUpstreamResponse)
    assert rig.idp.hits["jwks"] == 2  # rate-limited: no second refetch within 30 s


# --- userinfo and discovery ----------------------------------------------------------------


async def test_a_userinfo_for_another_subject_is_refused(rig: Rig) -> None:
    rig.idp.next_userinfo_sub("mallory")
    params, redirect = await rig.callback_params()

    exc = await refused(rig, params, redirect)

    assert isinstance(exc, InvalidUpstreamResponse)
    assert "userinfo sub" in exc.detail


async def test_a_discovery_document_for_another_issuer_is_refused(rig: Rig) -> None:
    rig.idp.metadata_overrides["issuer"] = "https://idp.evil.test"

    with pytest.raises(InvalidUpstreamResponse, match="discovery issuer"):
        await rig.start()


async def test_a_discovery_document_without_endpoints_is_refused(rig: Rig) -> None:
    rig.idp.metadata_overrides["token_endpoint"] = None

    with pytest.raises(InvalidUpstreamResponse, match="token_endpoint"):
        await rig.start()


@pytest.mark.parametrize(
    "failure",
    [httpx.ConnectError("connection refused"), httpx.ReadTimeout("timed out")],
    ids=["unreachable", "timeout"],
)
async def test_an_unreachable_idp_is_an_upstream_error(
    rig: Rig, failure: httpx.TransportError
) -> None:
    rig.idp.network_error = failure

    with pytest.raises(UpstreamError, match="unreachable"):
        await rig.start()


async def test_an_idp_failing_between_redirect_and_callback_is_an_upstream_error(
    rig: Rig,
) -> None:
    params, redirect = await rig.callback_params()
    rig.idp.network_error = httpx.ConnectError("connection refused")

    exc = await refused(rig, params, redirect)

    assert isinstance(exc, UpstreamError)
    assert "token endpoint unreachable" in exc.detail


class Override(httpx.AsyncBaseTransport):
    """The fake IdP, except that one path answers with a canned response."""

    def __init__(self, idp: FakeOidcProvider, path: str, response: httpx.Response) -> None:
        self.idp, self.path, self.response = idp, path, response

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if request.url.path == self.path:
            return httpx.Response(
                self.response.status_code,
                headers=self.response.headers,
                content=self.response.content,
            )
        return await self.idp.transport.handle_async_request(request)


HTML = httpx.Response(200, html="<html>maintenance</html>")


@pytest.mark.parametrize(
    ("path", "response", "message"),
    [
        ("/.well-known/openid-configuration", HTML, "not a JSON object"),
        ("/.well-known/openid-configuration", httpx.Response(503), "HTTP 503"),
        ("/.well-known/openid-configuration", httpx.Response(200, json=["a"]), "not a JSON"),
        ("/jwks", HTML, "not a JSON object"),
        ("/token", HTML, "not a JSON object"),
        ("/token", httpx.Response(502, html="<html>bad gateway</html>"), "HTTP 502"),
        ("/userinfo", httpx.Response(500), "HTTP 500"),
        ("/userinfo", HTML, "not a JSON object"),
    ],
    ids=[
        "discovery-html",
        "discovery-503",
        "discovery-list",
        "jwks-html",
        "token-html",
        "token-502",
        "userinfo-500",
        "userinfo-html",
    ],
)
async def test_non_json_or_failed_answers_are_upstream_errors(
    path: str, response: httpx.Response, message: str
) -> None:
    idp = FakeOidcProvider(users=[ALICE])
    rig = make_rig(idp, transport=Override(idp, path, response))

    with pytest.raises(UpstreamError, match=message):
        await rig.sign_in()


async def test_a_token_response_without_an_id_token_is_refused() -> None:
    idp = FakeOidcProvider(users=[ALICE])
    answer = httpx.Response(200, json={"access_token": "at", "token_type": "Bearer"})
    rig = make_rig(idp, transport=Override(idp, "/token", answer))

    with pytest.raises(InvalidUpstreamResponse, match="no id_token"):
        await rig.sign_in()


async def test_a_different_redirect_uri_at_the_token_endpoint_is_refused(rig: Rig) -> None:
    params, redirect = await rig.callback_params()
    moved = LoginRedirect(redirect.url, {**redirect.flow_state, "redirect_uri": CALLBACK + "x"})

    assert isinstance(await refused(rig, params, moved), InvalidGrant)


async def test_several_idps_are_reached_through_mounts() -> None:
    acme = FakeOidcProvider("https://idp.acme.test", users=[ALICE])
    globex = FakeOidcProvider("https://login.globex.test/tenant", users=[BOB], alg="ES256")
    mounts = acme.mounts() | globex.mounts()
    context = ConnectorContext(hub_base_url="https://hub.test", mounts=mounts)
    for idp, sub in ((acme, "alice-123"), (globex, "bob-456")):
        connector = OidcConnector("p", idp.connection_settings(), context)
        redirect = await connector.login_url(LoginRequest(CALLBACK, "flow-1"))
        params = await idp.authorize(redirect.url)

        identity = await connector.handle_callback(
            CallbackRequest(CALLBACK, params), redirect.flow_state
        )

        assert (identity.issuer, identity.subject) == (idp.issuer, sub)


def test_from_settings_refuses_another_connection_type() -> None:
    partner = PartnerSettings(id="acme", name="Acme", kind=PartnerKind.supplier)
    with pytest.raises(TypeError):
        OidcConnector.from_settings(
            partner, MockConnectionSettings(type="mock", id="m"), ConnectorContext()
        )


class Stalled(httpx.AsyncBaseTransport):
    """The fake IdP, except that one path never answers (a hung or trickling IdP)."""

    def __init__(self, idp: FakeOidcProvider, path: str) -> None:
        self.idp, self.path = idp, path

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if request.url.path == self.path:
            await asyncio.Event().wait()
        return await self.idp.transport.handle_async_request(request)


@pytest.mark.parametrize("path", ["/.well-known/openid-configuration", "/token"])
async def test_a_hung_idp_is_cut_off_after_timeout_seconds(path: str) -> None:
    idp = FakeOidcProvider(users=[ALICE])
    rig = make_rig(idp, transport=Stalled(idp, path), timeout_seconds=0.05)

    with pytest.raises(UpstreamError, match="unreachable"):
        await rig.sign_in()
