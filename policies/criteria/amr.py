"""``amr``: the authentication methods of the sign-in (RFC 8176 values: ``mfa``, ``otp``,
``hwk``, ``pwd``, ...) contain at least one of these — "signed in with MFA" is
``amr: mfa``. Like acr, present only from connections trusted for it.

    when:
      amr: [mfa, hwk]
"""

from __future__ import annotations

from typing import Any

from policies.criteria.base import CompileContext, Criterion, one_of, string_list
from policies.model import AccessRequest, Subject


class Amr(Criterion):
    __slots__ = ("values",)
    key = "amr"
    code = "mfa_required"

    def __init__(self, values: frozenset[str]) -> None:
        self.values = values

    def matches(self, subject: Subject, request: AccessRequest) -> bool:
        return not self.values.isdisjoint(subject.identity.amr)

    def describe(self) -> str:
        return f"authentication methods include {one_of(self.values)}"

    def observed(self, subject: Subject, request: AccessRequest) -> str:
        amr = subject.identity.amr
        return (
            f"authentication methods are {', '.join(amr)}" if amr else "no authentication methods"
        )


def compile(value: Any, ctx: CompileContext) -> Amr:
    return Amr(frozenset(string_list(value, what="amr value")))
