"""Flow: a partner user types their email, picks a person at the mock IdP, gets a session."""

from __future__ import annotations

import re
from html import unescape
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx

from federation.hub import Hub
from federation.stores.memory import MemoryStore


def hidden(html: str, name: str) -> str:
    match = re.search(rf'name="{name}" value="([^"]*)"', html)
    assert match, f"no hidden field {name}"
    return match.group(1)


def hidden_fields(html: str) -> dict[str, str]:
    """Every hidden field the page's form carries, as the browser would post them."""
    found = re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)">', html)
    return {name: unescape(value) for name, value in found}


async def start_login(client: httpx.AsyncClient, email: str, rd: str = "/") -> httpx.Response:
    page = await client.get("/login", params={"rd": rd})
    assert page.status_code == 200
    return await client.post(
        "/login",
        data={**hidden_fields(page.text), "email": email},
    )


async def sign_in(
    client: httpx.AsyncClient, email: str, user: str, rd: str = "/"
) -> httpx.Response:
    to_idp = await start_login(client, email, rd)
    assert to_idp.status_code == 303, to_idp.text
    state = parse_qs(urlsplit(to_idp.headers["location"]).query)["state"][0]
    connection = urlsplit(to_idp.headers["location"]).path.rsplit("/", 1)[1]
    return await client.get(f"/callback/{connection}", params={"state": state, "user": user})


async def test_email_to_partner_idp_to_session(
    client: httpx.AsyncClient, audit_log: list[dict[str, Any]]
) -> None:
    back = await sign_in(client, "Alice@ACME.example", "alice", rd="/after")
    assert back.status_code == 303
    assert back.headers["location"] == "/after"
    cookie = back.headers["set-cookie"]
    assert "isthmus_session=" in cookie and "HttpOnly" in cookie and "SameSite=lax" in cookie
    home = await client.get("/")
    assert "alice@acme.example" in home.text and "Acme Inc" in home.text
    assert [e["event"] for e in audit_log][-1] == "login.succeeded"
    assert audit_log[-1]["partner"] == "acme"


async def test_discovery_sends_to_the_partner_connection(client: httpx.AsyncClient) -> None:
    to_idp = await start_login(client, "bob@acme.example")
    assert to_idp.status_code == 303
    assert urlsplit(to_idp.headers["location"]).path == "/mock/acme-mock"


async def test_two_connections_offer_a_choice(client: httpx.AsyncClient) -> None:
    page = await start_login(client, "alice@globex.example")
    assert page.status_code == 200
    assert 'value="globex-mock"' in page.text and 'value="globex-mock1"' in page.text
    chosen = await client.post(
        "/login/connection",
        data={
            **hidden_fields(page.text),
            "connection": "globex-mock1",
        },
    )
    assert chosen.status_code == 303
    assert urlsplit(chosen.headers["location"]).path == "/mock/globex-mock1"


async def test_choice_refuses_a_connection_of_another_partner(client: httpx.AsyncClient) -> None:
    page = await start_login(client, "alice@globex.example")
    chosen = await client.post(
        "/login/connection",
        data={
            **hidden_fields(page.text),
            "connection": "acme-mock",
        },
    )
    assert chosen.status_code == 400


async def test_unknown_domain_is_a_clear_message(
    client: httpx.AsyncClient, audit_log: list[dict[str, Any]]
) -> None:
    page = await start_login(client, "someone@nowhere.example")
    assert page.status_code == 404
    assert "nowhere.example" in page.text and 'id="email"' in page.text
    assert audit_log[-1]["reason"] == "unknown_domain"


async def test_not_an_email_is_a_clear_message(client: httpx.AsyncClient) -> None:
    page = await start_login(client, "not an email")
    assert page.status_code == 400
    assert "work email" in page.text


async def test_login_hint_skips_the_form(client: httpx.AsyncClient) -> None:
    response = await client.get("/login", params={"login_hint": "alice@acme.example"})
    assert response.status_code == 303
    location = urlsplit(response.headers["location"])
    assert location.path == "/mock/acme-mock"
    assert parse_qs(location.query)["login_hint"] == ["alice@acme.example"]


async def test_domain_hint_skips_the_form(client: httpx.AsyncClient) -> None:
    response = await client.get("/login", params={"domain_hint": "acme.example"})
    assert response.status_code == 303


async def test_unknown_domain_hint_shows_the_form(client: httpx.AsyncClient) -> None:
    response = await client.get("/login", params={"domain_hint": "nowhere.example"})
    assert response.status_code == 200 and 'id="email"' in response.text


async def test_cross_partner_email_is_refused(
    client: httpx.AsyncClient, hub: Hub, audit_log: list[dict[str, Any]]
) -> None:
    """Invariant 1: soylent's IdP asserts mallory@acme.example → refused, audited, no session."""
    back = await sign_in(client, "x@soylent.example", "mallory")
    assert back.status_code == 403
    assert "partner_mismatch" in back.text
    assert "isthmus_session" not in back.headers.get("set-cookie", "")
    failure = audit_log[-1]
    assert failure["event"] == "login.failed" and failure["reason"] == "partner_mismatch"
    assert "acme" in failure["detail"]
    assert "You are signed in" not in (await client.get("/")).text


async def test_unverified_email_is_not_kept(client: httpx.AsyncClient) -> None:
    back = await sign_in(client, "eve@acme.example", "eve")
    assert back.status_code == 303
    home = await client.get("/")
    assert "(not verified)" in home.text and "eve@acme.example" not in home.text


async def test_suspended_partner_cannot_start(client: httpx.AsyncClient) -> None:
    response = await start_login(client, "alice@umbrella.example")
    assert response.status_code == 403
    assert "partner_not_active" in response.text


async def test_partner_outside_contract_cannot_start(client: httpx.AsyncClient) -> None:
    response = await start_login(client, "alice@initech.example")
    assert response.status_code == 403


async def test_replayed_state_is_refused(
    client: httpx.AsyncClient, audit_log: list[dict[str, Any]]
) -> None:
    to_idp = await start_login(client, "alice@acme.example")
    state = parse_qs(urlsplit(to_idp.headers["location"]).query)["state"][0]
    first = await client.get("/callback/acme-mock", params={"state": state, "user": "alice"})
    assert first.status_code == 303
    client.cookies.clear()
    client.cookies.set("isthmus_flow", state)
    replay = await client.get("/callback/acme-mock", params={"state": state, "user": "alice"})
    assert replay.status_code == 400 and "invalid_state" in replay.text
    assert audit_log[-1]["reason"] == "invalid_state"


async def test_missing_state_is_refused(client: httpx.AsyncClient) -> None:
    response = await client.get(
        "/callback/acme-mock", params={"user": "alice"}, headers={"Accept": "application/json"}
    )
    assert response.status_code == 400
    body = response.json()
    assert body["error"] == "invalid_state" and body["request_id"]
    assert response.headers["x-request-id"] == body["request_id"]


async def test_callback_in_another_browser_is_refused(client: httpx.AsyncClient) -> None:
    """Login CSRF: the callback must arrive in the browser that started the flow."""
    to_idp = await start_login(client, "alice@acme.example")
    state = parse_qs(urlsplit(to_idp.headers["location"]).query)["state"][0]
    client.cookies.clear()
    response = await client.get("/callback/acme-mock", params={"state": state, "user": "alice"})
    assert response.status_code == 400
    assert "isthmus_session" not in response.headers.get("set-cookie", "")


async def test_callback_for_another_connection_is_refused(client: httpx.AsyncClient) -> None:
    to_idp = await start_login(client, "alice@globex.example")  # choice page, no start
    assert to_idp.status_code == 200
    to_idp = await start_login(client, "alice@acme.example")
    state = parse_qs(urlsplit(to_idp.headers["location"]).query)["state"][0]
    response = await client.get("/callback/globex-mock", params={"state": state, "user": "alice"})
    assert response.status_code == 400


async def test_showing_the_form_keeps_no_state(client: httpx.AsyncClient, hub: Hub) -> None:
    """An anonymous GET costs the store nothing: the flow is stored when it goes upstream."""
    store = hub.store
    assert isinstance(store, MemoryStore)
    for _ in range(20):
        assert (await client.get("/login", params={"rd": "/x"})).status_code == 200
    assert store.size() == 0
    await start_login(client, "alice@acme.example")
    assert store.size() == 1


async def test_form_without_csrf_token_is_refused(client: httpx.AsyncClient) -> None:
    page = await client.get("/login")
    response = await client.post(
        "/login",
        data={**hidden_fields(page.text), "csrf": "f" * 43, "email": "alice@acme.example"},
    )
    assert response.status_code == 403 and "csrf_failed" in response.text


async def test_form_from_another_browser_is_refused(client: httpx.AsyncClient) -> None:
    page = await client.get("/login")
    client.cookies.clear()
    response = await client.post(
        "/login",
        data={**hidden_fields(page.text), "email": "alice@acme.example"},
    )
    assert response.status_code == 403


async def test_open_redirect_in_rd_falls_back_home(client: httpx.AsyncClient) -> None:
    back = await sign_in(client, "alice@acme.example", "alice", rd="https://evil.example/x")
    assert back.headers["location"] == "/"


async def test_logout_ends_the_session_in_the_store(client: httpx.AsyncClient, hub: Hub) -> None:
    back = await sign_in(client, "alice@acme.example", "alice")
    session_id = client.cookies["isthmus_session"]
    assert await hub.sessions.get(session_id) is not None
    page = await client.get("/logout")
    done = await client.post("/logout", data={"csrf": hidden(page.text, "csrf")})
    assert done.status_code == 200 and "signed out" in done.text
    assert back.status_code == 303
    assert await hub.sessions.get(session_id) is None


async def test_logout_without_csrf_is_refused(client: httpx.AsyncClient, hub: Hub) -> None:
    await sign_in(client, "alice@acme.example", "alice")
    session_id = client.cookies["isthmus_session"]
    response = await client.post("/logout", data={"csrf": "nope"})
    assert response.status_code == 403
    assert await hub.sessions.get(session_id) is not None


async def test_unknown_user_at_mock_idp_is_refused(client: httpx.AsyncClient) -> None:
    back = await sign_in(client, "alice@acme.example", "nobody")
    assert back.status_code == 400


async def test_unknown_page_is_a_404_page_with_request_id(client: httpx.AsyncClient) -> None:
    response = await client.get("/nope", headers={"Accept": "text/html"})
    assert response.status_code == 404
    assert response.headers["x-request-id"] in response.text
    assert "Traceback" not in response.text


async def test_a_posted_callback_is_parked_then_completed_by_get(
    client: httpx.AsyncClient, hub: Hub, audit_log: list[dict[str, Any]]
) -> None:
    """A cross-site POST carries no Lax cookie: the hub parks it and resumes on a GET."""
    to_idp = await start_login(client, "alice@acme.example", rd="/after")
    state = parse_qs(urlsplit(to_idp.headers["location"]).query)["state"][0]
    parked = await client.post("/callback/acme-mock", data={"state": state, "user": "alice"})
    assert parked.status_code == 303
    resume = urlsplit(parked.headers["location"])
    assert resume.path == "/callback/acme-mock" and "resume=" in resume.query
    assert "user=alice" not in parked.headers["location"]  # the answer stays in the store
    done = await client.get(parked.headers["location"])
    assert done.status_code == 303 and done.headers["location"] == "/after"
    assert await hub.sessions.get(client.cookies["isthmus_session"]) is not None
    replay = await client.get(parked.headers["location"])  # a parked answer is single-use
    assert replay.status_code == 400 and "invalid_state" in replay.text
    assert audit_log[-1]["event"] == "login.failed" and audit_log[-1]["reason"] == "invalid_state"


async def test_a_parked_callback_still_needs_the_browser_that_started(
    client: httpx.AsyncClient,
) -> None:
    to_idp = await start_login(client, "alice@acme.example")
    state = parse_qs(urlsplit(to_idp.headers["location"]).query)["state"][0]
    parked = await client.post("/callback/acme-mock", data={"state": state, "user": "alice"})
    client.cookies.clear()  # the login CSRF case: someone else's browser resumes it
    done = await client.get(parked.headers["location"])
    assert done.status_code == 400 and "isthmus_session" not in client.cookies


async def test_an_oversized_body_is_refused_before_it_is_read(
    client: httpx.AsyncClient, audit_log: list[dict[str, Any]]
) -> None:
    big = {"state": "x", "SAMLResponse": "A" * (2 * 1024 * 1024)}
    response = await client.post(
        "/callback/acme-mock", data=big, headers={"Accept": "application/json"}
    )
    assert response.status_code == 413
    assert response.json()["error"] == "payload_too_large"
    assert audit_log[-1]["event"] == "login.failed"
    assert audit_log[-1]["reason"] == "payload_too_large"


async def test_saml_endpoints_of_a_connection_without_them_are_404(
    client: httpx.AsyncClient,
) -> None:
    assert (await client.get("/saml/acme-mock/metadata")).status_code == 404
    assert (await client.get("/saml/acme-mock/slo")).status_code == 404
    assert (await client.get("/saml/nope/metadata")).status_code == 404
