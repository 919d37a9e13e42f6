"""Flow: a partner user (mock connection) reaches a proxied app through the hub's proxy,
allowed and denied by the app's policy, sent to sign in first when there is no session."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import httpx
import jwt

from tests.proxy.conftest import Env
from tests.proxy.support import session_cookie, sign_in


async def test_no_session_goes_to_login_and_back_to_the_app(
    env: Env, http: httpx.AsyncClient
) -> None:
    first = await http.get("/orders/7?x=1&y=%20", headers={"Host": env.orders_host})
    assert first.status_code == 303
    location = urlsplit(first.headers["location"])
    assert f"{location.scheme}://{location.netloc}{location.path}" == f"{env.base}/login"
    rd = parse_qs(location.query)["rd"][0]
    assert rd == f"http://{env.orders_host}/orders/7?x=1&y=%20"
    back = await sign_in(http, "alice@acme.example", "alice", rd=rd)
    assert back.status_code == 303
    assert back.headers["location"] == rd  # the app's origin is configured: rd is kept
    assert env.decisions()[0]["decision"] == "login"


async def test_an_unconfigured_origin_is_not_a_return_url(
    env: Env, http: httpx.AsyncClient
) -> None:
    back = await sign_in(http, "alice@acme.example", "alice", rd="http://evil.example/x")
    assert back.headers["location"] == "/"


async def test_allowed_partner_reaches_the_app_with_identity(
    env: Env, http: httpx.AsyncClient
) -> None:
    cookie = await session_cookie(http, "alice@acme.example", "alice")
    response = await http.get(
        "/orders/7?x=1&y=%20",
        headers={"Host": env.orders_host, "Cookie": f"isthmus_session={cookie}; theme=dark"},
    )
    assert response.status_code == 200, response.text
    seen = response.json()
    assert seen["raw_path"] == "/orders/7" and seen["query"] == "x=1&y=%20"
    headers = {k.lower(): v for k, v in seen["headers"]}
    assert headers["x-isthmus-email"] == "alice@acme.example"
    assert headers["x-isthmus-partner"] == "acme"
    assert headers["x-isthmus-groups"] == "buyers"
    assert headers["cookie"] == "theme=dark"  # the hub's session cookie never reaches apps
    assert headers["x-request-id"] == response.headers["x-request-id"]
    assert response.headers["x-upstream"] == "echo"
    assert "keep-alive" not in response.headers  # hop-by-hop, dropped on the way back
    # The assertion: verifiable against the hub's JWKS, audience = the app.
    token = headers["x-isthmus-assertion"]
    jwks = jwt.PyJWKSet.from_dict((await http.get("/oauth2/jwks")).json())
    key = jwks[jwt.get_unverified_header(token)["kid"]]
    claims = jwt.decode(token, key.key, algorithms=["RS256"], audience="orders", issuer=env.base)
    assert claims["sub"] == headers["x-isthmus-user"]
    assert claims["partner"] == "acme" and claims["partner_kind"] == "supplier"
    assert claims["email"] == "alice@acme.example"
    assert claims["exp"] - claims["iat"] == 60 and claims["jti"]
    decision = env.decisions()[-1]
    assert decision["decision"] == "allow" and decision["partner"] == "acme"
    assert decision["app"] == "orders" and decision["path"] == "/orders/7"
    assert (
        decision["method"] == "GET" and decision["request_id"] == response.headers["x-request-id"]
    )


async def test_other_partner_is_denied_with_reasons(env: Env, http: httpx.AsyncClient) -> None:
    cookie = await session_cookie(http, "alice@globex.example", "alice")
    page = await http.get(
        "/orders/7", headers={"Host": env.orders_host, "Cookie": f"isthmus_session={cookie}"}
    )
    assert page.status_code == 403
    assert "text/html" in page.headers["content-type"]
    assert page.headers["x-request-id"] in page.text
    as_json = await http.get(
        "/orders/7",
        headers={
            "Host": env.orders_host,
            "Cookie": f"isthmus_session={cookie}",
            "Accept": "application/json",
        },
    )
    assert as_json.status_code == 403
    body = as_json.json()
    assert body["error"] == "access_denied" and body["request_id"]
    assert isinstance(body["reasons"], list)
    assert env.upstream.seen == []
    decision = env.decisions()[-1]
    assert decision["decision"] == "deny" and decision["partner"] == "globex"
    assert decision["reasons"]


async def test_public_reason_is_shown(env: Env, http: httpx.AsyncClient) -> None:
    cookie = await session_cookie(http, "alice@acme.example", "alice")
    headers = {"Host": env.orders_host, "Cookie": f"isthmus_session={cookie}"}
    page = await http.get("/orders/admin/users", headers=headers)
    assert page.status_code == 403
    assert "The admin area is for staff only." in page.text
    as_json = await http.get("/orders/admin", headers={**headers, "Accept": "application/json"})
    assert as_json.json()["reasons"] == ["The admin area is for staff only."]
    assert env.upstream.seen == []


async def test_app_on_the_hub_host_by_path_prefix(env: Env, http: httpx.AsyncClient) -> None:
    await session_cookie(http, "alice@acme.example", "alice")
    response = await http.get("/DOCS/Guide")  # case-insensitive app: folded once
    assert response.status_code == 200
    seen = response.json()
    assert seen["raw_path"] == "/docs/guide"
    headers = {k.lower(): v for k, v in seen["headers"]}
    assert headers["x-remote-user"] == "alice@acme.example"
    assert headers["x-remote-partner"] == "acme"
    assert "x-docs-assertion" in headers and "x-isthmus-user" not in headers
    # The hub's own routes still win on its host.
    assert (await http.get("/healthz")).json() == {"status": "ok"}
    assert (await http.get("/oauth2/jwks")).status_code == 200
