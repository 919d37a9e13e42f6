"""Migration into Isthmus from other identity brokers.

:mod:`federation.migrate.keycloak` reads a Keycloak realm's Organizations and identity
providers through its admin API and turns them into partner documents for
``isthmus apply``, with a report of what could not be carried over
(``isthmus keycloak import``, :mod:`federation.migrate.cli`). Nothing here imports
starlette.
"""
