"""The broker: email → home-realm discovery → partner IdP → one bound identity → session.

``discovery`` resolves an email or domain to a partner's connections; ``flows`` keeps each
login's state in the store under a flow id (the ``state`` sent upstream); ``binding``
enforces security invariant 1 and the partner's status and contract before a session
exists. ``login`` strings them together for the web layer, which stays thin.
"""
