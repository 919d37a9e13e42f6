from __future__ import annotations

from tests.policies.helpers import allow_when, allows, decide, subject

POLICY = allow_when("{connection: acme-saml}")


def test_connection_matches() -> None:
    assert allows(POLICY, subject(connection_id="acme-saml"))


def test_other_connection_refused() -> None:
    decision = decide(POLICY, subject(connection_id="acme-oidc"))
    assert decision.codes()[0] == "connection_not_allowed"
