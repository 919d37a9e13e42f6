"""Upstream identity providers behind small capability protocols.

Flow (Dex's shape): the hub calls :meth:`CallbackConnector.login_url` and stores the
returned opaque ``flow_state`` under its own flow id; the partner IdP sends the browser
back; the hub hands the callback parameters and that state to
:meth:`CallbackConnector.handle_callback`, which returns a
:class:`~federation.identity.FederatedIdentity`. Connectors hold no per-login state and
never import starlette. They are found through the explicit
:class:`~connectors.registry.ConnectorRegistry`, never by import side effects.
"""

from connectors.base import CallbackConnector, CallbackRequest, LoginRedirect, LoginRequest

__all__ = ["CallbackConnector", "CallbackRequest", "LoginRedirect", "LoginRequest"]
