"""Policy test cases written as data, and the subjects they describe.

A test file (YAML) names a policy, the partners its cases refer to, and cases of
identity + request → expected decision (and, optionally, reason codes)::

    policy: orders.policy.yaml          # relative to this file
    app: orders                         # grants looked up for this app (default: file stem)
    case_insensitive_paths: false       # as the app's setting
    partners:                           # PartnerSettings fields; or config: isthmus.yaml
      acme: {kind: supplier, status: active}
    cases:
      - name: alice reads an invoice
        identity: {email: alice@acme.example, groups: [buyers]}
        request: {method: GET, path: /invoices/7, at: "2025-03-03T10:00:00+01:00"}
        expect: allow
        reasons: [allowed]              # every listed code must be among the reasons

``isthmus policy test FILE`` runs it; ``isthmus policy explain`` builds its subject the
same way (:func:`make_subject`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from federation.errors import ConfigError
from federation.identity import FederatedIdentity
from federation.settings import PartnerSettings, load_settings
from policies import load_policy
from policies.evaluator import Policy
from policies.model import AccessRequest, Decision, Grant, Reason, Subject
from policies.paths import AmbiguousPath, normalize

CASE_KEYS = ("name", "identity", "request", "grants", "expect", "reasons")


class CaseFileError(ValueError):
    """A test file that cannot be run (the message says where and why)."""


@dataclass(frozen=True, slots=True)
class CaseResult:
    name: str
    passed: bool
    decision: Decision
    failures: tuple[str, ...]


def make_subject(
    partners: Mapping[str, PartnerSettings],
    *,
    email: str | None,
    partner: str | None = None,
    connection: str | None = None,
    groups: Sequence[str] = (),
    roles: Sequence[str] = (),
    acr: str | None = None,
    amr: Sequence[str] = (),
    claims: Mapping[str, Any] | None = None,
    email_verified: bool = True,
    grants: Sequence[Grant] = (),
) -> Subject:
    """The subject a partner user would be: the partner named, or the one owning the email's
    domain; its first connection unless one is named."""
    chosen: PartnerSettings | None = None
    if partner is not None:
        chosen = partners.get(partner)
        if chosen is None:
            raise CaseFileError(f"no partner {partner!r}")
    elif email and "@" in email:
        domain = email.rsplit("@", 1)[1].lower()
        chosen = next((p for p in partners.values() if domain in p.domains), None)
        if chosen is None:
            raise CaseFileError(f"no partner owns {domain!r}: name one with partner")
    else:
        raise CaseFileError("give an email or a partner")
    if connection is None:
        connection = chosen.connections[0].id if chosen.connections else f"{chosen.id}-connection"
    identity = FederatedIdentity(
        partner_id=chosen.id,
        connection_id=connection,
        issuer=f"urn:isthmus:test:{connection}",
        subject=email or "test-user",
        email=email,
        email_verified=email_verified,
        groups=tuple(groups),
        roles=tuple(roles),
        acr=acr,
        amr=tuple(amr),
        raw_claims=dict(claims or {}),
    )
    return Subject(identity, chosen, tuple(grants))


def decide_raw(
    policy: Policy,
    subject: Subject,
    *,
    method: str,
    raw_path: str,
    host: str,
    source_ip: str | None,
    now: datetime,
    case_insensitive: bool,
) -> tuple[Decision, str | None]:
    """Normalize the raw path as the proxy does, then decide; an ambiguous path is refused."""
    try:
        path = normalize(raw_path, case_insensitive=case_insensitive)
    except AmbiguousPath as exc:
        reason = Reason("ambiguous_path", f"the path is refused: {exc}", None, True)
        return Decision(False, (reason,)), None
    return policy.decide(subject, AccessRequest(method, path, host, source_ip, now)), path


def parse_time(value: Any) -> datetime:
    when = value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def run_file(path: Path) -> list[CaseResult]:
    """Run every case of a test file. Raises :class:`CaseFileError` or ``PolicyError``."""
    data = _read(path)
    base = path.parent
    if not isinstance(data.get("policy"), str):
        raise CaseFileError(f"{path}: 'policy' must name the policy file")
    policy_path = base / data["policy"]
    app = str(data.get("app") or Path(data["policy"]).name.split(".")[0])
    insensitive = bool(data.get("case_insensitive_paths", False))
    policy = load_policy(
        policy_path, name=str(policy_path), app_id=app, case_insensitive_paths=insensitive
    )
    partners = _partners(data, base, path)
    cases = data.get("cases")
    if not isinstance(cases, list) or not cases:
        raise CaseFileError(f"{path}: 'cases' must be a non-empty list")
    return [_run_case(i, case, policy, partners, insensitive, path) for i, case in enumerate(cases)]


def _read(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise CaseFileError(f"cannot read {path}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise CaseFileError(f"{path} is not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise CaseFileError(f"{path}: expected a mapping with policy and cases")
    return data


def _partners(data: dict[str, Any], base: Path, path: Path) -> dict[str, PartnerSettings]:
    found: dict[str, PartnerSettings] = {}
    if "config" in data:
        try:
            settings = load_settings(base / str(data["config"]), env={})
        except ConfigError as exc:
            raise CaseFileError(f"{path}: config: {exc}") from None
        found.update({p.id: p for p in settings.partners})
    for partner_id, fields in (data.get("partners") or {}).items():
        spec = {"id": partner_id, "name": partner_id, "status": "active", **(fields or {})}
        try:
            found[partner_id] = PartnerSettings(**spec)
        except ValueError as exc:
            raise CaseFileError(f"{path}: partners.{partner_id}: {exc}") from None
    return found


def _run_case(
    index: int,
    case: Any,
    policy: Policy,
    partners: Mapping[str, PartnerSettings],
    insensitive: bool,
    path: Path,
) -> CaseResult:
    where = f"{path}: cases.{index}"
    if not isinstance(case, dict):
        raise CaseFileError(f"{where}: expected a mapping")
    unknown = set(case) - set(CASE_KEYS)
    if unknown:
        raise CaseFileError(f"{where}: unknown keys {sorted(unknown)}")
    name = str(case.get("name") or f"case {index + 1}")
    expect = case.get("expect")
    if expect not in ("allow", "deny"):
        raise CaseFileError(f"{where}.expect: allow or deny")
    ident = dict(case.get("identity") or {})
    req = dict(case.get("request") or {})
    if "path" not in req:
        raise CaseFileError(f"{where}.request.path is required")
    try:
        grants = tuple(
            Grant(str(g["app"]), parse_time(g["expires"]), str(g.get("by", "test")))
            for g in case.get("grants") or ()
        )
        subject = make_subject(
            partners,
            email=ident.get("email"),
            partner=ident.get("partner"),
            connection=ident.get("connection"),
            groups=ident.get("groups") or (),
            roles=ident.get("roles") or (),
            acr=ident.get("acr"),
            amr=ident.get("amr") or (),
            claims=ident.get("claims"),
            email_verified=bool(ident.get("email_verified", True)),
            grants=grants,
        )
        now = parse_time(req["at"]) if "at" in req else datetime.now(UTC)
    except (CaseFileError, KeyError, TypeError, ValueError) as exc:
        raise CaseFileError(f"{where}: {exc}") from None
    decision, _ = decide_raw(
        policy,
        subject,
        method=str(req.get("method", "GET")),
        raw_path=str(req["path"]),
        host=str(req.get("host", "app.example")),
        source_ip=req.get("ip"),
        now=now,
        case_insensitive=insensitive,
    )
    failures: list[str] = []
    got = "allow" if decision.allowed else "deny"
    if got != expect:
        failures.append(f"expected {expect}, got {got}")
    codes = decision.codes()
    for code in case.get("reasons") or ():
        if code not in codes:
            failures.append(f"expected reason {code!r}, got {', '.join(codes)}")
    return CaseResult(name, not failures, decision, tuple(failures))
