"""``partner_kind``: the subject's partner is of one of these kinds (internal, supplier,
subcontractor, distributor, customer).

    when:
      partner_kind: [supplier, subcontractor]
"""

from __future__ import annotations

from typing import Any

from federation.settings import PartnerKind as Kind
from policies.criteria.base import (
    CompileContext,
    Criterion,
    CriterionValueError,
    one_of,
    string_list,
)
from policies.model import AccessRequest, Subject

KINDS = tuple(kind.value for kind in Kind)


class PartnerKind(Criterion):
    __slots__ = ("kinds",)
    key = "partner_kind"
    code = "partner_kind_not_allowed"

    def __init__(self, kinds: frozenset[str]) -> None:
        self.kinds = kinds

    def matches(self, subject: Subject, request: AccessRequest) -> bool:
        return subject.partner.kind in self.kinds

    def describe(self) -> str:
        return f"partner kind is {one_of(self.kinds)}"

    def observed(self, subject: Subject, request: AccessRequest) -> str:
        return f"partner kind is {subject.partner.kind.value}"


def compile(value: Any, ctx: CompileContext) -> PartnerKind:
    kinds = string_list(value, what="partner kind")
    for i, kind in enumerate(kinds):
        if kind not in KINDS:
            field = str(i) if isinstance(value, list) else ""
            raise CriterionValueError(f"{kind!r} is not a partner kind ({', '.join(KINDS)})", field)
    return PartnerKind(frozenset(kinds))
