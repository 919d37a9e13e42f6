"""``claim``: a raw claim of the IdP (``FederatedIdentity.raw_claims``; a dotted name
reaches nested claims) equals a value, is one of several, or — for a list claim — contains
a value. Exactly one of ``equals`` / ``in`` / ``contains``.

Raw claims are what the partner's IdP said, unmapped: prefer ``group`` / ``role`` (mapped
by the connection), and use ``claim`` only for claims the connection is trusted to send.

    when:
      claim: {name: department, in: [purchasing, logistics]}
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from policies.criteria.base import CompileContext, Criterion, CriterionValueError, mapping
from policies.model import AccessRequest, Subject

_MISSING = object()
Scalar = str | int | float | bool


class Claim(Criterion):
    __slots__ = ("name", "op", "path", "values")
    key = "claim"
    code = "claim_mismatch"

    def __init__(self, name: str, op: str, values: frozenset[Scalar]) -> None:
        self.name = name
        self.path = tuple(name.split("."))
        self.op = op
        self.values = values

    def value(self, subject: Subject) -> object:
        current: object = subject.identity.raw_claims
        for part in self.path:
            if not isinstance(current, Mapping):
                return _MISSING
            current = current.get(part, _MISSING)
        return current

    def matches(self, subject: Subject, request: AccessRequest) -> bool:
        value = self.value(subject)
        if self.op == "contains":
            return isinstance(value, list | tuple) and any(
                _hashable(item) and _same(item, self.values) for item in value
            )
        return _hashable(value) and _same(value, self.values)

    def describe(self) -> str:
        shown = ", ".join(sorted(repr(v) for v in self.values))
        if self.op == "contains":
            return f"claim {self.name} contains {shown}"
        return f"claim {self.name} {'is' if len(self.values) == 1 else 'is one of'} {shown}"

    def observed(self, subject: Subject, request: AccessRequest) -> str:
        value = self.value(subject)
        return (
            f"claim {self.name} is absent"
            if value is _MISSING
            else f"claim {self.name} is {value!r}"
        )


def _hashable(value: object) -> bool:
    return isinstance(value, Scalar)


def _same(value: object, values: frozenset[Scalar]) -> bool:
    # 1 == True in Python; a claim's type is part of its value here.
    return any(value == v and type(value) is type(v) for v in values) if value in values else False


def compile(value: Any, ctx: CompileContext) -> Claim:
    spec = mapping(value, ("name", "equals", "in", "contains"), required=("name",))
    name = spec["name"]
    if not isinstance(name, str) or not name or "" in name.split("."):
        raise CriterionValueError("expected a claim name (dotted for nested claims)", "name")
    ops = [op for op in ("equals", "in", "contains") if op in spec]
    if len(ops) != 1:
        raise CriterionValueError("give exactly one of equals, in, contains")
    op = ops[0]
    raw = spec[op]
    items = raw if op == "in" else [raw]
    if op == "in" and (not isinstance(raw, list) or not raw):
        raise CriterionValueError("expected a non-empty list of values", "in")
    for item in items:
        if not isinstance(item, Scalar):
            raise CriterionValueError(f"expected a string, number or boolean, got {item!r}", op)
    return Claim(name, "contains" if op == "contains" else "in", frozenset(items))
