"""Just-in-time accounts: every person the hub has seen sign in, and when (docs/lifecycle.md).

A person is ``(partner_id, connection_id, subject)`` (invariant 1: never an email). Each
sign-in writes, in the shared store and in the same round trip as the session
(:func:`sign_in_writes`, folded into :meth:`~federation.sessions.SessionManager.create`):

=================================== =========================================================
``account:<id>``                    the record: partner, connection, subject, email, name,
                                    last sign-in (replaced at every sign-in)
``account-sign-ins:<id>``           a set of sign-in times; its smallest is the first sign-in
                                    (:func:`tidy` keeps only that one)
``partner-accounts:<partner>``      a set of the partner's account ids (the index)
``account-email:<partner>:<digest>`` a set of the account ids that signed in with that verified
                                    email (grants may name a person by email)
=================================== =========================================================

``<id>`` is a digest of the person. Everything lives :func:`account_ttl` (at least 400
days, and twice the partner's ``inactive_after_days``) past the last sign-in: an account
nobody used for that long is forgotten, and every write at a sign-in is blind (no read
first), so that recording costs the login no extra round trip.

:func:`end_inactive_grants` is the lifecycle job that ends the grants of people who have
not signed in for ``inactive_after_days``.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from federation.admin.catalog import GrantSpec
from federation.admin.documents import Document, VersionConflict
from federation.identity import FederatedIdentity
from federation.settings import LifecycleSettings, PartnerSettings
from federation.stores.base import Put, SetAdd, Store

if TYPE_CHECKING:
    from federation.admin.service import AdminService

DAY = 86_400.0
MIN_TTL_DAYS = 400
_log = logging.getLogger("isthmus.lifecycle")


@dataclass(frozen=True, slots=True)
class Account:
    """One person the hub has seen sign in (times in seconds since the epoch)."""

    partner_id: str
    connection_id: str
    subject: str
    email: str | None
    name: str | None
    first_seen: float
    last_sign_in: float

    @property
    def id(self) -> str:
        return account_id(self.partner_id, self.connection_id, self.subject)


@dataclass(frozen=True, slots=True)
class Writes:
    """Store writes to make in one ``write_many`` (with the session's own)."""

    puts: tuple[Put, ...] = ()
    adds: tuple[SetAdd, ...] = ()


def inactive_after_days(partner: PartnerSettings, lifecycle: LifecycleSettings) -> int | None:
    """The partner's threshold, else the hub's (None: its people never lose grants so)."""
    if partner.inactive_after_days is not None:
        return partner.inactive_after_days
    return lifecycle.inactive_after_days


def account_ttl(partner: PartnerSettings, lifecycle: LifecycleSettings) -> float:
    """How long an account outlives its last sign-in: long past any threshold."""
    days = inactive_after_days(partner, lifecycle) or 0
    return max(MIN_TTL_DAYS, 2 * days) * DAY


def account_id(partner_id: str, connection_id: str, subject: str) -> str:
    person = "\0".join((partner_id, connection_id, subject))
    return hashlib.sha256(person.encode()).hexdigest()[:32]


def sign_in_writes(identity: FederatedIdentity, now: float, ttl: float) -> Writes:
    """What one sign-in of ``identity`` at ``now`` writes (blind: nothing is read first).

    The email pointer is written only for an email the IdP verified: a grant by email
    names only such an identity (:meth:`GrantIndex.specs_for`).
    """
    ident = account_id(identity.partner_id, identity.connection_id, identity.subject)
    record = {
        "partner_id": identity.partner_id,
        "connection_id": identity.connection_id,
        "subject": identity.subject,
        "email": identity.email,
        "name": identity.name,
        "last_sign_in": now,
    }
    adds = [
        (_sign_ins_key(ident), _moment(now), ttl),
        (_partner_key(identity.partner_id), ident, ttl),
    ]
    if identity.email and identity.email_verified:
        adds.append((_email_key(identity.partner_id, identity.email), ident, ttl))
    return Writes(((_account_key(ident), record, ttl),), tuple(adds))


async def record_sign_in(store: Store, identity: FederatedIdentity, now: float, ttl: float) -> None:
    """Record one sign-in on its own (the login folds :func:`sign_in_writes` into the
    session's write instead)."""
    writes = sign_in_writes(identity, now, ttl)
    await store.write_many(puts=writes.puts, adds=writes.adds)


async def account(
    store: Store, partner_id: str, connection_id: str, subject: str
) -> Account | None:
    """The account of one person, or None if they never signed in (or were forgotten)."""
    return await _account(store, account_id(partner_id, connection_id, subject))


async def last_sign_in(
    store: Store, partner_id: str, connection_id: str, subject: str
) -> float | None:
    found = await account(store, partner_id, connection_id, subject)
    return found.last_sign_in if found is not None else None


async def accounts_by_email(store: Store, partner_id: str, email: str) -> list[Account]:
    """The partner's accounts whose latest sign-in carried ``email`` (verified)."""
    wanted = email.lower()
    found = []
    for ident in sorted(await store.set_members(_email_key(partner_id, email))):
        each = await _account(store, ident)
        # A pointer outlives a change of address: the record says what is true now.
        if each is not None and (each.email or "").lower() == wanted:
            found.append(each)
    return found


async def last_sign_in_by_email(store: Store, partner_id: str, email: str) -> float | None:
    """The latest sign-in of anyone of the partner with that verified email."""
    times = [a.last_sign_in for a in await accounts_by_email(store, partner_id, email)]
    return max(times, default=None)


async def accounts_of(store: Store, partner_id: str) -> list[Account]:
    """Every account of a partner, the most recent sign-in first."""
    found = []
    for ident in await store.set_members(_partner_key(partner_id)):
        each = await _account(store, ident)
        if each is not None:
            found.append(each)
    return sorted(found, key=lambda a: (-a.last_sign_in, a.connection_id, a.subject))


async def tidy(store: Store, partner_id: str) -> int:
    """Drop forgotten accounts from the partner's index and keep only the first sign-in
    in each account's set of sign-in times. Returns how many accounts are left."""
    index = _partner_key(partner_id)
    left = 0
    for ident in await store.set_members(index):
        if await store.get(_account_key(ident)) is None:
            await store.set_remove(index, ident)
            await store.delete(_sign_ins_key(ident))
            continue
        left += 1
        key = _sign_ins_key(ident)
        moments = await store.set_members(key)
        if len(moments) > 1:
            first = min(moments, key=float)
            for later in moments - {first}:
                await store.set_remove(key, later)
    return left


async def _account(store: Store, ident: str) -> Account | None:
    record = await store.get(_account_key(ident))
    if record is None:
        return None
    last = float(record["last_sign_in"])
    moments = await store.set_members(_sign_ins_key(ident))
    first = min((float(m) for m in moments), default=last)
    return Account(
        record["partner_id"],
        record["connection_id"],
        record["subject"],
        record.get("email"),
        record.get("name"),
        min(first, last),
        last,
    )


# ---------------------------------------------------------------------- the lifecycle job


async def end_inactive_grants(service: AdminService, now: datetime) -> list[str]:
    """End the grants of people who have not signed in for ``inactive_after_days``.

    A grant naming a person (connection + subject, or a verified email) ends when the
    later of the person's last sign-in and the grant's last change (its creation, for a
    grant nobody edited; its ``valid_from`` if that is later) is older than the partner's
    ``inactive_after_days`` (else ``lifecycle.inactive_after_days``; None: never). Ending
    sets its ``valid_until`` to now, through the admin service as the ``lifecycle`` actor:
    the decision then tells the person their access ended, and signing in again does not
    bring it back. Whole-partner grants are nobody's account: they are left alone.
    """
    from federation.admin.lifecycle import LIFECYCLE  # lifecycle imports this module

    hub = service.hub
    lifecycle = hub.base_settings.lifecycle
    done: list[str] = []
    # Once a day, by whichever replica comes first: forgotten accounts leave the indexes.
    if await hub.store.add_once(f"accounts:tidy:{int(now.timestamp() // DAY)}", 2 * DAY):
        for each in hub.registry.partners():
            await tidy(hub.store, each.id)
    for doc in await service.documents(LIFECYCLE, "grant"):
        grant = GrantSpec.model_validate(doc.spec)
        partner = hub.registry.partner(grant.partner_id)
        if grant.whole_partner or partner is None or grant.valid_until <= now:
            continue
        days = inactive_after_days(partner.settings, lifecycle)
        if days is None:
            continue
        seen = await _last_seen(hub.store, grant)
        start = grant.valid_from.timestamp() if grant.valid_from else 0.0
        since = max(seen or 0.0, doc.updated_at, start)
        if datetime.fromtimestamp(since, UTC) + timedelta(days=days) > now:
            continue
        line = await _end(service, doc, grant, now, days, seen)
        if line:
            done.append(line)
    return done


async def _last_seen(store: Store, grant: GrantSpec) -> float | None:
    if grant.email is not None:
        return await last_sign_in_by_email(store, grant.partner_id, grant.email)
    assert grant.connection_id is not None and grant.subject is not None
    return await last_sign_in(store, grant.partner_id, grant.connection_id, grant.subject)


async def _end(
    service: AdminService,
    doc: Document,
    grant: GrantSpec,
    now: datetime,
    days: int,
    seen: float | None,
) -> str | None:
    from federation.admin.lifecycle import LIFECYCLE

    reason = f"inactive for {days} days"
    spec = {**doc.spec, "valid_until": now.isoformat()}
    try:
        await service.put(LIFECYCLE, "grant", doc.id, spec, doc.version, reason=reason)
    except VersionConflict:
        # Someone changed the grant since it was read: the next tick looks again.
        _log.info("grant %s changed while ending it; left for the next tick", doc.id)
        return None
    person = _person(grant)
    last = datetime.fromtimestamp(seen, UTC).isoformat() if seen is not None else None
    service.hub.audit.emit(
        "grant.lapsed",
        actor=LIFECYCLE.name,
        reason="inactive",
        detail=reason,
        id=doc.id,
        partner=grant.partner_id,
        person=person,
        connection=grant.connection_id,
        subject=grant.subject,
        email=grant.email,
        apps=list(grant.apps),
        inactive_after_days=days,
        last_sign_in=last,
    )
    never = "never signed in" if seen is None else f"last signed in {last}"
    apps = ", ".join(grant.apps)
    return f"grant {doc.id} of {person} ({grant.partner_id}) to {apps} ended: {never}, {reason}"


def _person(grant: GrantSpec) -> str:
    if grant.email is not None:
        return grant.email
    return f"{grant.connection_id}/{grant.subject}"


def _moment(now: float) -> str:
    return repr(round(now, 3))


def _account_key(ident: str) -> str:
    return f"account:{ident}"


def _sign_ins_key(ident: str) -> str:
    return f"account-sign-ins:{ident}"


def _partner_key(partner_id: str) -> str:
    return f"partner-accounts:{partner_id}"


def _email_key(partner_id: str, email: str) -> str:
    digest = hashlib.sha256(email.lower().encode()).hexdigest()[:32]
    return f"account-email:{partner_id}:{digest}"
