"""What the provider's protocol modules need from the hub, and nothing of the web."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from federation.keys import KeyManager
from federation.registry import Partner, Registry
from federation.settings import TokenSettings
from federation.stores.base import Store


@dataclass(frozen=True)
class ProviderContext:
    issuer: str
    registry: Registry
    store: Store
    keys: KeyManager
    tokens: TokenSettings = field(default_factory=TokenSettings)
    clock: Callable[[], float] = time.time

    def now(self) -> int:
        return int(self.clock())

    def partner_may_sign_in(self, partner_id: str) -> Partner | None:
        """The partner when it is active and inside its contract window, else None."""
        partner = self.registry.partner(partner_id)
        when = datetime.fromtimestamp(self.clock(), UTC)
        return partner if partner is not None and partner.may_sign_in(when) else None
