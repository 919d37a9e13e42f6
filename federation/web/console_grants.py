"""Console: time-boxed grants — listed, made and revoked by admins and by sponsors for
the partners they sponsor. (Being built — issue 9.)"""

from __future__ import annotations

from starlette.routing import BaseRoute

routes: list[BaseRoute] = []
