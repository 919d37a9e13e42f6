"""Bind an upstream identity to its partner before any session exists.

Security invariant 1: identities are keyed on (issuer, subject); an email is accepted only
when its domain is a verified domain of the very partner whose connection asserted it —
an IdP can never speak for another partner's domain — and it is kept only when the IdP
says it is verified. The partner must be active and inside its contract window.
"""

from __future__ import annotations

from datetime import datetime

from federation.errors import PartnerMismatch, PartnerNotActive
from federation.identity import FederatedIdentity
from federation.registry import Partner, Registry


def bind(
    identity: FederatedIdentity, partner: Partner, registry: Registry, now: datetime
) -> FederatedIdentity:
    if identity.partner_id != partner.id:
        raise PartnerMismatch(
            f"connection {identity.connection_id} produced an identity for partner "
            f"{identity.partner_id!r}, expected {partner.id!r}"
        )
    if not partner.may_sign_in(now):
        raise PartnerNotActive(
            f"partner {partner.id} is {partner.settings.status.value}"
            f" (contract {partner.settings.contract.model_dump(mode='json')})"
        )
    domain = identity.email_domain
    if identity.email is None:
        return identity
    if domain is None:
        return identity.without_email()
    if not partner.owns_domain(domain):
        owner = registry.partner_for_domain(domain)
        raise PartnerMismatch(
            f"connection {identity.connection_id} of partner {partner.id} asserted "
            f"{identity.email!r}; domain {domain!r} belongs to "
            f"{owner.id if owner else 'no partner'}"
        )
    return identity if identity.email_verified else identity.without_email()
