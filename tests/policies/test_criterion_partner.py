from __future__ import annotations

from tests.policies.helpers import allow_when, allows, decide, subject

POLICY = allow_when("{partner: [acme, globex]}")


def test_listed_partners_match() -> None:
    assert allows(POLICY, subject(partner="acme"))
    assert allows(POLICY, subject(partner="globex"))


def test_other_partner_is_refused_with_reason() -> None:
    decision = decide(POLICY, subject(partner="initech"))
    assert not decision.allowed
    # initech is in no rule's index: only the default reason remains.
    assert decision.codes() == ["no_rule_allowed"]


def test_single_string_form() -> None:
    assert allows(allow_when("{partner: acme}"), subject(partner="acme"))
    assert not allows(allow_when("{partner: acme}"), subject(partner="globex"))


def test_partner_under_any_is_evaluated_not_indexed() -> None:
    text = allow_when("{any: [{partner: acme}, {group: staff}]}")
    assert allows(text, subject(partner="acme"))
    assert allows(text, subject(partner="globex", groups=("staff",)))
    assert decide(text, subject(partner="globex")).codes()[0] == "no_alternative_matched"
