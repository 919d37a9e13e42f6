"""``partner``: the subject's partner (company) is one of these ids.

Rules whose ``when`` names ``partner`` at the top level are indexed on it: a decision only
looks at the rules of the subject's partner plus the partner-independent ones.

    when:
      partner: [acme, globex]
"""

from __future__ import annotations

from typing import Any

from policies.criteria.base import CompileContext, Criterion, one_of, string_list
from policies.model import AccessRequest, Subject


class Partner(Criterion):
    __slots__ = ("partners",)
    key = "partner"
    code = "partner_not_allowed"

    def __init__(self, partners: frozenset[str]) -> None:
        self.partners = partners

    def matches(self, subject: Subject, request: AccessRequest) -> bool:
        return subject.partner.id in self.partners

    def describe(self) -> str:
        return f"partner is {one_of(self.partners)}"

    def observed(self, subject: Subject, request: AccessRequest) -> str:
        return f"partner is {subject.partner.id}"


def compile(value: Any, ctx: CompileContext) -> Partner:
    return Partner(frozenset(string_list(value, what="partner id")))
