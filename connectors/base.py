"""The capability protocols a connector may implement."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from federation.identity import FederatedIdentity


@dataclass(frozen=True, slots=True)
class LoginRequest:
    callback_url: str  # where the IdP must send the browser back (exact, registered there)
    state: str  # the hub's flow id: the IdP echoes it, the hub finds its flow with it
    login_hint: str | None = None


@dataclass(frozen=True, slots=True)
class LoginRedirect:
    url: str
    # Opaque to the hub: stored under the flow id, handed back to handle_callback.
    flow_state: dict[str, Any] = field(default_factory=dict)
    # HTTP-POST binding (SAML): the browser must POST these fields to ``url`` (the hub
    # renders a self-submitting form); None means a plain redirect to ``url``.
    form: dict[str, str] | None = None


@dataclass(frozen=True, slots=True)
class CallbackRequest:
    callback_url: str
    params: Mapping[str, str]  # query string and (for POST bindings) form fields
    # "GET" or "POST": which binding carried the answer (SAML cares, OIDC does not).
    method: str = "GET"
    # Filled by the connector, read by the hub once the login succeeded: what the hub keeps
    # with the session, server-side only (never in a cookie, not in the identity), and hands
    # back to ``LogoutConnector.logout_url`` — the OIDC ID token, for ``id_token_hint``.
    session_state: dict[str, Any] = field(default_factory=dict)


@runtime_checkable
class CallbackConnector(Protocol):
    """Redirect the browser to the IdP, then turn its answer into an identity."""

    @property
    def id(self) -> str: ...

    @property
    def partner_id(self) -> str: ...

    async def login_url(self, request: LoginRequest) -> LoginRedirect: ...

    async def handle_callback(
        self, request: CallbackRequest, flow_state: Mapping[str, Any] | None
    ) -> FederatedIdentity:
        """``flow_state`` is None for an unsolicited answer (no flow: IdP-initiated SSO);
        a connector refuses it unless its connection opted in."""
        ...


@runtime_checkable
class MetadataConnector(Protocol):
    """Publishes metadata the partner's IdP needs about the hub (SAML SP metadata)."""

    async def sp_metadata(self) -> str: ...


@dataclass(frozen=True, slots=True)
class LogoutOutcome:
    """What a logout message at the hub's SLO endpoint asks for, and the answer to send.

    ``end_subject``: end the hub sessions of this upstream subject (IdP-initiated logout);
    ``redirect``: where the browser goes next (with ``form`` for a POST binding).
    """

    end_subject: str | None = None
    session_index: str | None = None
    redirect: LoginRedirect | None = None


@runtime_checkable
class LogoutConnector(Protocol):
    """Logout at the partner's IdP: SAML single logout, OIDC RP-Initiated Logout 1.0."""

    async def logout_url(
        self,
        identity: FederatedIdentity,
        return_url: str,
        state: str,
        session_state: Mapping[str, Any] | None = None,
    ) -> LoginRedirect | None:
        """SP-initiated: where to send the browser so the IdP ends its session (None: the
        IdP has no logout endpoint, or the connection opted out). ``return_url`` is the hub's
        ``/logout/{connection_id}/done`` (where an OIDC IdP sends the browser back, with
        ``state``); ``session_state`` is what the connector asked the hub to keep with the
        session at sign-in (:attr:`CallbackRequest.session_state`)."""
        ...

    async def handle_logout(self, request: CallbackRequest) -> LogoutOutcome:
        """A LogoutRequest (IdP-initiated) or LogoutResponse (ours answered) at the hub; for
        OIDC, the browser back at ``return_url`` (the hub has checked its ``state``)."""
        ...


class ReplayCache(Protocol):
    """One-time ids (SAML assertion ids): True the first time within ``ttl``, then False.
    The hub lends connectors one backed by its store (connectors stay stateless)."""

    async def first_use(self, key: str, ttl: float) -> bool: ...


@runtime_checkable
class ClosableConnector(Protocol):
    """A connector holding resources (pooled HTTP connections) to release at shutdown."""

    async def aclose(self) -> None: ...
