"""Fixtures shared by the integration tests."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path

import pytest
import redis

from tests.integration.support import Ports, RunningHub, ServeHub, serve_hub
from tests.peers.asgi import ServeApp
from tests.peers.browser import Browser


@pytest.fixture
def browser() -> Iterator[Browser]:
    with Browser() as b:
        yield b


@pytest.fixture
def redis_client(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    try:
        yield client
    finally:
        client.close()


@pytest.fixture
def hub_server(
    ports: Ports,
    redis_url: str,
    redis_client: redis.Redis,
    asgi_server: ServeApp,
    tmp_path: Path,
) -> ServeHub:
    """:func:`tests.integration.support.serve_hub` on this module's ``ports``, with a Redis
    store: call it with ``partners=`` and ``clients=``."""
    serve: Callable[..., RunningHub] = partial(
        serve_hub,
        ports=ports,
        redis_url=redis_url,
        redis_client=redis_client,
        asgi_server=asgi_server,
        tmp_path=tmp_path,
    )
    return serve
