"""A compiled rule: its checks, the partners it is indexed under, and its reasons, built
once so that a decision only picks them up."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass

from policies.combinators import All, Any, Not
from policies.criteria.base import Criterion
from policies.criteria.partner import Partner
from policies.model import AccessRequest, Decision, Reason, Subject


@dataclass(frozen=True, slots=True)
class Rule:
    name: str
    effect: str  # "allow" | "deny"
    # The criteria evaluated per request (implicit AND). A top-level ``partner`` criterion
    # is not among them: the policy's partner index applies it.
    checks: tuple[Criterion, ...]
    partner: Partner | None
    reason: str | None  # the policy author's sentence
    public: bool
    code: str | None
    matched: Reason  # the reason when the rule matches
    decision: Decision | None  # allow rules: the (shared, immutable) decision they give
    all_checks: tuple[Criterion, ...]  # the checks including the indexed partner criterion
    # Allow rules: the reason to give when a criterion (by id) is the one that failed.
    misses: Mapping[int, Reason]

    @classmethod
    def build(
        cls,
        *,
        name: str,
        effect: str,
        checks: tuple[Criterion, ...],
        partner: Partner | None,
        reason: str | None,
        public: bool,
        code: str | None,
    ) -> Rule:
        requires = " and ".join(c.describe() for c in _all_checks(partner, checks))
        if effect == "allow":
            matched = Reason(
                code or "allowed",
                reason or f"allowed by rule {name!r} ({requires})",
                name,
                public,
            )
            decision: Decision | None = Decision(True, (matched,))
        else:
            # Named after the first criterion that is not the indexed partner (if any).
            first = next(leaf.key for c in (*checks, partner) if c for leaf in c.leaves())
            default_code = "denied" if first == "always" else f"{first}_denied"
            matched = Reason(
                code or default_code,
                reason or f"denied by rule {name!r} ({requires})",
                name,
                public,
            )
            decision = None
        all_checks = _all_checks(partner, checks)
        misses = {
            id(node): Reason(
                node.code, reason or f"rule {name!r} requires {node.describe()}", name, public
            )
            for check in all_checks
            for node in _nodes(check)
        }
        return cls(
            name,
            effect,
            checks,
            partner,
            reason,
            public,
            code,
            matched,
            decision,
            all_checks,
            misses,
        )

    def matches(self, subject: Subject, request: AccessRequest) -> bool:
        for check in self.checks:  # noqa: SIM110 - faster than all(genexp)
            if not check.matches(subject, request):
                return False
        return True

    def first_failing(self, subject: Subject, request: AccessRequest) -> Criterion | None:
        for check in self.all_checks:
            if not check.matches(subject, request):
                return check.failing(subject, request)
        return None

    def miss(self, check: Criterion, subject: Subject, request: AccessRequest) -> Reason:
        """Why this allow rule did not match, ``check`` being the check that failed."""
        return self.misses[id(check.failing(subject, request))]


def _all_checks(partner: Partner | None, checks: tuple[Criterion, ...]) -> tuple[Criterion, ...]:
    real = tuple(c for c in checks if c.key != "always")
    if partner is not None:
        return (partner, *real)
    return real or checks


def _nodes(criterion: Criterion) -> Iterator[Criterion]:
    yield criterion
    if isinstance(criterion, All | Any):
        for child in criterion.children:
            yield from _nodes(child)
    elif isinstance(criterion, Not):
        yield from _nodes(criterion.child)
