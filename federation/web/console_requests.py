"""Console: sign-up requests — the named sponsor approves or refuses. (Being built —
issue 9.)"""

from __future__ import annotations

from starlette.routing import BaseRoute

routes: list[BaseRoute] = []
