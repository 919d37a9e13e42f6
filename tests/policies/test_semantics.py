"""Deny by default, deny wins, combinators, reasons, the partner index, built-in refusals."""

from __future__ import annotations

from datetime import datetime

import pytest

import policies
from tests.policies.helpers import allows, decide, policy, request, subject

ORDERS = """
rules:
  - name: acme-buyers
    effect: allow
    when: {partner: acme, group: buyers, path: {prefix: /invoices}}
    reason: Acme buyers may read invoices.
    public: true
  - name: globex-all
    effect: allow
    when: {partner: globex}
  - name: no-admin
    effect: deny
    when: {path: {prefix: /admin}}
    reason: The admin area is for staff only.
    public: true
  - name: no-writes-at-night
    effect: deny
    code: closed_for_writes
    when:
      method: [POST, PUT, DELETE]
      not: {time: {timezone: UTC, from: "06:00", until: "22:00"}}
"""


def test_allowed_carries_the_rule() -> None:
    decision = decide(ORDERS, subject(groups=("buyers",)), path="/invoices/7")
    assert decision.allowed
    assert decision.reasons == (
        policies.Reason("allowed", "Acme buyers may read invoices.", "acme-buyers", True),
    )
    assert decision.public_reasons() == ["Acme buyers may read invoices."]


def test_deny_wins_and_every_matching_deny_is_listed() -> None:
    who = subject(partner="globex")
    night = datetime.fromisoformat("2025-03-03T23:00:00+00:00")
    decision = decide(ORDERS, who, path="/admin/x", method="POST", at=night)
    assert not decision.allowed
    assert decision.codes() == ["path_denied", "closed_for_writes"]
    assert decision.public_reasons() == ["The admin area is for staff only."]
    assert allows(ORDERS, who, path="/admin-not", method="POST", at=night) is False
    assert allows(ORDERS, who, path="/x", method="GET", at=night)


def test_deny_by_default_explains_the_closest_allow_rules() -> None:
    decision = decide(ORDERS, subject(groups=("viewers",)), path="/invoices/7")
    assert not decision.allowed
    assert decision.codes() == ["group_missing", "no_rule_allowed"]
    assert decision.reasons[0].rule == "acme-buyers"
    assert decision.reasons[-1].public


def test_generated_messages_name_the_rule_and_criterion() -> None:
    text = "rules:\n  - {name: r1, effect: allow, when: {partner: acme, method: GET}}\n"
    decision = decide(text, method="PUT")
    assert decision.reasons[0].message == "rule 'r1' requires method is GET"
    assert decision.reasons[0].public is False


def test_empty_policy_denies_everything() -> None:
    assert decide("rules: []").codes() == ["no_rule_allowed"]


def test_deny_all() -> None:
    decision = policies.DENY_ALL.decide(subject(), request("/"))
    assert not decision.allowed
    assert decision.codes() == ["no_policy"]


@pytest.mark.parametrize("status", ["invited", "suspended", "offboarded"])
def test_inactive_partner_is_refused_before_any_rule(status: str) -> None:
    decision = decide("rules: [{name: all, effect: allow, when: always}]", subject(status=status))
    assert decision.codes() == ["partner_inactive"]


def test_identity_bound_to_another_partner_is_refused() -> None:
    who = subject(partner="acme")
    forged = policies.Subject(who.identity, subject(partner="globex").partner)
    decision = policies.load_policy("rules: [{name: a, effect: allow, when: always}]", name="x")
    assert decision.decide(forged, request()).codes() == ["identity_partner_mismatch"]


def test_any_and_not() -> None:
    text = """
rules:
  - name: staff-or-mfa
    effect: allow
    when:
      any: [{group: staff}, {amr: mfa, acr: phr}]
      not: {partner_kind: customer}
"""
    assert allows(text, subject(groups=("staff",)))
    assert allows(text, subject(amr=("mfa",), acr="phr"))
    assert not allows(text, subject(amr=("mfa",)))
    assert not allows(text, subject(groups=("staff",), kind="customer"))
    assert decide(text, subject(groups=("staff",), kind="customer")).codes()[0] == "excluded"


def test_request_method_is_upper_cased_and_time_must_be_aware() -> None:
    assert request(method="get").method == "GET"
    with pytest.raises(ValueError, match="timezone-aware"):
        request(at=datetime(2025, 1, 1))


def test_partner_index_only_looks_at_the_partners_rules() -> None:
    rules = [
        f"  - {{name: p{i}, effect: allow, when: {{partner: p{i}, group: g{i}}}}}"
        for i in range(50)
    ]
    text = (
        "rules:\n" + "\n".join(rules) + "\n  - {name: shared, effect: allow, when: {group: all}}\n"
    )
    compiled = policy(text)
    decision = compiled.decide(subject(partner="p7"), request())
    assert [r.rule for r in decision.reasons] == ["p7", "shared", None]
    explanation = compiled.explain(subject(partner="p7"), request())
    applied = [t.rule.name for t in explanation.traces if t.applies]
    assert applied == ["p7", "shared"]
    assert allows(text, subject(partner="p7", groups=("g7",)))
    assert not allows(text, subject(partner="p7", groups=("g8",)))


def test_explain_reports_what_the_request_had() -> None:
    text = "rules:\n  - {name: r, effect: allow, when: {method: GET, group: buyers}}\n"
    explanation = policy(text).explain(subject(groups=("x",)), request(method="GET"))
    (trace,) = explanation.traces
    assert trace.applies and not trace.matched
    assert trace.failing is not None and trace.failing.key == "group"
    assert trace.observed == "groups are x"
