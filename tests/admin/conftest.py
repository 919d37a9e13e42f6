"""The admin tests' shared fixtures (defined in :mod:`tests.admin.support`)."""

from tests.admin.support import admin, app, as_user, events, http, hub  # noqa: F401
