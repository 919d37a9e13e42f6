"""Fixtures of the OIDC provider tests."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.oidc.support import Browser, Env, make_env


@pytest.fixture
async def env() -> AsyncIterator[Env]:
    made = make_env()
    async with made.http:
        yield made


@pytest.fixture
def browser(env: Env) -> Browser:
    return Browser(env)
