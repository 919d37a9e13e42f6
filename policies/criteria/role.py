"""``role``: the subject holds at least one of these roles (as mapped by its connection).

when:
  role: [approver]
"""

from __future__ import annotations

from typing import Any

from policies.criteria.base import CompileContext, Criterion, one_of, string_list
from policies.model import AccessRequest, Subject


class Role(Criterion):
    __slots__ = ("roles",)
    key = "role"
    code = "role_missing"

    def __init__(self, roles: frozenset[str]) -> None:
        self.roles = roles

    def matches(self, subject: Subject, request: AccessRequest) -> bool:
        return not self.roles.isdisjoint(subject.identity.roles)

    def describe(self) -> str:
        return f"role {one_of(self.roles)}"

    def observed(self, subject: Subject, request: AccessRequest) -> str:
        roles = subject.identity.roles
        return f"roles are {', '.join(roles)}" if roles else "no roles"


def compile(value: Any, ctx: CompileContext) -> Role:
    return Role(frozenset(string_list(value, what="role name")))
