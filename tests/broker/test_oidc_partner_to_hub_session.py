"""Flow: partner user → hub → partner OIDC IdP (in-process fake) → hub session.

Every bad callback is a clear error, an audit event, and no session.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from connectors.registry import ConnectorContext
from federation.audit import Audit
from federation.hub import Hub, build_hub
from federation.settings import Settings
from federation.web.app import create_app
from tests.broker.conftest import BASE
from tests.broker.test_mock_partner_to_hub_session import start_login
from tests.fakes.oidc_idp import FakeOidcProvider, FakeUser


@pytest.fixture
def acme_idp() -> FakeOidcProvider:
    return FakeOidcProvider(
        "https://idp.acme.test",
        users=[FakeUser("a-1", email="alice@acme.example", name="Alice", groups=("buyers",))],
    )


@pytest.fixture
def globex_idp() -> FakeOidcProvider:
    # Globex's IdP (compromised or misconfigured) asserts an address in Acme's domain.
    return FakeOidcProvider(
        "https://idp.globex.test",
        alg="ES256",
        users=[FakeUser("g-1", email="alice@acme.example", name="Not Alice")],
    )


def partner(pid: str, kind: str, domain: str, idp: FakeOidcProvider) -> dict[str, Any]:
    connection = idp.connection_settings(id=f"{pid}-oidc").model_dump()
    connection["scopes"] = ["openid", "email", "profile", "groups"]
    return {
        "id": pid,
        "name": pid.title(),
        "kind": kind,
        "status": "active",
        "domains": [domain],
        "connections": [connection],
    }


@pytest.fixture
def audit_log() -> list[dict[str, Any]]:
    return []


@pytest.fixture
def hub(
    acme_idp: FakeOidcProvider, globex_idp: FakeOidcProvider, audit_log: list[dict[str, Any]]
) -> Hub:
    settings = Settings(
        issuer=BASE,
        allow_insecure_http=True,
        partners=[
            partner("acme", "supplier", "acme.example", acme_idp),
            partner("globex", "customer", "globex.example", globex_idp),
        ],
    )
    context = ConnectorContext(hub_base_url=BASE, mounts=acme_idp.mounts() | globex_idp.mounts())
    return build_hub(settings, context=context, audit=Audit([audit_log.append]))


@pytest.fixture
async def client(hub: Hub) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=create_app(hub=hub))
    async with httpx.AsyncClient(transport=transport, base_url=BASE) as http:
        yield http


async def through_idp(
    client: httpx.AsyncClient, idp: FakeOidcProvider, email: str
) -> tuple[str, dict[str, str]]:
    """Start at the hub, let the IdP sign the user in; return the callback path and params."""
    to_idp = await start_login(client, email)
    assert to_idp.status_code == 303, to_idp.text
    assert to_idp.headers["location"].startswith(idp.issuer)
    back = await idp.authorize_redirect(to_idp.headers["location"])
    parts = urlsplit(back)
    assert f"{parts.scheme}://{parts.netloc}" == BASE
    return parts.path, dict(httpx.QueryParams(parts.query))


async def test_login_through_the_partner_oidc_idp(
    client: httpx.AsyncClient, hub: Hub, acme_idp: FakeOidcProvider, audit_log: list[dict[str, Any]]
) -> None:
    path, params = await through_idp(client, acme_idp, "alice@acme.example")
    assert path == "/callback/acme-oidc"
    assert acme_idp.last_authorize_params["code_challenge_method"] == "S256"
    assert acme_idp.last_authorize_params["nonce"]
    assert acme_idp.last_authorize_params["login_hint"] == "alice@acme.example"  # as typed
    done = await client.get(path, params=params)
    assert done.status_code == 303, done.text
    session = await hub.sessions.get(client.cookies["isthmus_session"])
    assert session is not None
    identity = session.identity
    assert identity.key == ("acme", "acme-oidc", "https://idp.acme.test", "a-1")
    assert identity.email == "alice@acme.example" and identity.groups == ("buyers",)
    assert audit_log[-1]["event"] == "login.succeeded"


async def assert_refused(
    client: httpx.AsyncClient,
    response: httpx.Response,
    status: int,
    reason: str,
    audit_log: list[dict[str, Any]],
) -> None:
    assert response.status_code == status, response.text
    assert "isthmus_session" not in response.headers.get("set-cookie", "")
    assert "isthmus_session" not in client.cookies
    assert response.headers["x-request-id"] in response.text
    assert "Traceback" not in response.text
    failure = audit_log[-1]
    assert (failure["event"], failure["outcome"], failure["reason"]) == (
        "login.failed",
        "failure",
        reason,
    )
    assert failure["request_id"] == response.headers["x-request-id"]


@pytest.mark.parametrize(
    "tamper",
    [
        {"claims": {"nonce": "not-the-nonce"}},
        {"claims": {"exp": 1_000_000_000, "iat": 999_999_000}},
        {"claims": {"iss": "https://idp.evil.test"}},
        {"claims": {"aud": "someone-else"}},
        {"signing": "foreign"},
        {"signing": "none"},
        {"signing": "hs256-public-key"},
        {"header": {"crit": ["x-ext"], "x-ext": 1}},
    ],
    ids=[
        "wrong-nonce",
        "expired",
        "wrong-iss",
        "wrong-aud",
        "foreign-key",
        "alg-none",
        "hs256-public-key",
        "crit",
    ],
)
async def test_bad_id_tokens_are_refused(
    client: httpx.AsyncClient,
    acme_idp: FakeOidcProvider,
    audit_log: list[dict[str, Any]],
    tamper: dict[str, Any],
) -> None:
    path, params = await through_idp(client, acme_idp, "alice@acme.example")
    acme_idp.tamper_next_id_token(**tamper)
    response = await client.get(path, params=params)
    await assert_refused(client, response, 400, "invalid_upstream_response", audit_log)


async def test_userinfo_for_another_subject_is_refused(
    client: httpx.AsyncClient, acme_idp: FakeOidcProvider, audit_log: list[dict[str, Any]]
) -> None:
    path, params = await through_idp(client, acme_idp, "alice@acme.example")
    acme_idp.next_userinfo_sub("someone-else")
    response = await client.get(path, params=params)
    await assert_refused(client, response, 400, "invalid_upstream_response", audit_log)


async def test_idp_of_partner_b_cannot_speak_for_partner_a(
    client: httpx.AsyncClient, globex_idp: FakeOidcProvider, audit_log: list[dict[str, Any]]
) -> None:
    path, params = await through_idp(client, globex_idp, "bob@globex.example")
    response = await client.get(path, params=params)
    await assert_refused(client, response, 403, "partner_mismatch", audit_log)
    assert "acme" in audit_log[-1]["detail"]


async def test_replayed_callback_is_refused(
    client: httpx.AsyncClient, acme_idp: FakeOidcProvider, audit_log: list[dict[str, Any]]
) -> None:
    path, params = await through_idp(client, acme_idp, "alice@acme.example")
    flow_cookie = client.cookies["isthmus_flow"]
    assert (await client.get(path, params=params)).status_code == 303
    client.cookies.clear()
    client.cookies.set("isthmus_flow", flow_cookie)
    response = await client.get(path, params=params)
    await assert_refused(client, response, 400, "invalid_state", audit_log)


@pytest.mark.parametrize(
    ("mutate", "status", "reason"),
    [
        (lambda p: p.pop("code"), 400, "invalid_upstream_response"),
        (lambda p: p.pop("state"), 400, "invalid_state"),
        (lambda p: p.update(state="x" * 40), 400, "invalid_state"),
        (lambda p: p.update(code="forged"), 400, "invalid_grant"),
        (lambda p: p.update(iss="https://idp.evil.test"), 400, "invalid_upstream_response"),
        (lambda p: p.update(error="access_denied"), 502, "upstream_error"),
    ],
    ids=["no-code", "no-state", "unknown-state", "forged-code", "mix-up-iss", "idp-error"],
)
async def test_malformed_callbacks_are_refused(
    client: httpx.AsyncClient,
    acme_idp: FakeOidcProvider,
    audit_log: list[dict[str, Any]],
    mutate: Any,
    status: int,
    reason: str,
) -> None:
    path, params = await through_idp(client, acme_idp, "alice@acme.example")
    mutate(params)
    response = await client.get(path, params=params)
    await assert_refused(client, response, status, reason, audit_log)


async def test_unreachable_idp_is_a_clear_error(
    client: httpx.AsyncClient, acme_idp: FakeOidcProvider, audit_log: list[dict[str, Any]]
) -> None:
    path, params = await through_idp(client, acme_idp, "alice@acme.example")
    acme_idp.network_error = httpx.ConnectError("connection refused")
    response = await client.get(path, params=params, headers={"Accept": "application/json"})
    assert response.status_code == 502
    assert response.json()["error"] == "upstream_error"
    assert "refused" not in response.text  # details stay in the log
    assert audit_log[-1]["reason"] == "upstream_error"
