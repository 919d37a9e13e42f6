"""Placeholder until the provider endpoints land (replaced by the OIDC provider work)."""

from starlette.routing import BaseRoute

routes: list[BaseRoute] = []
