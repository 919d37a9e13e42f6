"""Fixtures of the SDK tests: a real hub (mock partner, OIDC clients) and a validator
fetching its keys through discovery."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest

from federation.sdk import TokenValidator
from tests.oidc.support import ISSUER, Browser, Env, make_env
from tests.sdk.support import HubEndpoints


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
