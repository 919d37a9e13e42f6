"""The admin side: the durable registry, the admin service, onboarding and domain proofs.

Flow of a change (API, console, CLI and ``isthmus apply`` all take it)::

    actor (admin, auditor, partner admin; from a session or an API token)   auth.py
      → AdminService: authorize, validate the whole registry as it would be   service.py
        (per-document models, cross-document rules, policies compiled)        catalog.py
      → DocumentStore.apply: versions checked, all-or-nothing, history kept   documents.py
      → effects: a partner suspended/offboarded loses every session at once
      → Hub.reload(): this replica at once; the others poll the revision      live.py

Nothing here imports starlette: the web layer (``federation.web.admin_api``,
``federation.web.console``) is a thin shell over :class:`AdminService`.
"""
