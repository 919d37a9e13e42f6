"""Session → subject → policy decision → audit event, framework-free.

:meth:`Decider.decide` is what both the reverse proxy and forward-auth call: it takes the
app, the session cookie value and the request as plain values and returns a
:class:`Verdict` that the web layer turns into 2xx (forward, or identity headers), a login
redirect / 401, or a 403 stating the public reasons. Every call emits one audit event.
Fail closed (invariant 7): no partner, a partner that is not active, or a policy that
cannot be loaded is a refusal; a store error propagates (the error mapper gives a 503).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

import policies
from federation.admin.reviews import lapse_reason
from federation.hub import Hub
from federation.proxy.headers import hub_subject
from federation.proxy.policyset import PolicySet, load_app_policy
from federation.registry import Partner
from federation.sessions import Session
from federation.settings import AppSettings, PartnerStatus

__all__ = ["Decider", "Outcome", "PolicySet", "Verdict", "load_app_policy"]


class Outcome(StrEnum):
    allow = "allow"
    login = "login"  # no valid session: send the user to sign in
    deny = "deny"

    @property
    def status(self) -> int:
        return {"allow": 200, "login": 401, "deny": 403}[self.value]


@dataclass(frozen=True, slots=True)
class Verdict:
    outcome: Outcome
    app: AppSettings
    # The normalized path the decision was taken on.
    path: str
    # Reasons the policy allows to show (a 403 page states them).
    reasons: tuple[str, ...]
    request_id: str
    session: Session | None = None
    partner: Partner | None = None

    @property
    def allowed(self) -> bool:
        return self.outcome is Outcome.allow

    @property
    def status(self) -> int:
        return self.outcome.status


class Decider:
    def __init__(self, hub: Hub, policy_set: PolicySet) -> None:
        self.hub = hub
        self.policies = policy_set

    async def session(self, session_id: str | None) -> Session | None:
        return await self.hub.sessions.get(session_id) if session_id else None

    async def decide(
        self,
        app: AppSettings,
        *,
        session_id: str | None,
        method: str,
        path: str,
        host: str,
        source_ip: str,
        request_id: str,
    ) -> Verdict:
        """Decide on ``path`` (already normalized by :mod:`federation.proxy.routing`)."""
        session = await self.session(session_id)
        if session is None:
            verdict = Verdict(Outcome.login, app, path, ("sign-in required",), request_id)
            self._audit(verdict, method, source_ip, ())
            return verdict
        identity = session.identity
        partner = self.hub.registry.partner(identity.partner_id)
        now = datetime.fromtimestamp(self.hub.clock(), UTC)
        # Suspended, offboarded, or outside its contract window: every session of the
        # partner stops at once, on every replica (the registry is shared).
        if partner is None or not partner.may_sign_in(now):
            reasons = ("your company's access is not active",)
            verdict = Verdict(Outcome.deny, app, path, reasons, request_id, session, partner)
            why = "partner not found" if partner is None else _inactive_reason(partner, now)
            self._audit(verdict, method, source_ip, (why,))
            return verdict
        # A lapse (an access review nobody confirmed) keeps the person out of the app
        # whatever the policy says, until a sponsor restores it (docs/reviews.md).
        lapse = self.hub.catalog.lapses.lapse_for(identity, app.id)
        if lapse is not None:
            reason = lapse_reason(lapse, app.id)
            verdict = Verdict(
                Outcome.deny, app, path, (reason.message,), request_id, session, partner
            )
            self._audit(verdict, method, source_ip, (str(reason),))
            return verdict
        grants = self.hub.catalog.grants.for_identity(identity, now)
        decision = self.policies.policy(app.id).decide(
            policies.Subject(identity, partner.settings, grants),
            policies.AccessRequest(method, path, host, source_ip, now),
        )
        outcome = Outcome.allow if decision.allowed else Outcome.deny
        public = tuple(decision.public_reasons())
        if not decision.allowed:
            public += _ended_grant(app, grants, now)
        verdict = Verdict(outcome, app, path, public, request_id, session, partner)
        self._audit(verdict, method, source_ip, tuple(str(r) for r in decision.reasons))
        return verdict

    def _audit(
        self, verdict: Verdict, method: str, source_ip: str, reasons: tuple[str, ...]
    ) -> None:
        identity = verdict.session.identity if verdict.session else None
        fields: dict[str, Any] = {
            "app": verdict.app.id,
            "method": method,
            "path": verdict.path,
            "decision": verdict.outcome.value,
            "reasons": list(reasons or verdict.reasons),
            "source_ip": source_ip,
            "request_id": verdict.request_id,
        }
        if identity is not None:
            fields.update(
                partner=identity.partner_id,
                connection=identity.connection_id,
                subject=identity.subject,
                hub_subject=hub_subject(identity),
                email=identity.email,
            )
        outcome = "success" if verdict.allowed else "failure"
        self.hub.audit.emit("proxy.decision", outcome=outcome, **fields)


def _ended_grant(
    app: AppSettings, grants: tuple[policies.Grant, ...], now: datetime
) -> tuple[str, ...]:
    """Why a refused user who once held a grant for ``app`` no longer gets in."""
    mine = [g.expires_at for g in grants if g.app_id == app.id]
    if not mine or any(now < end for end in mine):
        return ()
    return (f"your access to {app.id} ended on {max(mine).date().isoformat()}",)


def _inactive_reason(partner: Partner, now: datetime) -> str:
    if partner.settings.status is not PartnerStatus.active:
        return f"partner {partner.id} is {partner.settings.status.value}"
    return f"partner {partner.id} is outside its contract window"
