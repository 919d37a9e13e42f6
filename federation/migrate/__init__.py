"""Migration into Isthmus: ``isthmus keycloak import``.

A Keycloak realm's Organizations become partners (status ``invited``) and the identity
providers linked to them become connections, written as files for ``isthmus apply``, with
a report of what could not be carried over. The steps, one module each (none imports
starlette):

- :mod:`~federation.migrate.keycloak` reads the realm through the admin API
  (python-keycloak, a service-account client) into a :class:`RealmSnapshot`;
- :mod:`~federation.migrate.partners` maps it, purely, to partner documents and an
  :class:`ImportReport` (:mod:`~federation.migrate.report`), with the help of
  :mod:`~federation.migrate.mappers` (IdP mappers → claim/attribute mappings) and
  :mod:`~federation.migrate.metadata` (SAML IdP metadata from Keycloak's settings);
- :mod:`~federation.migrate.output` writes them (``write_bundle``) and IMPORT-REPORT.md;
- :mod:`~federation.migrate.cli` is the command.

docs/keycloak.md ("Migrating from Keycloak") says what is decided and why.
"""
