"""Who is calling the admin API or console (security invariant 9).

Two ways in, both ending as an :class:`~federation.admin.service.Actor`:

* an API token (``Authorization: Bearer isth_<id>_<secret>``): its role and partner;
* a hub session (the hub's own login): an identity of an ``internal`` partner with the
  admin role (or group) named in ``admin.admin_role`` is an admin, with
  ``admin.auditor_role`` an auditor; an identity of any partner with
  ``admin.partner_admin_role`` administers that partner only. Any other person of an
  ``internal`` partner whose address the IdP verified is a sponsor: the console shows them
  the sign-up requests naming them and the partners they sponsor (the partners whose
  ``sponsors`` list their address): a read-only partner page, the partners' grants (made
  and revoked by them too) and access reviews. Sponsors act in a hub session only — no
  API token is ever a sponsor — and the admin API answers them on ``/me`` and ``/grants``
  only. Anyone else is nobody here.

A session counts only while its partner may sign in: suspending a partner also shuts its
partner admins out.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING

from federation.admin import tokens
from federation.admin.service import Actor
from federation.admin.tokens import Role
from federation.errors import IsthmusError
from federation.identity import FederatedIdentity
from federation.settings import PartnerKind

if TYPE_CHECKING:
    from federation.hub import Hub


class AdminAuthRequired(IsthmusError):
    error = "unauthorized"
    status = 401
    public_message = "Sign in as an administrator, or send an API token."


class NotAnAdmin(IsthmusError):
    error = "forbidden"
    status = 403
    public_message = "Your account has no administrator role here."


def actor_for_token(hub: Hub, bearer: str) -> Actor | None:
    parsed = tokens.parse(bearer)
    if parsed is None:
        return None
    token_id, secret = parsed
    spec = hub.catalog.tokens.get(token_id)
    if spec is None or not tokens.secret_matches(spec, secret):
        return None
    if spec.expires_at is not None and spec.expires_at <= datetime.now(UTC):
        return None
    return Actor(f"token:{spec.name}", spec.role, spec.partner_id)


def actor_for_identity(hub: Hub, identity: FederatedIdentity) -> Actor | None:
    partner = hub.registry.partner(identity.partner_id)
    if partner is None or not partner.may_sign_in(datetime.fromtimestamp(hub.clock(), UTC)):
        return None
    held = set(identity.roles) | set(identity.groups)
    admin = hub.settings.admin
    who = f"{identity.email or identity.subject} ({partner.id})"
    email = identity.email.lower() if identity.email and identity.email_verified else None
    internal = partner.settings.kind is PartnerKind.internal
    if internal:
        if admin.admin_role in held:
            return Actor(who, Role.admin, email=email)
        if admin.auditor_role in held:
            return Actor(who, Role.auditor, email=email)
    if admin.partner_admin_role in held:
        return Actor(who, Role.partner_admin, partner.id, email=email)
    if internal and email is not None:
        return sponsor(hub, who, email)
    return None


def sponsor(hub: Hub, name: str, email: str) -> Actor:
    """An internal person as a sponsor: the partners naming ``email`` among their sponsors
    are the ones they read (partner page, grants) and grant for."""
    actor = Actor(name, Role.sponsor, email=email)
    sponsored = frozenset(p.id for p in hub.registry.partners() if actor.sponsors(p.settings))
    return Actor(name, Role.sponsor, email=email, sponsored=sponsored)


async def authenticate(hub: Hub, authorization: str | None, session_id: str | None) -> Actor:
    """The caller's actor: 401 when nobody is signed in, 403 when they hold no admin role."""
    if not hub.settings.admin.enabled:
        raise NotAnAdmin("the admin API is disabled (admin.enabled: false)")
    if authorization:
        scheme, _, credentials = authorization.partition(" ")
        actor = actor_for_token(hub, credentials.strip()) if scheme.lower() == "bearer" else None
        if actor is None:
            raise AdminAuthRequired("unknown, expired or malformed API token")
        return actor
    session = await hub.sessions.get(session_id) if session_id else None
    if session is None:
        raise AdminAuthRequired("no session and no API token")
    actor = actor_for_identity(hub, session.identity)
    if actor is None:
        raise NotAnAdmin(
            f"{session.identity.email or session.identity.subject} holds no admin role"
        )
    return actor
