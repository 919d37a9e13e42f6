"""``grant: valid``: the subject holds a grant for this app (the app the policy is compiled
for, or ``{app: other-app}``) that has not expired — project-scoped, time-boxed access.

    when:
      grant: valid
"""

from __future__ import annotations

from typing import Any

from policies.criteria.base import CompileContext, Criterion, CriterionValueError, mapping
from policies.model import AccessRequest, Subject


class Grant(Criterion):
    __slots__ = ("app_id",)
    key = "grant"
    code = "no_valid_grant"

    def __init__(self, app_id: str) -> None:
        self.app_id = app_id

    def matches(self, subject: Subject, request: AccessRequest) -> bool:
        now = request.now
        return any(g.app_id == self.app_id and now < g.expires_at for g in subject.grants)

    def describe(self) -> str:
        return f"a valid grant for app {self.app_id}"

    def observed(self, subject: Subject, request: AccessRequest) -> str:
        mine = [g for g in subject.grants if g.app_id == self.app_id]
        if not mine:
            return f"no grant for app {self.app_id}"
        latest = max(g.expires_at for g in mine)
        return f"latest grant for app {self.app_id} expires {latest.isoformat()}"


def compile(value: Any, ctx: CompileContext) -> Grant:
    if value == "valid":
        return Grant(ctx.app_id)
    spec = mapping(value, ("app",), required=("app",))
    if not isinstance(spec["app"], str) or not spec["app"]:
        raise CriterionValueError("expected an app id", "app")
    return Grant(spec["app"])
