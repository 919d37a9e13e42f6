"""Domain ownership by DNS TXT record, against a real DNS server (dnsmasq).

A claimed domain routes no login and binds no email until its TXT record is found; a
domain verified by one partner cannot be claimed or verified by another.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest

from federation.admin.catalog import InvalidDocuments
from federation.admin.domains import challenge_name, challenge_value
from federation.admin.service import Actor, AdminService, DocumentNotFound, Role
from federation.audit import AuditQuery
from federation.broker.binding import bind
from federation.broker.discovery import discover
from federation.errors import PartnerMismatch
from federation.hub import Hub, build_hub
from federation.identity import FederatedIdentity
from federation.settings import Settings
from tests.peers.dns import DnsServer

pytestmark = pytest.mark.integration

ADMIN = Actor("alice (test)", Role.admin)
NEW = "acme-new.example"


def _partner(partner_id: str, domain: str) -> dict[str, object]:
    return {
        "id": partner_id,
        "name": partner_id.title(),
        "kind": "supplier",
        "status": "active",
        "domains": [domain],
        "connections": [{"type": "mock", "id": f"{partner_id}-idp"}],
    }


@pytest.fixture
async def hub(dns_server: DnsServer) -> AsyncIterator[Hub]:
    settings = Settings(
        allow_mock_connections=True,
        dns=dns_server.settings(),
        partners=[_partner("acme", "acme.example"), _partner("globex", "globex.example")],
    )
    hub = build_hub(settings)
    await hub.ready()
    yield hub
    await hub.aclose()


def _identity(email: str) -> FederatedIdentity:
    return FederatedIdentity(
        partner_id="acme",
        connection_id="acme-idp",
        issuer="mock:acme-idp",
        subject="acme-1",
        email=email,
        email_verified=True,
    )


def _pending(hub: Hub, partner_id: str) -> dict[str, str]:
    partner = hub.registry.partner(partner_id)
    assert partner is not None
    return {p.name: p.token for p in partner.settings.pending_domains}


async def test_a_claimed_domain_routes_nothing_until_its_txt_record_is_found(
    hub: Hub, dns_server: DnsServer
) -> None:
    service = AdminService(hub)
    await service.claim_domain(ADMIN, "acme", NEW)
    token = _pending(hub, "acme")[NEW]
    acme = hub.registry.partner("acme")
    assert acme is not None
    now = datetime.now(UTC)

    realm = discover(hub.registry, f"bob@{NEW}")
    assert realm is not None and realm.unknown
    with pytest.raises(PartnerMismatch):
        bind(_identity(f"bob@{NEW}"), acme, hub.registry, now)

    unknown = await service.verify_domain(ADMIN, "acme", NEW)
    assert not unknown.verified and "NXDOMAIN" in (unknown.problem or "")

    dns_server.set_records({NEW: ["v=spf1 -all"]})
    missing = await service.verify_domain(ADMIN, "acme", NEW)
    assert not missing.verified and "no TXT record" in (missing.problem or "")

    dns_server.set_records({challenge_name(NEW): [challenge_value("x" * 32)]})
    wrong = await service.verify_domain(ADMIN, "acme", NEW)
    assert not wrong.verified and challenge_value(token) in (wrong.problem or "")
    assert NEW in _pending(hub, "acme")

    dns_server.set_records({challenge_name(NEW): ["v=spf1 -all", challenge_value(token)]})
    proven = await service.verify_domain(ADMIN, "acme", NEW)
    assert proven.verified, proven.problem
    assert NEW not in _pending(hub, "acme")
    realm = discover(hub.registry, f"bob@{NEW}")
    assert realm is not None and realm.partner is not None and realm.partner.id == "acme"
    acme = hub.registry.partner("acme")
    assert acme is not None
    assert bind(_identity(f"bob@{NEW}"), acme, hub.registry, now).email == f"bob@{NEW}"
    events = [e["event"] for e in await service.audit(ADMIN, AuditQuery(partner="acme"))]
    assert "admin.domain.verification" in events


async def test_a_domain_verified_by_one_partner_cannot_be_taken_by_another(
    hub: Hub, dns_server: DnsServer
) -> None:
    service = AdminService(hub)
    with pytest.raises(InvalidDocuments) as refused:
        await service.claim_domain(ADMIN, "globex", "acme.example")
    assert [(p.id, p.field) for p in refused.value.problems] == [("globex", "domain")]

    # Both claim a new domain; the first to prove it owns it, the second is refused.
    await service.claim_domain(ADMIN, "acme", NEW)
    await service.claim_domain(ADMIN, "globex", NEW)
    acme_token, globex_token = _pending(hub, "acme")[NEW], _pending(hub, "globex")[NEW]
    dns_server.set_records(
        {challenge_name(NEW): [challenge_value(acme_token), challenge_value(globex_token)]}
    )
    assert (await service.verify_domain(ADMIN, "acme", NEW)).verified
    with pytest.raises(InvalidDocuments) as second:
        await service.verify_domain(ADMIN, "globex", NEW)
    assert any("already claimed by 'acme'" in p.message for p in second.value.problems)
    globex = hub.registry.partner("globex")
    assert globex is not None and NEW not in globex.settings.domains


async def test_a_partner_admin_proves_only_their_own_domains(
    hub: Hub, dns_server: DnsServer
) -> None:
    service = AdminService(hub)
    acme_admin = Actor("pat (acme)", Role.partner_admin, "acme")
    await service.claim_domain(acme_admin, "acme", NEW)
    token = _pending(hub, "acme")[NEW]
    dns_server.set_records({challenge_name(NEW): [challenge_value(token)]})
    assert (await service.verify_domain(acme_admin, "acme", NEW)).verified
    with pytest.raises(DocumentNotFound):
        await service.claim_domain(acme_admin, "globex", "other.example")
