"""Who can reach what: small YAML policies read per partner, without a request."""

from __future__ import annotations

from typing import Any

import policies
from federation.settings import PartnerSettings
from policies.reach import Match, Reach, partner_reach, reach
from tests.policies.helpers import MONDAY_10_UTC, policy

ORDERS = """
rules:
  - name: acme-no-admin
    effect: deny
    when: {partner: acme, path: {prefix: /orders/admin}}
  - name: initech-staff
    effect: allow
    when: {partner: initech}
  - name: acme-supplier
    effect: allow
    when: {partner: acme, method: [GET, POST]}
  - name: customers-read
    effect: allow
    when: {partner_kind: customer, method: GET}
"""


def partner(pid: str = "acme", kind: str = "supplier", **extra: Any) -> PartnerSettings:
    fields: dict[str, Any] = {
        "id": pid,
        "name": pid.title(),
        "kind": kind,
        "status": "active",
        "domains": [f"{pid}.example"],
    }
    fields.update(extra)
    return PartnerSettings(**fields)


def of(text: str, who: PartnerSettings) -> Reach:
    return partner_reach(policy(text), who, MONDAY_10_UTC)


def test_an_unconditional_allow_rule_allows_every_user() -> None:
    found = of(ORDERS, partner("initech", "internal"))
    assert found.verdict == "allowed"
    assert "initech-staff" in found.reason
    by_name = {r.name: r for r in found.rules}
    assert by_name["initech-staff"].match is Match.always
    assert by_name["initech-staff"].summary == "allows every request"
    assert by_name["acme-supplier"].match is Match.never
    assert by_name["acme-supplier"].summary == "does not apply: it requires partner is acme"


def test_conditions_left_to_the_request_make_it_conditional() -> None:
    found = of(ORDERS, partner("acme"))
    assert found.verdict == "conditional"
    by_name = {r.name: r for r in found.rules}
    # The partner criterion is settled; what is left is about the request.
    assert by_name["acme-supplier"].match is Match.depends
    assert by_name["acme-supplier"].summary == "allows when method is one of GET, POST"
    assert by_name["acme-no-admin"].summary == "denies when path under /orders/admin"
    assert by_name["customers-read"].match is Match.never
    assert found.reason == (
        "Access depends on the user or request: 'acme-supplier' allows when method is one "
        "of GET, POST. Deny rules win: 'acme-no-admin' denies when path under /orders/admin."
    )
    assert [r.name for r in found.rules] == [
        "acme-no-admin",
        "initech-staff",
        "acme-supplier",
        "customers-read",
    ]


def test_partner_kind_is_settled_by_the_partner() -> None:
    assert of(ORDERS, partner("globex", "customer")).verdict == "conditional"
    found = of(ORDERS, partner("soylent", "distributor"))
    assert found.verdict == "denied"
    assert found.reason == "No allow rule can match this partner's users."


def test_allow_all_with_a_conditional_deny_is_conditional() -> None:
    text = """
rules:
  - {name: everyone, effect: allow, when: always}
  - {name: no-writes, effect: deny, when: {method: [PUT, DELETE]}}
"""
    found = of(text, partner())
    assert found.verdict == "conditional"
    assert "everyone" in found.reason and "no-writes" in found.reason


def test_a_deny_rule_matching_every_request_denies() -> None:
    text = """
rules:
  - {name: everyone, effect: allow, when: always}
  - {name: no-suppliers, effect: deny, when: {partner_kind: supplier}}
"""
    found = of(text, partner(kind="supplier"))
    assert found.verdict == "denied"
    assert "no-suppliers" in found.reason
    assert of(text, partner("globex", "customer")).verdict == "allowed"


def test_a_partner_that_is_not_active_is_denied_and_says_so() -> None:
    found = of(ORDERS, partner("initech", "internal", status="suspended"))
    assert found.verdict == "denied"
    assert found.status == "suspended"
    assert "suspended, not active" in found.reason
    # The rules are still shown as they would apply once it is active again.
    assert {r.name: r.match for r in found.rules}["initech-staff"] is Match.always


def test_outside_the_contract_window_is_denied() -> None:
    ended = partner("initech", "internal", contract={"valid_until": "2020-01-01T00:00:00Z"})
    found = of(ORDERS, ended)
    assert found.verdict == "denied"
    assert "contract window" in found.reason


def test_contract_criterion_is_judged_at_now() -> None:
    text = "rules:\n  - {name: r, effect: allow, when: {contract: valid}}\n"
    assert of(text, partner()).verdict == "allowed"
    later = partner(contract={"valid_from": "2030-01-01T00:00:00Z"})
    assert of(text, later).verdict == "denied"


def test_no_policy_denies_with_its_reason() -> None:
    found = partner_reach(policies.DENY_ALL, partner(), MONDAY_10_UTC)
    assert found.verdict == "denied"
    assert "no access policy" in found.reason
    assert found.rules == ()


def test_connections_settle_when_the_partner_has_only_those() -> None:
    text = "rules:\n  - {name: r, effect: allow, when: {connection: [acme-saml]}}\n"
    saml = {"type": "mock", "id": "acme-saml"}
    oidc = {"type": "mock", "id": "acme-oidc"}
    assert of(text, partner(connections=[saml])).verdict == "allowed"
    both = of(text, partner(connections=[saml, oidc]))
    assert both.verdict == "conditional"
    assert both.rules[0].conditions == "connection is acme-saml"
    assert of(text, partner(connections=[oidc])).verdict == "denied"


def test_email_domain_outside_the_partner_domains_never_matches() -> None:
    text = "rules:\n  - {name: r, effect: allow, when: {email_domain: '*.acme.example'}}\n"
    assert of(text, partner(domains=["eu.acme.example"])).verdict == "conditional"
    assert of(text, partner(domains=["acme.example"])).verdict == "denied"


def test_combinators_use_three_valued_logic() -> None:
    text = """
rules:
  - name: any-of
    effect: allow
    when:
      any:
        - {partner_kind: customer}
        - {group: buyers}
  - name: not-acme
    effect: deny
    when: {not: {partner: acme}}
"""
    acme = of(text, partner("acme", "supplier"))
    assert acme.verdict == "conditional"
    assert acme.rules[0].summary == "allows when member of buyers"
    assert acme.rules[1].match is Match.never
    globex = of(text, partner("globex", "customer"))
    assert globex.verdict == "denied"
    assert globex.rules[1].match is Match.always


def test_path_prefix_root_matches_every_request() -> None:
    text = "rules:\n  - {name: r, effect: allow, when: {partner: acme, path: {prefix: /}}}\n"
    assert of(text, partner()).verdict == "allowed"


def test_reach_keeps_the_partners_order() -> None:
    found = reach(policy(ORDERS), [partner("globex", "customer"), partner()], MONDAY_10_UTC)
    assert [r.partner_id for r in found] == ["globex", "acme"]
