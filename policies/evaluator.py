"""The compiled, immutable policy of one app, indexed on partner, and its decisions.

Semantics: deny by default; deny rules win over allow rules; a decision always carries
its reasons — the rule that allowed; every deny rule that matched; or, when nothing
allowed, the first failing criterion of each allow rule that could apply, then
``no_rule_allowed``. A partner that is not active is refused before any rule.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from federation.settings import PartnerStatus
from policies.criteria.base import Criterion
from policies.model import AccessRequest, Decision, Reason, Subject
from policies.rules import Rule

NO_RULE_ALLOWED = Reason(
    "no_rule_allowed",
    "No rule of this application's access policy allows this request.",
    None,
    True,
)


@dataclass(frozen=True, slots=True)
class _Bucket:
    deny: tuple[Rule, ...]
    allow: tuple[Rule, ...]


@dataclass(frozen=True, slots=True)
class RuleTrace:
    """How one rule fared in :meth:`Policy.explain`."""

    rule: Rule
    applies: bool  # False: indexed under other partners, not looked at
    matched: bool
    failing: Criterion | None  # the first criterion that did not match
    observed: str  # what the request had for that criterion


@dataclass(frozen=True, slots=True)
class Explanation:
    decision: Decision
    traces: tuple[RuleTrace, ...]


class Policy:
    """Compiled once per app; :meth:`decide` is safe to call from any thread."""

    __slots__ = ("_buckets", "_default", "_independent", "default_reason", "name", "rules")

    def __init__(self, name: str, rules: Sequence[Rule], default_reason: Reason = NO_RULE_ALLOWED):
        self.name = name
        self.rules = tuple(rules)
        self.default_reason = default_reason
        self._default = Decision(False, (default_reason,))
        self._independent = _bucket(r for r in self.rules if r.partner is None)
        # One pass over the rules, then each partner's rules merged with the independent
        # ones in document order: compiling is O(rules + partners x independent rules).
        independent = [i for i, r in enumerate(self.rules) if r.partner is None]
        indexed: dict[str, list[int]] = {}
        for i, rule in enumerate(self.rules):
            if rule.partner is not None:
                for partner_id in rule.partner.partners:
                    indexed.setdefault(partner_id, []).append(i)
        self._buckets = {
            p: _bucket(self.rules[i] for i in heapq.merge(own, independent))
            for p, own in indexed.items()
        }

    def __repr__(self) -> str:
        return f"<Policy {self.name!r}: {len(self.rules)} rules>"

    def decide(self, subject: Subject, request: AccessRequest) -> Decision:
        partner = subject.partner
        if partner.status is not PartnerStatus.active:
            return _inactive(partner.id, partner.status.value)
        if subject.identity.partner_id != partner.id:
            return _mismatch(subject.identity.partner_id, partner.id)
        bucket = self._buckets.get(partner.id, self._independent)
        try:
            denied: tuple[Reason, ...] = ()
            for rule in bucket.deny:
                if rule.matches(subject, request):
                    denied += (rule.matched,)
            if denied:
                return Decision(False, denied)
            failed: list[tuple[Rule, Criterion]] = []
            for rule in bucket.allow:
                for check in rule.checks:
                    if not check.matches(subject, request):
                        failed.append((rule, check))
                        break
                else:
                    return rule.decision  # type: ignore[return-value]  # allow rules have one
            if not failed:
                return self._default
            misses = [rule.miss(check, subject, request) for rule, check in failed]
            return Decision(False, (*misses, self.default_reason))
        except Exception as exc:  # fail closed (invariant 7)
            return Decision(
                False,
                (Reason("policy_error", f"evaluation failed: {exc!r}", None, False),),
            )

    def explain(self, subject: Subject, request: AccessRequest) -> Explanation:
        """The decision plus how every rule fared (slow path, for admins and tools)."""
        decision = self.decide(subject, request)
        bucket = self._buckets.get(subject.partner.id, self._independent)
        considered = {id(r) for r in (*bucket.deny, *bucket.allow)}
        traces: list[RuleTrace] = []
        for rule in self.rules:
            if id(rule) not in considered:
                traces.append(RuleTrace(rule, False, False, rule.partner, ""))
                continue
            failing = rule.first_failing(subject, request)
            observed = failing.observed(subject, request) if failing is not None else ""
            traces.append(RuleTrace(rule, True, failing is None, failing, observed))
        return Explanation(decision, tuple(traces))


def _bucket(rules: Iterable[Rule]) -> _Bucket:
    chosen = list(rules)
    return _Bucket(
        tuple(r for r in chosen if r.effect == "deny"),
        tuple(r for r in chosen if r.effect == "allow"),
    )


def _inactive(partner_id: str, status: str) -> Decision:
    message = f"Access for partner {partner_id!r} is {status}, not active."
    return Decision(False, (Reason("partner_inactive", message, None, True),))


def _mismatch(bound: str, given: str) -> Decision:
    message = f"the identity is bound to partner {bound!r}, not {given!r}"
    return Decision(False, (Reason("identity_partner_mismatch", message, None, False),))


DENY_ALL = Policy(
    "deny-all",
    (),
    Reason("no_policy", "This application has no access policy: everything is denied.", None, True),
)
