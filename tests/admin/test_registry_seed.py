"""The registry's seed and its reload: replicas starting together, storage that lost its data."""

from __future__ import annotations

import asyncio
import logging

import pytest

from federation.admin.documents import SqliteDocumentStore, Write
from federation.hub import Hub, build_hub
from federation.settings import Settings
from tests.admin.support import YieldingStore, api_settings


def _replica(settings: Settings, shared: YieldingStore) -> Hub:
    hub = build_hub(settings)
    hub.documents = shared  # every replica on the same registry storage
    return hub


async def test_replicas_seeding_an_empty_registry_together_all_start() -> None:
    settings = api_settings()
    shared = YieldingStore(SqliteDocumentStore())
    replicas = [_replica(settings, shared) for _ in range(3)]
    await asyncio.gather(*(hub.ready() for hub in replicas))
    partners = {p.id for p in settings.partners}
    for hub in replicas:
        assert {p.id for p in hub.registry.partners()} == partners
    # Each document was written once: by whichever replica got there first.
    assert {d.version for d in await shared.documents()} == {1}
    await shared.aclose()


async def test_a_registry_that_lost_its_data_does_not_empty_the_catalog(
    caplog: pytest.LogCaptureFixture,
) -> None:
    settings = api_settings()
    hub = build_hub(settings)
    await hub.ready()
    await hub.documents.apply(
        [Write("partner", "acme", None, None)], actor="test", reason="bump the revision"
    )
    await hub.reload()
    assert hub.registry.partner("acme") is None
    kept = {p.id for p in hub.registry.partners()}
    await hub.documents.aclose()
    hub.documents = SqliteDocumentStore()  # storage back empty: revision 0
    with caplog.at_level(logging.ERROR, logger="isthmus.registry"):
        assert await hub.reload() is False
    assert {p.id for p in hub.registry.partners()} == kept
    assert "revision went back" in caplog.text
    await hub.aclose()
