"""A realm's organizations as partners, their identity providers as connections.

:func:`build_import` is pure (no I/O): the same :class:`RealmSnapshot`, options and
previous import give the same documents. Decided for safety (docs/keycloak.md):

* every partner is ``invited``: it routes no login until an admin activates it;
* a domain Keycloak marks *verified* (an admin's flag, not a proof) becomes a pending
  domain with a DNS TXT token, unless ``trust_verified_domains``;
* Keycloak never reveals a client secret: an OIDC connection carries
  ``client_secret: null``, which ``isthmus apply`` refuses until the admin sets it;
* the partner kind is the organization's ``isthmus.kind`` attribute, else the default.

Every document passes :func:`~federation.admin.catalog.validate_spec`; a connection or a
partner that does not is left out, and the report says why.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

from federation.admin.catalog import RESERVED_IDS, validate_spec
from federation.admin.documents import Spec
from federation.admin.domains import challenge_name, challenge_value
from federation.migrate.keycloak import IdentityProvider, Organization, RealmSnapshot
from federation.migrate.mappers import oidc_mappers, saml_mappers
from federation.migrate.metadata import (
    BINDING_POST,
    BINDING_REDIRECT,
    certificates,
    idp_metadata_xml,
)
from federation.migrate.report import ConnectionReport, ImportReport, Notes, PartnerReport, Skipped
from federation.settings import PartnerKind

KIND_ATTRIBUTE = "isthmus.kind"
OIDC_PROVIDERS = frozenset({"oidc", "keycloak-oidc"})
SAML_PROVIDERS = frozenset({"saml"})
# Keycloak's social providers: people's own accounts, not a company's IdP.
SOCIAL_PROVIDERS = frozenset(
    {
        "bitbucket",
        "facebook",
        "github",
        "gitlab",
        "google",
        "instagram",
        "linkedin-openid-connect",
        "microsoft",
        "openshift-v3",
        "openshift-v4",
        "paypal",
        "stackoverflow",
        "twitter",
    }
)
DEFAULT_FIRST_BROKER_FLOW = "first broker login"

# Where Keycloak's authorization endpoint sits under the issuer, longest first: a guess
# that the onboarding test confirms (it fetches the issuer's discovery document).
_AUTHORIZE_SUFFIXES = (
    ("/protocol/openid-connect/auth", ""),  # Keycloak
    ("/oauth2/v2.0/authorize", "/v2.0"),  # Microsoft Entra ID
    ("/oauth2/v1/authorize", ""),  # Okta (org authorization server)
    ("/v1/authorize", ""),  # Okta (custom authorization server)
    ("/connect/authorize", ""),  # IdentityServer / Duende
    ("/oauth2/authorize", ""),
    ("/authorize", ""),
    ("/auth", ""),  # node oidc-provider
)

_DISCOVERY = "/.well-known/openid-configuration"


@dataclass(frozen=True)
class ImportResult:
    documents: tuple[tuple[str, str, Spec], ...]
    report: ImportReport


@dataclass(frozen=True)
class ImportOptions:
    now: datetime
    new_token: Callable[[], str]
    trust_verified_domains: bool = False
    default_kind: PartnerKind = PartnerKind.supplier


@dataclass(frozen=True)
class PreviousImport:
    """What an earlier run of the import left in the output directory (and the admin
    added to it): pending-domain tokens by (partner, domain), client secrets by connection
    id with the client id they belong to."""

    pending: Mapping[tuple[str, str], tuple[str, str]] = field(default_factory=dict)
    secrets: Mapping[str, tuple[str, str]] = field(default_factory=dict)


def build_import(
    snapshot: RealmSnapshot, options: ImportOptions, previous: PreviousImport | None = None
) -> ImportResult:
    """The partner documents of ``snapshot`` and the report (deterministic: the same
    snapshot, options and previous import give the same documents)."""
    previous = previous or PreviousImport()
    report = ImportReport(
        snapshot.server,
        snapshot.realm,
        len(snapshot.organizations),
        len(snapshot.identity_providers),
    )
    idps = {idp.alias: idp for idp in snapshot.identity_providers}
    linked = {alias for org in snapshot.organizations for alias in _linked(org, snapshot)}
    partner_ids: set[str] = set(RESERVED_IDS["partner"])
    connection_ids: set[str] = set()
    documents: list[tuple[str, str, Spec]] = []
    for org in snapshot.organizations:
        partner_id = _unique(slug(org.alias) or f"org-{slug(org.id)[:8]}", partner_ids)
        spec, partner = _partner(org, partner_id, options, previous)
        connections: list[Spec] = []
        for alias in _linked(org, snapshot):
            idp = idps.get(alias)
            if idp is None:
                partner.notes.not_carried.append(
                    f"identity provider {alias!r} is linked but could not be read"
                )
                continue
            built = _connection(idp, partner_id, connection_ids, previous, report, partner)
            if built is not None:
                connections.append(built)
        if connections:
            spec["connections"] = connections
        else:
            partner.notes.todo.append(
                "add a connection: no identity provider of this organization could be "
                "carried over (docs/onboarding.md)"
            )
        _todo_partner(partner)
        model, problems = validate_spec("partner", partner_id, spec)
        if model is None:
            partner.written = False
            partner.notes.not_carried += [f"left out, invalid: {p}" for p in problems]
            report.skipped.append(
                Skipped("organization", org.alias, None, "its partner document is invalid")
            )
        else:
            documents.append(("partner", partner_id, spec))
        report.partners.append(partner)
    for idp in snapshot.identity_providers:
        if idp.alias not in linked:
            report.skipped.append(
                Skipped("identity provider", idp.alias, idp.provider_id, _unlinked(idp))
            )
    report.todo = _todo_global(report)
    return ImportResult(tuple(documents), report)


def _linked(org: Organization, snapshot: RealmSnapshot) -> list[str]:
    """The aliases of the IdPs linked to ``org``: the organization's list, and the IdPs
    whose own ``organizationId`` names it."""
    own = {i.alias for i in snapshot.identity_providers if i.organization_id == org.id}
    return sorted(set(org.identity_providers) | own)


def _unlinked(idp: IdentityProvider) -> str:
    if idp.provider_id in SOCIAL_PROVIDERS:
        return (
            f"social login ({idp.provider_id}), linked to no organization: Isthmus federates "
            "companies' identity providers, not personal accounts"
        )
    return (
        "linked to no organization: an Isthmus connection belongs to a partner. Link it to "
        "its organization in Keycloak and import again, or add it to a partner by hand"
    )


def _partner(
    org: Organization,
    partner_id: str,
    options: ImportOptions,
    previous: PreviousImport,
) -> tuple[Spec, PartnerReport]:
    kind, kind_note, kind_carried = _kind(org, options.default_kind)
    partner = PartnerReport(
        partner_id, org.name, kind.value, org.alias, org.id, f"partners/{partner_id}.yaml"
    )
    notes = partner.notes
    notes.carried.append(f"name {org.name!r} (organization {org.alias!r})")
    (notes.carried if kind_carried else notes.not_carried).append(kind_note)
    spec: Spec = {"id": partner_id, "name": org.name, "kind": kind.value, "status": "invited"}
    notes.carried.append("status invited: no login is routed to it until it is activated")
    if not org.enabled:
        notes.not_carried.append(
            "the organization is disabled in Keycloak: keep the partner invited, or offboard it"
        )
    domains, pending, seen = [], [], set()
    for name, verified in org.domains:
        domain = name.strip().lower().rstrip(".")
        if not _is_domain(domain):
            notes.not_carried.append(f"domain {name!r}: not a domain name Isthmus accepts")
            continue
        if domain in seen:
            continue
        seen.add(domain)
        if verified and options.trust_verified_domains:
            domains.append(domain)
            notes.carried.append(
                f"domain {domain}: verified in Keycloak (an admin's flag, not a DNS proof), "
                "taken as verified because of --trust-verified-domains"
            )
            continue
        token, requested_at = previous.pending.get(
            (partner_id, domain), (options.new_token(), _iso(options.now))
        )
        pending.append({"name": domain, "token": token, "requested_at": requested_at})
        flag = "verified" if verified else "not verified"
        notes.carried.append(
            f"domain {domain}: pending its DNS TXT proof ({flag} in Keycloak: Keycloak's "
            "flag is an admin's say-so, not a proof)"
        )
        partner.pending_domains.append(
            {
                "domain": domain,
                "record": f'{challenge_name(domain)}.  IN  TXT  "{challenge_value(token)}"',
            }
        )
    if domains:
        spec["domains"] = domains
    if pending:
        spec["pending_domains"] = pending
    partner.domains = domains
    if not seen:
        notes.todo.append(
            "claim the partner's email domains (`isthmus partners domains claim`): without a "
            "verified domain no login is routed to it"
        )
    if org.description:
        notes.not_carried.append("description (Isthmus partners have none)")
    if org.redirect_url:
        notes.not_carried.append(f"redirect URL {org.redirect_url} (Isthmus has none per partner)")
    others = sorted(set(org.attributes) - {KIND_ATTRIBUTE})
    if others:
        notes.not_carried.append(f"attributes {', '.join(others)} (Isthmus keeps none)")
    notes.not_carried.append(
        "members: Isthmus keeps no accounts; people sign in through their company's "
        "identity provider"
    )
    return spec, partner


def _kind(org: Organization, default: PartnerKind) -> tuple[PartnerKind, str, bool]:
    """The partner kind, the note saying where it comes from, and whether it was carried."""
    values = org.attributes.get(KIND_ATTRIBUTE, ())
    if not values:
        return default, f"kind {default.value} (the default: no {KIND_ATTRIBUTE} attribute)", True
    value = values[0].strip().lower()
    try:
        kind = PartnerKind(value)
    except ValueError:
        allowed = ", ".join(k.value for k in PartnerKind)
        note = (
            f"{KIND_ATTRIBUTE} {values[0]!r} is not a partner kind ({allowed}): "
            f"kind {default.value} (the default) instead"
        )
        return default, note, False
    return kind, f"kind {kind.value} (attribute {KIND_ATTRIBUTE})", True


def _connection(
    idp: IdentityProvider,
    partner_id: str,
    taken: set[str],
    previous: PreviousImport,
    report: ImportReport,
    partner: PartnerReport,
) -> Spec | None:
    def skip(reason: str) -> None:
        partner.notes.not_carried.append(f"identity provider {idp.alias!r}: {reason}")
        report.skipped.append(Skipped("identity provider", idp.alias, idp.provider_id, reason))

    if not idp.enabled:
        skip("disabled in Keycloak: enable it and import again if it is still in use")
        return None
    if idp.provider_id in SOCIAL_PROVIDERS:
        skip(f"social login ({idp.provider_id}): Isthmus federates companies' IdPs")
        return None
    if idp.provider_id not in OIDC_PROVIDERS | SAML_PROVIDERS:
        skip(f"provider type {idp.provider_id!r} is not supported (only OIDC and SAML)")
        return None
    connection_id = _unique(slug(idp.alias) or f"{partner_id}-idp", taken)
    kind = "oidc" if idp.provider_id in OIDC_PROVIDERS else "saml"
    entry = ConnectionReport(connection_id, kind, idp.alias, idp.provider_id)
    build = _oidc if kind == "oidc" else _saml
    spec = build(idp, connection_id, entry.notes, previous)
    entry.secret_missing = (
        spec is not None and "client_secret" in spec and not spec["client_secret"]
    )
    if spec is None:
        taken.discard(connection_id)
        skip("; ".join(entry.notes.not_carried[-1:]) or "could not be carried over")
        return None
    _common(idp, spec, entry.notes)
    partner.connections.append(entry)
    return spec


def _common(idp: IdentityProvider, spec: Spec, notes: Notes) -> None:
    if idp.display_name:
        spec["display_name"] = idp.display_name
        notes.carried.append(f"display name {idp.display_name!r}")
    flows = [
        f
        for f in (idp.first_broker_flow, idp.post_broker_flow)
        if f and f != DEFAULT_FIRST_BROKER_FLOW
    ]
    if flows:
        notes.not_carried.append(
            f"Keycloak authentication flows {', '.join(repr(f) for f in flows)} ran after its "
            "logins: Isthmus runs none (policies can require MFA through acr/amr)"
        )
    if idp.flag("hideOnLogin") or idp.flag("hideOnLoginPage"):
        notes.not_carried.append("hidden on Keycloak's login page (Isthmus routes by domain)")
    routed = idp.setting("kc.org.domain")
    if routed:
        notes.carried.append(
            f"Keycloak sent users of {routed} here: Isthmus routes the partner's verified "
            "domains to its connections"
        )


def _oidc(
    idp: IdentityProvider, connection_id: str, notes: Notes, previous: PreviousImport
) -> Spec | None:
    issuer, how = _issuer(idp)
    if issuer is None:
        notes.not_carried.append(
            "no issuer: neither issuer, discovery URL nor authorization URL is configured"
        )
        return None
    client_id = idp.setting("clientId")
    if client_id is None:
        notes.not_carried.append("no client id configured")
        return None
    notes.carried.append(f"issuer {issuer} ({how})")
    if how != "issuer":
        notes.todo.append(
            f"confirm the issuer {issuer} (derived from Keycloak's {how}): the onboarding "
            "test fetches its discovery document"
        )
    notes.carried.append(f"client id {client_id!r}")
    spec: Spec = {"type": "oidc", "id": connection_id, "issuer": issuer, "client_id": client_id}
    method = idp.setting("clientAuthMethod") or "client_secret_post"
    if method == "client_secret_basic":
        spec["token_endpoint_auth_method"] = "client_secret_basic"
    elif method == "client_secret_post":
        spec["token_endpoint_auth_method"] = "client_secret_post"
    else:
        spec["token_endpoint_auth_method"] = "client_secret_basic"
        notes.not_carried.append(
            f"client authentication {method} (Isthmus sends a client secret, basic or post)"
        )
        notes.todo.append(
            f"ask the partner to let client {client_id!r} authenticate with a client secret "
            "(client_secret_basic), and set it here"
        )
    notes.carried.append(f"client authentication {spec['token_endpoint_auth_method']}")
    kept = previous.secrets.get(connection_id)
    if kept is not None and kept[0] == client_id:
        spec["client_secret"] = kept[1]
        notes.carried.append("client secret: kept from the previous import's file")
    else:
        spec["client_secret"] = None
        notes.not_carried.append("client secret: Keycloak never reveals it")
        notes.todo.append(
            f"set client_secret of connection {connection_id} (the secret of client "
            f"{client_id!r} at the partner's IdP): `isthmus apply` refuses it while it is null"
        )
    scopes = idp.setting("defaultScope")
    if scopes:
        wanted = ["openid", *[s for s in scopes.replace(",", " ").split() if s != "openid"]]
        spec["scopes"] = list(dict.fromkeys(wanted))
        notes.carried.append(f"scopes {' '.join(spec['scopes'])}")
    if idp.flag("disableUserInfo"):
        spec["use_userinfo"] = False
        notes.carried.append("userinfo not called (disableUserInfo)")
    if not idp.flag("validateSignature"):
        notes.not_carried.append(
            "Keycloak did not validate this IdP's token signatures: Isthmus always does "
            "(RS256 by default, see algorithms)"
        )
    if idp.trust_email:
        notes.not_carried.append(
            "Trust Email: Keycloak took every email of this IdP as verified; Isthmus keeps "
            "one only when the email_verified claim says so (claims.email_verified)"
        )
    claims, mapper_notes = oidc_mappers(idp.mappers)
    if claims:
        spec["claims"] = claims
    notes.merge(mapper_notes)
    _plain_http(issuer, "issuer", notes)
    notes.todo.append(
        f"register the hub's redirect URI {{issuer}}/callback/{connection_id} with client "
        f"{client_id!r} at the partner's IdP (Keycloak's broker endpoint is no longer used)"
    )
    return spec


def _issuer(idp: IdentityProvider) -> tuple[str | None, str]:
    issuer = idp.setting("issuer")
    if issuer:
        return issuer, "issuer"  # compared exactly with the ID token's iss: kept as it is
    discovery = idp.setting("metadataDescriptorUrl")
    if discovery and discovery.endswith(_DISCOVERY):
        return discovery[: -len(_DISCOVERY)], "discovery URL"
    authorize = idp.setting("authorizationUrl")
    if authorize:
        parts = urlsplit(authorize)
        path = parts.path.rstrip("/")
        for suffix, replacement in _AUTHORIZE_SUFFIXES:
            if path.endswith(suffix):
                base = f"{parts.scheme}://{parts.netloc}{path[: -len(suffix)]}{replacement}"
                return base, "authorization URL"
    return None, ""


def _saml(
    idp: IdentityProvider, connection_id: str, notes: Notes, previous: PreviousImport
) -> Spec | None:
    del previous  # SAML connections hold no secret
    spec: Spec = {"type": "saml", "id": connection_id}
    entity_id = idp.setting("idpEntityId")
    metadata_url = idp.setting("metadataDescriptorUrl")
    post = idp.flag("postBindingAuthnRequest")
    if metadata_url:
        spec["idp_metadata_url"] = metadata_url
        notes.carried.append(f"IdP metadata URL {metadata_url} (refreshed by the hub)")
        if entity_id:
            spec["idp_entity_id"] = entity_id
            notes.carried.append(f"IdP entity id {entity_id}")
        _plain_http(metadata_url, "metadata URL", notes)
    else:
        sso = idp.setting("singleSignOnServiceUrl")
        if not entity_id or not sso:
            notes.not_carried.append(
                "no metadata URL, and no IdP entity id or single sign-on URL to describe the "
                "IdP with: ask the partner for its metadata"
            )
            return None
        certs, bad = certificates(idp.setting("signingCertificate") or "")
        for index in bad:
            notes.not_carried.append(f"signing certificate {index + 1}: not a readable X.509")
        if not certs:
            why = "" if idp.flag("validateSignature") else " (Keycloak did not check signatures)"
            notes.not_carried.append(
                f"no signing certificate{why}: Isthmus requires signed responses; ask the "
                "partner for its metadata"
            )
            return None
        spec["idp_metadata_xml"] = idp_metadata_xml(
            entity_id=entity_id,
            sso_url=sso,
            sso_binding=BINDING_POST if post else BINDING_REDIRECT,
            slo_url=idp.setting("singleLogoutServiceUrl"),
            slo_binding=BINDING_POST if idp.flag("postBindingLogout") else BINDING_REDIRECT,
            signing_certs=certs,
            want_authn_requests_signed=idp.flag("wantAuthnRequestsSigned"),
            name_id_format=idp.setting("nameIDPolicyFormat"),
        )
        notes.carried.append(
            f"IdP metadata built from Keycloak's settings: entity id {entity_id}, single "
            f"sign-on {sso}, {len(certs)} signing certificate(s)"
        )
        notes.todo.append(
            "prefer the partner's own metadata URL (idp_metadata_url) when it has one: key "
            "rollovers then need no change here"
        )
    if post:
        spec["authn_request_binding"] = "post"
    notes.carried.append(f"AuthnRequest binding {'post' if post else 'redirect'}")
    if idp.flag("wantAuthnRequestsSigned"):
        spec["sign_authn_requests"] = True
        notes.carried.append("AuthnRequests signed (the IdP wants them signed)")
    signed = idp.flag("wantAssertionsSigned")
    spec["want_assertions_signed"] = signed
    if signed:
        notes.carried.append("assertions must be signed")
    else:
        notes.carried.append("a signed response is enough (assertions need not be signed)")
    name_id = idp.setting("nameIDPolicyFormat")
    if name_id:
        spec["name_id_format"] = name_id
        notes.carried.append(f"NameID format {name_id}")
    skew = idp.setting("allowedClockSkew")
    if skew and skew.isdigit():
        spec["clock_skew_seconds"] = min(int(skew), 300)
        notes.carried.append(f"clock skew {spec['clock_skew_seconds']} s")
    if not idp.flag("validateSignature"):
        notes.not_carried.append(
            "Keycloak did not validate this IdP's signatures: Isthmus always does"
        )
    if idp.flag("wantAssertionsEncrypted"):
        notes.todo.append(
            "the IdP encrypted assertions for Keycloak's key: it must use the hub's "
            "encryption certificate (in the hub's SP metadata)"
        )
    if idp.setting("authnContextClassRefs"):
        notes.not_carried.append(
            "requested AuthnContext classes (Isthmus requests none; a policy can require an acr)"
        )
    if idp.flag("forceAuthn"):
        notes.not_carried.append("ForceAuthn (Isthmus does not force re-authentication)")
    attributes = _principal(idp, notes)
    mapped, mapper_notes = saml_mappers(idp.mappers)
    attributes.update(mapped)
    if attributes:
        spec["attributes"] = attributes
    notes.merge(mapper_notes)
    spec["email_verified"] = idp.trust_email
    if idp.trust_email:
        notes.carried.append("emails trusted as verified (Trust Email)")
    else:
        notes.carried.append(
            "emails not trusted (Trust Email was off): email_verified false, so the hub "
            "keeps no email from this IdP; set it true if the partner's IdP vouches for them"
        )
    notes.todo.append(
        f"give the partner the hub's SP metadata, {{issuer}}/saml/{connection_id}/metadata: "
        "the hub is a new service provider (entity id, ACS URL, certificates)"
    )
    return spec


def _principal(idp: IdentityProvider, notes: Notes) -> dict[str, Any]:
    kind = (idp.setting("principalType") or "SUBJECT").upper()
    attribute = idp.setting("principalAttribute")
    if kind in ("ATTRIBUTE", "FRIENDLY_ATTRIBUTE") and attribute:
        notes.carried.append(f"subject from the attribute {attribute!r} (principalType {kind})")
        return {"subject": [attribute]}
    if kind != "SUBJECT":
        notes.not_carried.append(f"principal type {kind}: the NameID is the subject")
    return {}


def _plain_http(url: str, what: str, notes: Notes) -> None:
    parts = urlsplit(url)
    if parts.scheme == "http" and parts.hostname not in ("127.0.0.1", "localhost", "::1"):
        notes.todo.append(
            f"the {what} {url} is plain http: `isthmus apply` refuses it unless the hub "
            "allows insecure http (local use only); ask the partner for https"
        )


def _todo_partner(partner: PartnerReport) -> None:
    for pending in partner.pending_domains:
        partner.notes.todo.append(
            f"have the partner publish {pending['record']}, then run "
            f"`isthmus partners domains verify {partner.id} {pending['domain']}`"
        )
    if partner.connections:
        partner.notes.todo.append(
            "test each connection (onboarding test login) before activating the partner"
        )
    partner.notes.todo.append(f"review the partner, then `isthmus partners activate {partner.id}`")


def _todo_global(report: ImportReport) -> list[str]:
    secrets = [
        f"{p.file}: {c.id}"
        for p in report.partners
        for c in p.connections
        if p.written and c.secret_missing
    ]
    steps = []
    if secrets:
        steps.append(
            "fill in the client secrets Keycloak could not give (`isthmus apply` refuses a "
            f"null client_secret): {', '.join(secrets)}"
        )
    steps += [
        "register the hub with each partner's IdP (the connection notes below say what)",
        "`isthmus apply -f <this directory> --dry-run`, then without --dry-run",
        "prove the pending domains (DNS TXT), test each connection, activate each partner",
        "switch the partners' users to the hub only then: Keycloak keeps working meanwhile",
    ]
    return steps


# --- ids and small checks -------------------------------------------------------------------

_NOT_ID = re.compile(r"[^a-z0-9_-]+")


def slug(text: str) -> str:
    """An Isthmus id (``[a-z0-9][a-z0-9_-]{0,62}``) from a Keycloak alias or name."""
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    cleaned = _NOT_ID.sub("-", ascii_text.lower())
    cleaned = re.sub(r"-{2,}", "-", cleaned).strip("-_")
    return cleaned[:63].rstrip("-_")


def _unique(base: str, taken: set[str]) -> str:
    candidate, n = base, 1
    while candidate in taken:
        n += 1
        suffix = f"-{n}"
        candidate = base[: 63 - len(suffix)].rstrip("-_") + suffix
    taken.add(candidate)
    return candidate


def _is_domain(value: str) -> bool:
    labels = value.split(".")
    return len(labels) >= 2 and all(
        0 < len(label) <= 63
        and label.isascii()
        and label.replace("-", "").isalnum()
        and not label.startswith("-")
        and not label.endswith("-")
        for label in labels
    )


def _iso(moment: datetime) -> str:
    return moment.isoformat(timespec="seconds")
