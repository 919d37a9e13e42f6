"""Placeholder: routes are added by the admin work in progress."""

from __future__ import annotations

from starlette.routing import BaseRoute

routes: list[BaseRoute] = []
