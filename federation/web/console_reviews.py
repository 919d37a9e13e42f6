"""Console: access reviews — sponsors confirm who keeps access. (Being built — issue 9.)"""

from __future__ import annotations

from starlette.routing import BaseRoute

routes: list[BaseRoute] = []
