"""A demo/test IdP served by the hub itself: pick a listed user, no password.

Allowed only with ``allow_mock_connections: true``. The hub renders the user picker at
``/mock/{connection_id}`` and sends the choice to the normal callback.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from connectors.base import CallbackRequest, LoginRedirect, LoginRequest
from connectors.registry import ConnectorContext
from federation.errors import InvalidState, InvalidUpstreamResponse
from federation.identity import FederatedIdentity
from federation.settings import (
    ConnectionSettings,
    MockConnectionSettings,
    MockUser,
    PartnerSettings,
)


@dataclass(frozen=True)
class MockConnector:
    id: str
    partner_id: str
    issuer: str
    users: tuple[MockUser, ...]

    @classmethod
    def from_settings(
        cls, partner: PartnerSettings, connection: ConnectionSettings, context: ConnectorContext
    ) -> MockConnector:
        assert isinstance(connection, MockConnectionSettings)
        issuer = f"{context.hub_base_url.rstrip('/')}/mock/{connection.id}"
        return cls(connection.id, partner.id, issuer, connection.users)

    async def login_url(self, request: LoginRequest) -> LoginRedirect:
        query = {"state": request.state, "callback": request.callback_url}
        if request.login_hint:
            query["login_hint"] = request.login_hint
        return LoginRedirect(
            f"{self.issuer}?{urlencode(query)}", {"callback": request.callback_url}
        )

    async def handle_callback(
        self, request: CallbackRequest, flow_state: Mapping[str, Any] | None
    ) -> FederatedIdentity:
        if flow_state is None:
            raise InvalidState(f"mock connection {self.id}: callback without a login flow")
        subject = request.params.get("user", "")
        user = next((u for u in self.users if u.subject == subject), None)
        if user is None:
            raise InvalidUpstreamResponse(f"mock connection {self.id}: unknown user {subject!r}")
        return FederatedIdentity(
            partner_id=self.partner_id,
            connection_id=self.id,
            issuer=self.issuer,
            subject=user.subject,
            email=user.email,
            email_verified=user.email_verified,
            name=user.name,
            groups=user.groups,
            roles=user.roles,
            acr=None,
            amr=("mock",),
            raw_claims={"sub": user.subject, "email": user.email},
        )
