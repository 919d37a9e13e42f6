"""The values a decision is taken on and the decision itself (framework-free).

The proxy and forward-auth build an :class:`AccessRequest` and a :class:`Subject`, ask the
app's compiled :class:`~policies.evaluator.Policy`, and get a :class:`Decision` that always
carries its reasons.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from federation.identity import FederatedIdentity
from federation.settings import PartnerSettings


@dataclass(frozen=True, slots=True)
class AccessRequest:
    """One request to an app, as the hub sees it."""

    method: str  # upper-case (lower-case input is upper-cased)
    path: str  # already normalized (policies.paths.normalize)
    host: str
    source_ip: str | None  # the client's address as the hub trusts it (invariant 6)
    now: datetime  # timezone-aware

    def __post_init__(self) -> None:
        if self.now.tzinfo is None or self.now.utcoffset() is None:
            raise ValueError("AccessRequest.now must be timezone-aware")
        if not self.method.isupper():
            # A deny rule on DELETE must not be dodged by "delete".
            object.__setattr__(self, "method", self.method.upper())


@dataclass(frozen=True, slots=True)
class Grant:
    """A time-boxed grant of one app to one person (project access, issue 9)."""

    app_id: str
    expires_at: datetime  # timezone-aware; the grant is valid while now < expires_at
    granted_by: str


@dataclass(frozen=True, slots=True)
class Subject:
    """Who asks: the federated identity and the partner it is bound to."""

    identity: FederatedIdentity
    partner: PartnerSettings  # kind, status, contract window
    grants: tuple[Grant, ...] = ()


@dataclass(frozen=True, slots=True)
class Reason:
    """Why a decision went the way it did."""

    code: str  # e.g. "partner_not_allowed", "path_denied", "outside_hours"
    message: str  # a sentence for admins; the rule's own ``reason`` text when it has one
    rule: str | None  # the rule's name, None for the built-in reasons
    public: bool  # may be shown to the refused user

    def __str__(self) -> str:
        where = f" (rule {self.rule})" if self.rule else ""
        return f"{self.code}{where}: {self.message}"


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    reasons: tuple[Reason, ...]

    def public_reasons(self) -> list[str]:
        """The messages the policy allows to show to the user (``public: true``)."""
        return [reason.message for reason in self.reasons if reason.public]

    def codes(self) -> list[str]:
        return [reason.code for reason in self.reasons]
