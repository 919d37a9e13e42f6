"""Fixtures of the SDK tests: a real hub (mock partner, OIDC clients) and a validator
fetching its keys through discovery."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest

from federation.sdk import TokenValidator, _codec
from tests.oidc.support import ISSUER, Browser, Env, make_env
from tests.peers.common import missing
from tests.sdk.support import HubEndpoints


@pytest.fixture(autouse=True, params=["pure", "fast"])
def codec(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> _codec.Codec:
    """Every SDK test runs with the standard-library codec and with the sdk-speedups
    one (pybase64 + orjson): both must give the same verdicts."""
    chosen = _codec.PURE if request.param == "pure" else _codec.FAST
    if chosen is None:
        missing("the sdk-speedups extra (pybase64, orjson)", "pip install -e '.[test]'")
    assert chosen is not None
    monkeypatch.setattr(_codec, "CODEC", chosen)
    return chosen


@pytest.fixture
async def env() -> AsyncIterator[Env]:
    made = make_env()
    async with made.http:
        yield made


@pytest.fixture
def browser(env: Env) -> Browser:
    return Browser(env)


@pytest.fixture
def endpoints(env: Env) -> HubEndpoints:
    return HubEndpoints(env.hub)


@pytest.fixture
def validator(endpoints: HubEndpoints) -> Iterator[TokenValidator]:
    with endpoints.client() as http:
        yield TokenValidator(ISSUER, audience="orders", http=http)
