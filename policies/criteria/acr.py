"""``acr``: the authentication context class the subject signed in with is one of these.
The identity carries an acr only when its connection is trusted for it (``trust_acr``):
from an untrusted partner IdP this never matches.

    when:
      acr: [urn:example:mfa, phr]
"""

from __future__ import annotations

from typing import Any

from policies.criteria.base import CompileContext, Criterion, one_of, string_list
from policies.model import AccessRequest, Subject


class Acr(Criterion):
    __slots__ = ("values",)
    key = "acr"
    code = "acr_insufficient"

    def __init__(self, values: frozenset[str]) -> None:
        self.values = values

    def matches(self, subject: Subject, request: AccessRequest) -> bool:
        return subject.identity.acr in self.values

    def describe(self) -> str:
        return f"acr is {one_of(self.values)}"

    def observed(self, subject: Subject, request: AccessRequest) -> str:
        return f"acr is {subject.identity.acr or 'absent'}"


def compile(value: Any, ctx: CompileContext) -> Acr:
    return Acr(frozenset(string_list(value, what="acr value")))
