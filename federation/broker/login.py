"""The login flow, framework-free: discover → start upstream (flow stored) → complete."""

from __future__ import annotations

import hmac
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

from connectors.base import CallbackRequest, LoginRedirect, LoginRequest
from federation.broker.binding import bind
from federation.broker.discovery import Realm, discover
from federation.broker.flows import FlowStore, LoginFlow
from federation.errors import InvalidState, IsthmusError, NotFound, PartnerNotActive
from federation.hub import Hub
from federation.redirects import safe_return_url, safe_return_url_for
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
        return LoginFlow.new(safe_return_url_for(return_url, self.hub.settings), login_hint)

    def discover(self, email_or_domain: str) -> Realm | None:
        return discover(self.hub.registry, email_or_domain)

    async def start(
        self, flow: LoginFlow, connection_id: str, request_id: str | None = None
    ) -> LoginRedirect:
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
        self.hub.audit.emit(
            "login.started", partner=partner.id, connection=connection_id, request_id=request_id
        )
        return redirect

    async def complete(
        self,
        connection_id: str,
        params: Mapping[str, str],
        cookie_flow_id: str | None,
        request_id: str | None = None,
        method: str = "GET",
    ) -> Completed:
        """Validate the callback, bind the identity, open a session. Errors are audited.

        The flow is found by ``state`` (OIDC) or ``RelayState`` (SAML). An answer that
        belongs to no flow is unsolicited: the connector gets no flow state and refuses it
        unless its connection opted in to IdP-initiated sign-in.
        """
        partner_id: str | None = None
        try:
            found = self.hub.connector(connection_id)
            if found is None:
                raise NotFound(f"callback for unknown connection {connection_id!r}")
            partner, connector = found
            partner_id = partner.id
            flow_id = params.get("state") or params.get("RelayState") or ""
            flow = await self._take_flow(flow_id, cookie_flow_id, connection_id)
            identity = await connector.handle_callback(
                CallbackRequest(self.hub.callback_url(connection_id), params, method),
                flow.connector_state if flow else None,
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
        return_url = flow.return_url if flow else self._unsolicited_return(connection_id, params)
        return Completed(session, return_url)

    def _unsolicited_return(self, connection_id: str, params: Mapping[str, str]) -> str:
        """IdP-initiated: the RelayState when it is a safe URL, else the connection's page."""
        relay = params.get("RelayState", "")
        if relay.startswith("/") and safe_return_url(relay, self.hub.issuer) == relay:
            return relay
        entry = self.hub.registry.connection(connection_id)
        default = getattr(entry[1], "idp_initiated_return_url", "/") if entry else "/"
        return safe_return_url(default, self.hub.issuer)

    async def _take_flow(
        self, flow_id: str, cookie_flow_id: str | None, connection_id: str
    ) -> LoginFlow | None:
        """The flow this answer belongs to (taken: a replay finds nothing), or None."""
        flow = await self.flows.take(flow_id) if flow_id else None
        if flow is None:
            return None
        if not cookie_flow_id or not hmac.compare_digest(cookie_flow_id, flow.id):
            raise InvalidState("callback arrived in a browser that did not start this flow")
        if flow.connection_id != connection_id:
            raise InvalidState(
                f"flow was started for {flow.connection_id!r}, callback came for {connection_id!r}"
            )
        return flow
