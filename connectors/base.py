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


@dataclass(frozen=True, slots=True)
class CallbackRequest:
    callback_url: str
    params: Mapping[str, str]  # query string and (for POST bindings) form fields


@runtime_checkable
class CallbackConnector(Protocol):
    """Redirect the browser to the IdP, then turn its answer into an identity."""

    @property
    def id(self) -> str: ...

    @property
    def partner_id(self) -> str: ...

    async def login_url(self, request: LoginRequest) -> LoginRedirect: ...

    async def handle_callback(
        self, request: CallbackRequest, flow_state: Mapping[str, Any]
    ) -> FederatedIdentity: ...


@runtime_checkable
class ClosableConnector(Protocol):
    """A connector holding resources (pooled HTTP connections) to release at shutdown."""

    async def aclose(self) -> None: ...
