from __future__ import annotations

from tests.policies.helpers import allow_when, allows, decide, subject

POLICY = allow_when('{email_domain: [acme.example, "*.acme-group.example"]}')


def test_exact_and_wildcard_domains() -> None:
    assert allows(POLICY, subject(email="a@ACME.example"))
    assert allows(POLICY, subject(email="a@fr.acme-group.example"))
    assert not allows(POLICY, subject(email="a@acme-group.example"))
    assert not allows(POLICY, subject(email="a@evilacme.example"))


def test_unverified_or_missing_email_never_matches() -> None:
    decision = decide(POLICY, subject(email="a@acme.example", email_verified=False))
    assert decision.codes()[0] == "email_domain_not_allowed"
    assert not allows(POLICY, subject(email=None))
