"""``contract: valid``: the request falls inside the partner's contract window
(``valid_from`` included, ``valid_until`` excluded; an open end is open).

    when:
      contract: valid
"""

from __future__ import annotations

from typing import Any

from policies.criteria.base import CompileContext, Criterion, CriterionValueError
from policies.model import AccessRequest, Subject


class Contract(Criterion):
    __slots__ = ()
    key = "contract"
    code = "contract_not_valid"

    def matches(self, subject: Subject, request: AccessRequest) -> bool:
        return subject.partner.contract.contains(request.now)

    def describe(self) -> str:
        return "partner contract is valid"

    def observed(self, subject: Subject, request: AccessRequest) -> str:
        window = subject.partner.contract
        start = window.valid_from.isoformat() if window.valid_from else "open"
        end = window.valid_until.isoformat() if window.valid_until else "open"
        return f"contract runs {start} to {end}, now is {request.now.isoformat()}"


def compile(value: Any, ctx: CompileContext) -> Contract:
    if value != "valid":
        raise CriterionValueError("the only value is 'valid' (use not: for the opposite)")
    return Contract()
