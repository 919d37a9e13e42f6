"""Invariant 5: return URLs only to the hub or configured origins, no tricks."""

from __future__ import annotations

import pytest

from federation.redirects import safe_return_url

ISSUER = "https://hub.example"


@pytest.mark.parametrize(
    "candidate",
    [
        "/",
        "/apps/orders?x=1",
        "https://hub.example/x",
        "https://HUB.example:443/y",
        "https://orders.example/z",
    ],
)
def test_allowed(candidate: str) -> None:
    assert safe_return_url(candidate, ISSUER, ["https://orders.example"]) == candidate


@pytest.mark.parametrize(
    "candidate",
    [
        None,
        "",
        "//evil.example/x",
        "/\\evil.example",
        "https://evil.example/",
        "https://hub.example@evil.example/",
        "https://user:pw@hub.example/",
        "javascript:alert(1)",
        "data:text/html,x",
        "http://hub.example/x",
        "https://hub.example:8443/x",
        "/x\r\nSet-Cookie: a=b",
        "/x\x00",
        "x/relative",
        "https://hub.example.evil.example/",
        "https:/\\evil.example",
        "/" + "a" * 3000,
        "https://hub.example:99999/x",
    ],
)
def test_refused(candidate: str | None) -> None:
    assert safe_return_url(candidate, ISSUER, ["https://orders.example"]) == "/"
