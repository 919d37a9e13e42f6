"""A compiled rule: its checks, the partners it is indexed under, and its reasons, built
once so that a decision only picks them up."""

from __future__ import annotations

from dataclasses import dataclass, field

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
    _misses: dict[int, Reason] = field(default_factory=dict, compare=False, repr=False)

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
            first = next(leaf.key for c in _all_checks(partner, checks) for leaf in c.leaves())
            default_code = "denied" if first == "always" else f"{first}_denied"
            matched = Reason(
                code or default_code,
                reason or f"denied by rule {name!r} ({requires})",
                name,
                public,
            )
            decision = None
        return cls(name, effect, checks, partner, reason, public, code, matched, decision)

    @property
    def all_checks(self) -> tuple[Criterion, ...]:
        """The checks including the indexed partner criterion (for explain)."""
        return _all_checks(self.partner, self.checks)

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

    def miss(self, subject: Subject, request: AccessRequest) -> Reason:
        """Why this allow rule did not match: its first failing criterion."""
        failing = self.first_failing(subject, request)
        if failing is None:  # pragma: no cover - only called on rules that did not match
            return self.matched
        reason = self._misses.get(id(failing))
        if reason is None:
            message = self.reason or f"rule {self.name!r} requires {failing.describe()}"
            reason = Reason(failing.code, message, self.name, self.public)
            self._misses[id(failing)] = reason
        return reason


def _all_checks(partner: Partner | None, checks: tuple[Criterion, ...]) -> tuple[Criterion, ...]:
    real = tuple(c for c in checks if c.key != "always")
    if partner is not None:
        return (partner, *real)
    return real or checks
