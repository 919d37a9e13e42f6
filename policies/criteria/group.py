"""``group``: the subject is in at least one of these groups (as mapped by its connection).
For "in every one of them", write one ``group`` per entry under ``all``.

    when:
      group: [buyers, accounting]
"""

from __future__ import annotations

from typing import Any

from policies.criteria.base import CompileContext, Criterion, one_of, string_list
from policies.model import AccessRequest, Subject


class Group(Criterion):
    __slots__ = ("groups",)
    key = "group"
    code = "group_missing"

    def __init__(self, groups: frozenset[str]) -> None:
        self.groups = groups

    def matches(self, subject: Subject, request: AccessRequest) -> bool:
        return not self.groups.isdisjoint(subject.identity.groups)

    def describe(self) -> str:
        return f"member of {one_of(self.groups)}"

    def observed(self, subject: Subject, request: AccessRequest) -> str:
        groups = subject.identity.groups
        return f"groups are {', '.join(groups)}" if groups else "no groups"


def compile(value: Any, ctx: CompileContext) -> Group:
    return Group(frozenset(string_list(value, what="group name")))
