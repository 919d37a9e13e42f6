"""Isthmus: the federation hub.

How a sign-in flows through the package::

    browser ──/login (email)──▶ web.broker ──home-realm discovery──▶ registry (domain → partner
        → connection) ──connector.login_url──▶ partner IdP ──/callback/{connection}──▶
    connector.handle_callback ──▶ FederatedIdentity ──broker.binding (invariant 1, partner
        status, contract)──▶ sessions (store) ──▶ back to rd, or to oidc.authorize ──▶ code
        ──▶ oidc.token: ID/access/refresh tokens signed with keys (JWKS)

Modules: ``settings`` (typed config), ``registry`` (partners, connections, clients),
``identity`` (FederatedIdentity), ``errors`` (spec-coded errors), ``stores`` (TTL state),
``sessions``, ``keys`` (JWKS and rotation), ``jose`` (JWT signing/verification),
``oidc`` (the hub's OIDC provider, one module per spec), ``web`` (the thin Starlette
layer: pages, error mapping, routes), ``audit``, ``cli``.
"""
