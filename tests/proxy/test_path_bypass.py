"""Invariant 4 at the proxy: path tricks never reach a path the policy denies.

The upstream records every path it receives; after the whole corpus it has seen no path
under /orders/admin, each attempt being either refused (400/403) or forwarded as the one
normalized path that was decided on.
"""

from __future__ import annotations

import httpx
import pytest

from tests.proxy.conftest import Env
from tests.proxy.support import raw_request, session_cookie

BYPASSES = [
    "/orders/admin",
    "/orders/ADMIN",  # orders is case-sensitive: a different path, forwarded as is
    "/orders//admin",
    "/orders/./admin",
    "/orders/x/../admin",
    "/orders/%2e%2e/orders/admin",
    "/orders/x/%2e%2e/admin",
    "/orders/x/%252e%252e/admin",
    "/orders/%61dmin",
    "/orders%2fadmin",
    "/orders/admin%2f",
    "/orders/admin;jsessionid=1",
    "/orders/x/..;/admin",
    "/orders\\admin",
    "/orders/%5cadmin",
    "/orders/admin.",
    "/orders/admin%20",
    "/orders/admin/",
    "/orders/admin%00",
    "/orders/%C0%AEadmin",
    "/orders/x/%ef%bc%8e%ef%bc%8e/admin",
    "/./orders/admin",
    "//orders/admin",
    "/x/../orders/admin",
]


@pytest.mark.parametrize("target", BYPASSES)
async def test_bypass_never_reaches_a_denied_path(
    env: Env, http: httpx.AsyncClient, target: str
) -> None:
    cookie = await session_cookie(http, "alice@acme.example", "alice")
    status = await raw_request(
        env.port, target, {"Host": env.orders_host, "Cookie": f"isthmus_session={cookie}"}
    )
    for path in env.upstream.paths():
        assert not path.startswith("/orders/admin"), (target, path)
    if status == 200:
        assert env.upstream.paths(), target
    else:
        assert status in (400, 403), (target, status)


async def test_ambiguous_path_is_a_400(env: Env, http: httpx.AsyncClient) -> None:
    cookie = await session_cookie(http, "alice@acme.example", "alice")
    status = await raw_request(
        env.port,
        "/orders/a%2fb",
        {"Host": env.orders_host, "Cookie": f"isthmus_session={cookie}"},
    )
    assert status == 400
    assert env.upstream.seen == []


async def test_the_forwarded_path_is_the_decided_path(env: Env, http: httpx.AsyncClient) -> None:
    cookie = await session_cookie(http, "alice@acme.example", "alice")
    headers = {"Host": env.orders_host, "Cookie": f"isthmus_session={cookie}"}
    assert await raw_request(env.port, "/orders/x/../%62/caf%C3%A9?q=%2e%2e", headers) == 200
    assert env.upstream.seen[-1]["raw_path"] == "/orders/b/caf%C3%A9"
    assert env.upstream.seen[-1]["query"] == "q=%2e%2e"  # the query is not touched
    assert env.decisions()[-1]["path"] == "/orders/b/café"
