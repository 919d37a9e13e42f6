"""``connection``: the subject signed in through one of these connections (its partner's
OIDC, SAML, ... connection ids).

    when:
      connection: acme-saml
"""

from __future__ import annotations

from typing import Any

from policies.criteria.base import CompileContext, Criterion, one_of, string_list
from policies.model import AccessRequest, Subject


class Connection(Criterion):
    __slots__ = ("connections",)
    key = "connection"
    code = "connection_not_allowed"

    def __init__(self, connections: frozenset[str]) -> None:
        self.connections = connections

    def matches(self, subject: Subject, request: AccessRequest) -> bool:
        return subject.identity.connection_id in self.connections

    def describe(self) -> str:
        return f"connection is {one_of(self.connections)}"

    def observed(self, subject: Subject, request: AccessRequest) -> str:
        return f"connection is {subject.identity.connection_id}"


def compile(value: Any, ctx: CompileContext) -> Connection:
    return Connection(frozenset(string_list(value, what="connection id")))
