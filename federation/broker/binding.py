"""Bind an upstream identity to its partner before any session exists.

Security invariant 1: identities are keyed on (issuer, subject); an email is accepted only
when its domain is a verified domain of the very partner whose connection asserted it —
an IdP can never speak for another partner's domain — and it is kept only when the IdP
says it is verified. The partner must be active and inside its contract window.

:func:`explain` runs the same rules for a test login (an admin trying a connection, maybe
before its partner is active) and says, in words, what they did to the identity.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from federation.errors import PartnerMismatch, PartnerNotActive
from federation.identity import FederatedIdentity
from federation.registry import Partner, Registry


def bind(
    identity: FederatedIdentity, partner: Partner, registry: Registry, now: datetime
) -> FederatedIdentity:
    _same_partner(identity, partner)
    if not partner.may_sign_in(now):
        raise PartnerNotActive(
            f"partner {partner.id} is {partner.settings.status.value}"
            f" (contract {partner.settings.contract.model_dump(mode='json')})"
        )
    return bind_email(identity, partner, registry)


def bind_email(
    identity: FederatedIdentity, partner: Partner, registry: Registry
) -> FederatedIdentity:
    """The identity with its email kept only when verified and in the partner's verified
    domains; PartnerMismatch when it asserts another partner's (or nobody's) domain."""
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


def _same_partner(identity: FederatedIdentity, partner: Partner) -> None:
    if identity.partner_id != partner.id:
        raise PartnerMismatch(
            f"connection {identity.connection_id} produced an identity for partner "
            f"{identity.partner_id!r}, expected {partner.id!r}"
        )


@dataclass(frozen=True, slots=True)
class BindingReport:
    """Invariant 1 applied to one identity: did it pass, why, and what a session would hold
    (None when refused)."""

    passed: bool
    reason: str
    bound: FederatedIdentity | None


def explain(identity: FederatedIdentity, partner: Partner, registry: Registry) -> BindingReport:
    """The binding rules of :func:`bind` except the partner's status, in words."""
    try:
        _same_partner(identity, partner)
        bound = bind_email(identity, partner, registry)
    except PartnerMismatch as exc:
        return BindingReport(False, f"refused: {exc.detail}", None)
    domain = identity.email_domain
    if identity.email is None:
        reason = "the IdP sent no email: the identity is keyed on issuer and subject only"
    elif domain is None:
        reason = f"the email {identity.email!r} has no domain: it is dropped"
    elif bound.email is None:
        reason = (
            f"{domain} is a verified domain of {partner.id}, but the IdP does not assert the "
            "email verified: it is dropped, the identity is keyed on issuer and subject only"
        )
    else:
        reason = f"{domain} is a verified domain of {partner.id} and the IdP asserts it verified"
    return BindingReport(True, reason, bound)
