"""The login flow, framework-free: discover → start upstream (flow stored) → complete."""

from __future__ import annotations

import hmac
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

from connectors.base import CallbackRequest, LoginRequest
from federation.broker.binding import bind
from federation.broker.discovery import Realm, discover
from federation.broker.flows import FlowStore, LoginFlow
from federation.errors import InvalidState, IsthmusError, NotFound, PartnerNotActive
from federation.hub import Hub
from federation.redirects import safe_return_url
from federation.sessions import Session


@dataclass(frozen=True, slots=True)
class Completed:
    session: Session
    return_url: str


class Broker:
    def __init__(self, hub: Hub) -> None:
        self.hub = hub
        self.flows = FlowStore(hub.store)

    def begin(self, return_url: str | None, login_hint: str | None = None) -> LoginFlow:
        """A new flow; nothing is stored until it goes upstream (:meth:`start`)."""
        return LoginFlow.new(safe_return_url(return_url, self.hub.issuer), login_hint)

    def discover(self, email_or_domain: str) -> Realm | None:
        return discover(self.hub.registry, email_or_domain)

    async def start(
        self, flow: LoginFlow, connection_id: str, request_id: str | None = None
    ) -> str:
        """Ask the connector for the upstream URL; keep its opaque state under the flow id."""
        found = self.hub.connector(connection_id)
        if found is None:
            raise NotFound(f"unknown connection {connection_id!r}")
        partner, connector = found
        if not partner.may_sign_in(datetime.fromtimestamp(self.hub.clock(), UTC)):
            raise PartnerNotActive(f"partner {partner.id} may not sign in")
        try:
            redirect = await connector.login_url(
                LoginRequest(self.hub.callback_url(connection_id), flow.id, flow.login_hint)
            )
        except IsthmusError as exc:  # e.g. the partner IdP is down: audited like a callback
            self.hub.audit.emit(
                "login.failed",
                outcome="failure",
                partner=partner.id,
                connection=connection_id,
                reason=exc.error,
                detail=exc.detail,
                request_id=request_id,
            )
            raise
        await self.flows.save(flow.started(connection_id, redirect.flow_state))
        self.hub.audit.emit("login.started", partner=partner.id, connection=connection_id)
        return redirect.url

    async def complete(
        self,
        connection_id: str,
        params: Mapping[str, str],
        cookie_flow_id: str | None,
        request_id: str | None = None,
    ) -> Completed:
        """Validate the callback, bind the identity, open a session. Errors are audited."""
        partner_id: str | None = None
        try:
            found = self.hub.connector(connection_id)
            if found is None:
                raise NotFound(f"callback for unknown connection {connection_id!r}")
            partner, connector = found
            partner_id = partner.id
            flow = await self._take_flow(params.get("state", ""), cookie_flow_id, connection_id)
            identity = await connector.handle_callback(
                CallbackRequest(self.hub.callback_url(connection_id), params), flow.connector_state
            )
            now = datetime.fromtimestamp(self.hub.clock(), UTC)
            identity = bind(identity, partner, self.hub.registry, now)
        except IsthmusError as exc:
            self.hub.audit.emit(
                "login.failed",
                outcome="failure",
                partner=partner_id,
                connection=connection_id,
                reason=exc.error,
                detail=exc.detail,
                request_id=request_id,
            )
            raise
        session = await self.hub.sessions.create(identity)
        self.hub.audit.emit(
            "login.succeeded",
            partner=identity.partner_id,
            connection=connection_id,
            issuer=identity.issuer,
            subject=identity.subject,
            email=identity.email,
            sid=session.sid,
            request_id=request_id,
        )
        return Completed(session, flow.return_url)

    async def _take_flow(
        self, state: str, cookie_flow_id: str | None, connection_id: str
    ) -> LoginFlow:
        if not state:
            raise InvalidState("callback without state")
        flow = await self.flows.take(state)  # taken first: a replay finds nothing
        if flow is None:
            raise InvalidState("unknown, expired or already used state")
        if not cookie_flow_id or not hmac.compare_digest(cookie_flow_id, flow.id):
            raise InvalidState("callback arrived in a browser that did not start this flow")
        if flow.connection_id != connection_id:
            raise InvalidState(
                f"flow was started for {flow.connection_id!r}, callback came for {connection_id!r}"
            )
        return flow
