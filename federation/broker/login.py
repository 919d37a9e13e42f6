"""The login flow, framework-free: discover → start upstream (flow stored) → complete."""

from __future__ import annotations

import hmac
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime

from connectors.base import CallbackConnector, CallbackRequest, LoginRedirect, LoginRequest
from federation.admin import accounts
from federation.broker.binding import BindingReport, bind, explain
from federation.broker.discovery import Realm, discover
from federation.broker.flows import FlowStore, LoginFlow
from federation.errors import InvalidState, IsthmusError, NotFound, PartnerNotActive
from federation.hub import Hub
from federation.identity import FederatedIdentity
from federation.redirects import safe_return_url, safe_return_url_for
from federation.registry import Partner
from federation.sessions import Session

TEST_LOGIN_EVENT = "admin.connection.test_login"


@dataclass(frozen=True, slots=True)
class Completed:
    session: Session
    return_url: str


@dataclass(frozen=True, slots=True)
class LoginTestResult:
    """What a test login produced, for the admin who started it; no session exists."""

    partner_id: str
    connection_id: str
    tested_by: str
    partner_status: str
    partner_may_sign_in: bool
    identity: FederatedIdentity | None = None  # as the connection mapped it
    binding: BindingReport | None = None  # invariant 1 on that identity
    error: str | None = None  # why the connection produced no identity

    @classmethod
    def of(
        cls,
        partner: Partner,
        connection_id: str,
        tested_by: str,
        now: datetime,
        *,
        error: str | None = None,
    ) -> LoginTestResult:
        status = partner.settings.status.value
        return cls(
            partner.id, connection_id, tested_by, status, partner.may_sign_in(now), error=error
        )

    @property
    def passed(self) -> bool:
        return self.identity is not None and self.binding is not None and self.binding.passed

    @property
    def claim_names(self) -> list[str]:
        return sorted(self.identity.raw_claims) if self.identity else []


class Broker:
    def __init__(self, hub: Hub) -> None:
        self.hub = hub
        self.flows = FlowStore(hub.store)

    def begin(self, return_url: str | None, login_hint: str | None = None) -> LoginFlow:
        """A new flow; nothing is stored until it goes upstream (:meth:`start`)."""
        return LoginFlow.new(safe_return_url_for(return_url, self.hub.settings), login_hint)

    def begin_test(self, actor_name: str) -> LoginFlow:
        """A test login's flow: its callback renders the identity instead of a session."""
        return LoginFlow.new("/", test_by=actor_name)

    def discover(self, email_or_domain: str) -> Realm | None:
        return discover(self.hub.registry, email_or_domain)

    async def start(
        self, flow: LoginFlow, connection_id: str, request_id: str | None = None
    ) -> LoginRedirect:
        """Ask the connector for the upstream URL; keep its opaque state under the flow id.

        A test login goes through whatever the partner's status (an admin tries the
        connection before activating the partner)."""
        found = self.hub.connector(connection_id)
        if found is None:
            raise NotFound(f"unknown connection {connection_id!r}")
        partner, connector = found
        now = datetime.fromtimestamp(self.hub.clock(), UTC)
        if flow.test_by is None and not partner.may_sign_in(now):
            raise PartnerNotActive(f"partner {partner.id} may not sign in")
        test = {"step": "started", "actor": flow.test_by} if flow.test_by else {}
        try:
            redirect = await connector.login_url(
                LoginRequest(self.hub.callback_url(connection_id), flow.id, flow.login_hint)
            )
        except IsthmusError as exc:  # e.g. the partner IdP is down: audited like a callback
            self.hub.audit.emit(
                TEST_LOGIN_EVENT if test else "login.failed",
                outcome="failure",
                partner=partner.id,
                connection=connection_id,
                reason=exc.error,
                detail=exc.detail,
                request_id=request_id,
                **test,
            )
            raise
        await self.flows.save(flow.started(connection_id, redirect.flow_state))
        self.hub.audit.emit(
            TEST_LOGIN_EVENT if test else "login.started",
            partner=partner.id,
            connection=connection_id,
            request_id=request_id,
            **test,
        )
        return redirect

    async def complete(
        self,
        connection_id: str,
        params: Mapping[str, str],
        cookie_flow_id: str | None,
        request_id: str | None = None,
        method: str = "GET",
    ) -> Completed | LoginTestResult:
        """Validate the callback, bind the identity, open a session. Errors are audited.

        The flow is found by ``state`` (OIDC) or ``RelayState`` (SAML). An answer that
        belongs to no flow is unsolicited: the connector gets no flow state and refuses it
        unless its connection opted in to IdP-initiated sign-in. The answer to a test
        login opens no session: it becomes a :class:`LoginTestResult`.
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
            callback = CallbackRequest(self.hub.callback_url(connection_id), params, method)
            if flow is not None and flow.test_by is not None:
                return await self._tested(flow, partner, connector, callback, request_id)
            identity = await connector.handle_callback(
                callback, flow.connector_state if flow else None
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
        # The person's account (last sign-in) is written with the session: one round trip.
        ttl = accounts.account_ttl(partner.settings, self.hub.base_settings.lifecycle)
        account = accounts.sign_in_writes(identity, self.hub.clock(), ttl)
        session = await self.hub.sessions.create(
            identity, puts=account.puts, adds=account.adds, upstream=callback.session_state
        )
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

    async def _tested(
        self,
        flow: LoginFlow,
        partner: Partner,
        connector: CallbackConnector,
        callback: CallbackRequest,
        request_id: str | None,
    ) -> LoginTestResult:
        """The test login's answer: the connector's identity and invariant 1 on it, or why
        the connector refused the answer — and no session."""
        connection_id, tested_by = connector.id, str(flow.test_by)
        now = datetime.fromtimestamp(self.hub.clock(), UTC)
        result = LoginTestResult.of(partner, connection_id, tested_by, now)
        try:
            identity = await connector.handle_callback(callback, flow.connector_state)
        except IsthmusError as exc:
            result = replace(result, error=f"{exc.error}: {exc.detail}")
        else:
            binding = explain(identity, partner, self.hub.registry)
            result = replace(result, identity=identity, binding=binding)
        self.hub.audit.emit(
            TEST_LOGIN_EVENT,
            outcome="success" if result.passed else "failure",
            step="completed",
            actor=tested_by,
            partner=partner.id,
            connection=connection_id,
            issuer=result.identity.issuer if result.identity else None,
            subject=result.identity.subject if result.identity else None,
            binding=result.binding.reason if result.binding else None,
            detail=result.error,
            request_id=request_id,
        )
        return result

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
