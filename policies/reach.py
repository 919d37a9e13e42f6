"""Who can reach what: a compiled policy read per partner, without a request.

For each partner, every rule of an app's policy is judged against what is known of the
partner alone (its id, kind, connections, verified domains, contract window at ``now``)
and not of its users or their requests::

    reaches = reach(policy, partners, now)
    reaches[0].verdict   # "allowed" | "conditional" | "denied"
    reaches[0].reason    # a sentence for admins
    reaches[0].rules     # how each rule fares for this partner, in document order

A criterion is thus *always* true for the partner (``partner: acme`` for acme, a
``partner_kind`` it has, ``path: {prefix: /}``), *never* true (another partner, another
kind, connections it does not have), or *depends* on the user or request (groups, roles,
claims, methods, paths, time, source address, MFA, grants, whether the email is
verified). Combinators combine the three values (Kleene logic).

The verdict follows the evaluator's semantics (deny by default, deny wins, a partner
that is not active is refused before any rule):

- ``denied``: the partner is not active or outside its contract window, a deny rule
  matches every request of it, or no allow rule can match;
- ``allowed``: an allow rule matches every request of every user of the partner, and no
  deny rule can match;
- ``conditional``: anything else — access depends on who asks, or what for.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import Enum
from typing import Literal

from federation.settings import PartnerSettings, PartnerStatus
from policies.combinators import All, Always, Any, Not
from policies.criteria.base import Criterion
from policies.criteria.connection import Connection
from policies.criteria.contract import Contract
from policies.criteria.email_domain import EmailDomain
from policies.criteria.partner import Partner
from policies.criteria.partner_kind import PartnerKind
from policies.criteria.path import Path
from policies.evaluator import Policy
from policies.rules import Rule

Verdict = Literal["allowed", "conditional", "denied"]


class Match(Enum):
    """How a criterion or a rule fares for one partner."""

    always = "always"
    depends = "depends"
    never = "never"


@dataclass(frozen=True, slots=True)
class RuleReach:
    """One rule as seen by one partner.

    ``conditions``: for ``depends``, what the user or request must still have
    (the criteria the partner settles left out); for ``always``, ``"every request"``;
    for ``never``, the requirement the partner cannot meet.
    """

    name: str
    effect: str  # "allow" | "deny"
    match: Match
    conditions: str

    @property
    def summary(self) -> str:
        """The cell text: what the rule does to this partner's requests."""
        verb = "allows" if self.effect == "allow" else "denies"
        if self.match is Match.always:
            return f"{verb} every request"
        if self.match is Match.depends:
            return f"{verb} when {self.conditions}"
        return f"does not apply: it requires {self.conditions}"


@dataclass(frozen=True, slots=True)
class Reach:
    partner_id: str
    status: str
    verdict: Verdict
    reason: str
    rules: tuple[RuleReach, ...]


def reach(policy: Policy, partners: Iterable[PartnerSettings], now: datetime) -> list[Reach]:
    """One :class:`Reach` per partner, in the order given."""
    return [partner_reach(policy, partner, now) for partner in partners]


def partner_reach(policy: Policy, partner: PartnerSettings, now: datetime) -> Reach:
    rules = tuple(rule_reach(rule, partner, now) for rule in policy.rules)
    verdict, reason = _verdict(policy, partner, now, rules)
    return Reach(partner.id, partner.status.value, verdict, reason, rules)


def rule_reach(rule: Rule, partner: PartnerSettings, now: datetime) -> RuleReach:
    checks = rule.all_checks
    judged = [(c, *assess(c, partner, now)) for c in checks]
    never = [text for _, match, text in judged if match is Match.never]
    if never:
        return RuleReach(rule.name, rule.effect, Match.never, never[0])
    left = [text for _, match, text in judged if match is Match.depends]
    if not left:
        return RuleReach(rule.name, rule.effect, Match.always, "every request")
    return RuleReach(rule.name, rule.effect, Match.depends, " and ".join(left))


def assess(criterion: Criterion, partner: PartnerSettings, now: datetime) -> tuple[Match, str]:
    """(how ``criterion`` fares for ``partner``, the text that goes with it): for
    ``depends`` the condition left to the user or request, for ``never`` the requirement
    the partner does not meet, for ``always`` the criterion's own description."""
    described = criterion.describe()
    if isinstance(criterion, All):
        return _all(criterion.children, partner, now, described)
    if isinstance(criterion, Any):
        return _any(criterion.children, partner, now, described)
    if isinstance(criterion, Not):
        inner, _ = assess(criterion.child, partner, now)
        flipped = {Match.always: Match.never, Match.never: Match.always}
        return flipped.get(inner, Match.depends), described
    return _leaf(criterion, partner, now), described


def _all(
    children: Sequence[Criterion], partner: PartnerSettings, now: datetime, described: str
) -> tuple[Match, str]:
    judged = [assess(c, partner, now) for c in children]
    for match, text in judged:
        if match is Match.never:
            return Match.never, text
    left = [text for match, text in judged if match is Match.depends]
    if not left:
        return Match.always, described
    return Match.depends, " and ".join(left)


def _any(
    children: Sequence[Criterion], partner: PartnerSettings, now: datetime, described: str
) -> tuple[Match, str]:
    judged = [assess(c, partner, now) for c in children]
    if any(match is Match.always for match, _ in judged):
        return Match.always, described
    left = [text for match, text in judged if match is Match.depends]
    if not left:
        return Match.never, described
    return Match.depends, left[0] if len(left) == 1 else "either " + " or ".join(left)


def _leaf(criterion: Criterion, partner: PartnerSettings, now: datetime) -> Match:
    if isinstance(criterion, Always):
        return Match.always
    if isinstance(criterion, Partner):
        return _known(partner.id in criterion.partners)
    if isinstance(criterion, PartnerKind):
        return _known(partner.kind.value in criterion.kinds)
    if isinstance(criterion, Contract):
        return _known(partner.contract.contains(now))
    if isinstance(criterion, Connection):
        mine = {c.id for c in partner.connections}
        if mine and mine <= criterion.connections:
            return Match.always
        return Match.depends if mine & criterion.connections else Match.never
    if isinstance(criterion, EmailDomain):
        # The hub accepts an email only in one of the partner's verified domains: a
        # domain outside them never matches; inside, the email must still be verified.
        inside = [d for d in partner.domains if _in_domains(d, criterion)]
        return Match.depends if inside else Match.never
    if isinstance(criterion, Path) and criterion.all_paths:
        return Match.always
    return Match.depends  # about the user or the request: groups, roles, methods, time...


def _known(value: bool) -> Match:
    return Match.always if value else Match.never


def _in_domains(domain: str, criterion: EmailDomain) -> bool:
    return domain in criterion.domains or any(
        domain.endswith(suffix) for suffix in criterion.suffixes
    )


def _verdict(
    policy: Policy, partner: PartnerSettings, now: datetime, rules: Sequence[RuleReach]
) -> tuple[Verdict, str]:
    if partner.status is not PartnerStatus.active:
        return "denied", (
            f"The partner is {partner.status.value}, not active: every request is refused "
            "before any rule."
        )
    if not partner.contract.contains(now):
        return "denied", "The partner is outside its contract window: nobody can sign in."
    if not policy.rules:
        return "denied", policy.default_reason.message
    deny_always = [r for r in rules if r.effect == "deny" and r.match is Match.always]
    if deny_always:
        return "denied", f"Deny rule {deny_always[0].name!r} matches every request."
    deny_depends = [r for r in rules if r.effect == "deny" and r.match is Match.depends]
    allow_always = [r for r in rules if r.effect == "allow" and r.match is Match.always]
    allow_depends = [r for r in rules if r.effect == "allow" and r.match is Match.depends]
    if allow_always and not deny_depends:
        return "allowed", f"Allow rule {allow_always[0].name!r} admits every user and request."
    if allow_always:
        denies = "; ".join(f"{r.name!r} {r.summary}" for r in deny_depends)
        return "conditional", (
            f"Allow rule {allow_always[0].name!r} admits every user, except where deny "
            f"rules match: {denies}."
        )
    if allow_depends:
        allows = "; ".join(f"{r.name!r} {r.summary}" for r in allow_depends)
        denies = "; ".join(f"{r.name!r} {r.summary}" for r in deny_depends)
        also = f" Deny rules win: {denies}." if denies else ""
        return "conditional", f"Access depends on the user or request: {allows}.{also}"
    return "denied", "No allow rule can match this partner's users."
