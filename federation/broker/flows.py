"""Login flow state, kept in the store under the flow id (the ``state`` sent upstream)."""

from __future__ import annotations

import secrets
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from federation.stores.base import Store

FLOW_TTL = 600


@dataclass(frozen=True, slots=True)
class LoginFlow:
    id: str
    return_url: str
    login_hint: str | None = None
    connection_id: str | None = None
    connector_state: dict[str, Any] = field(default_factory=dict)
    # A test login (an admin trying a connection): who started it. Its callback shows what
    # the connection produced and opens no session.
    test_by: str | None = None

    @classmethod
    def new(
        cls, return_url: str, login_hint: str | None = None, *, test_by: str | None = None
    ) -> LoginFlow:
        return cls(secrets.token_urlsafe(24), return_url, login_hint, test_by=test_by)

    def started(self, connection_id: str, connector_state: dict[str, Any]) -> LoginFlow:
        return replace(self, connection_id=connection_id, connector_state=connector_state)


class FlowStore:
    def __init__(self, store: Store, ttl: int = FLOW_TTL) -> None:
        self._store = store
        self._ttl = ttl

    async def save(self, flow: LoginFlow) -> None:
        await self._store.put(_key(flow.id), asdict(flow), self._ttl)

    async def get(self, flow_id: str) -> LoginFlow | None:
        data = await self._store.get(_key(flow_id)) if _plausible(flow_id) else None
        return LoginFlow(**data) if data else None

    async def take(self, flow_id: str) -> LoginFlow | None:
        """Single use: a replayed callback finds nothing."""
        data = await self._store.take(_key(flow_id)) if _plausible(flow_id) else None
        return LoginFlow(**data) if data else None


def _plausible(flow_id: str) -> bool:
    return 0 < len(flow_id) <= 64


def _key(flow_id: str) -> str:
    return f"flow:{flow_id}"
