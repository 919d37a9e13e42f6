from __future__ import annotations

import pytest

import policies
from tests.policies.helpers import allow_when, allows, decide, policy

POLICY = allow_when('{source_ip: [203.0.113.0/24, "2001:db8::/32", 198.51.100.7]}')


def test_networks_and_addresses() -> None:
    assert allows(POLICY, ip="203.0.113.250")
    assert allows(POLICY, ip="2001:db8::1")
    assert allows(POLICY, ip="198.51.100.7")
    assert allows(POLICY, ip="::ffff:203.0.113.9")  # IPv4-mapped
    assert not allows(POLICY, ip="198.51.100.8")


def test_unknown_or_garbage_address_never_matches() -> None:
    assert decide(POLICY, ip=None).codes()[0] == "source_ip_not_allowed"
    assert not allows(POLICY, ip="not-an-ip")


def test_bad_network_is_refused() -> None:
    with pytest.raises(policies.PolicyError, match="not an IP network"):
        policy(allow_when("{source_ip: 203.0.113.1/24}"))  # host bits set
