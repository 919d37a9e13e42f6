"""``all`` / ``any`` / ``not`` around criteria, and ``always`` (the explicit match-all).

A ``when`` mapping is an implicit ``all`` of its keys; ``all`` and ``any`` take a list of
``when`` mappings, ``not`` takes one.
"""

from __future__ import annotations

from collections.abc import Iterable

from policies.criteria.base import Criterion
from policies.model import AccessRequest, Subject


class All(Criterion):
    __slots__ = ("children",)
    key = "all"
    code = "criteria_not_met"

    def __init__(self, children: tuple[Criterion, ...]) -> None:
        self.children = children

    def matches(self, subject: Subject, request: AccessRequest) -> bool:
        for child in self.children:  # noqa: SIM110 - a plain loop is faster than all(genexp)
            if not child.matches(subject, request):
                return False
        return True

    def failing(self, subject: Subject, request: AccessRequest) -> Criterion:
        for child in self.children:
            if not child.matches(subject, request):
                return child.failing(subject, request)
        return self

    def describe(self) -> str:
        return " and ".join(_grouped(c) for c in self.children)

    def observed(self, subject: Subject, request: AccessRequest) -> str:
        return "; ".join(c.observed(subject, request) for c in self.children)

    def leaves(self) -> Iterable[Criterion]:
        for child in self.children:
            yield from child.leaves()


class Any(Criterion):
    __slots__ = ("children",)
    key = "any"
    code = "no_alternative_matched"

    def __init__(self, children: tuple[Criterion, ...]) -> None:
        self.children = children

    def matches(self, subject: Subject, request: AccessRequest) -> bool:
        for child in self.children:  # noqa: SIM110 - faster than any(genexp)
            if child.matches(subject, request):
                return True
        return False

    def describe(self) -> str:
        return "either " + " or ".join(_grouped(c) for c in self.children)

    def observed(self, subject: Subject, request: AccessRequest) -> str:
        return "; ".join(c.observed(subject, request) for c in self.children)

    def leaves(self) -> Iterable[Criterion]:
        for child in self.children:
            yield from child.leaves()


class Not(Criterion):
    __slots__ = ("child",)
    key = "not"
    code = "excluded"

    def __init__(self, child: Criterion) -> None:
        self.child = child

    def matches(self, subject: Subject, request: AccessRequest) -> bool:
        return not self.child.matches(subject, request)

    def describe(self) -> str:
        return f"not {_grouped(self.child)}"

    def observed(self, subject: Subject, request: AccessRequest) -> str:
        return self.child.observed(subject, request)

    def leaves(self) -> Iterable[Criterion]:
        yield from self.child.leaves()


class Always(Criterion):
    __slots__ = ()
    key = "always"
    code = "never"

    def matches(self, subject: Subject, request: AccessRequest) -> bool:
        return True

    def describe(self) -> str:
        return "any request"

    def observed(self, subject: Subject, request: AccessRequest) -> str:
        return "any request"


def _grouped(criterion: Criterion) -> str:
    text = criterion.describe()
    return f"({text})" if isinstance(criterion, All | Any) else text
