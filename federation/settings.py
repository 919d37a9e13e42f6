"""Typed settings: a YAML file plus ``ISTHMUS_*`` environment overrides.

Loading reports every problem at once, each with the dotted path of the bad key
(pydantic's validation plus the cross-checks in :func:`semantic_problems`), and unknown
keys are refused. ``isthmus check-config FILE`` and start-up share :func:`load_settings`.
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from federation.errors import ConfigError

ENV_PREFIX = "ISTHMUS_"


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PartnerKind(StrEnum):
    internal = "internal"
    supplier = "supplier"
    subcontractor = "subcontractor"
    distributor = "distributor"
    customer = "customer"


class PartnerStatus(StrEnum):
    invited = "invited"
    active = "active"
    suspended = "suspended"
    offboarded = "offboarded"


class ContractWindow(Strict):
    valid_from: datetime | None = None
    valid_until: datetime | None = None

    def contains(self, when: datetime) -> bool:
        if self.valid_from is not None and when < _aware(self.valid_from):
            return False
        return self.valid_until is None or when < _aware(self.valid_until)


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=UTC)


class ClaimMapping(Strict):
    """Which upstream claim feeds each identity field (dotted paths reach nested claims)."""

    subject: str = "sub"
    email: str = "email"
    email_verified: str = "email_verified"
    name: str = "name"
    groups: str = "groups"
    roles: str = "roles"
    acr: str = "acr"
    amr: str = "amr"


class OidcConnectionSettings(Strict):
    type: Literal["oidc"]
    id: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,62}$")
    display_name: str | None = None
    issuer: str
    client_id: str
    client_secret: str | None = None
    token_endpoint_auth_method: Literal["client_secret_basic", "client_secret_post", "none"] = (
        "client_secret_basic"
    )
    scopes: tuple[str, ...] = ("openid", "email", "profile")
    # Explicit allow-list: an ID token signed with anything else is refused.
    algorithms: tuple[
        Literal["RS256", "RS384", "RS512", "PS256", "ES256", "ES384", "EdDSA"], ...
    ] = ("RS256",)
    claims: ClaimMapping = ClaimMapping()
    use_userinfo: bool = True
    # Does the hub trust the partner's acr/amr (its MFA)? Untrusted values are dropped.
    trust_acr: bool = False
    leeway_seconds: int = Field(default=60, ge=0, le=300)
    timeout_seconds: float = Field(default=10.0, gt=0, le=60)
    # Sign-out at the hub also ends the IdP's session (OIDC RP-Initiated Logout 1.0) when
    # its discovery document has an end_session_endpoint (docs/logout.md).
    upstream_logout: bool = True


class MockUser(Strict):
    subject: str
    email: str
    name: str | None = None
    email_verified: bool = True
    groups: tuple[str, ...] = ()
    roles: tuple[str, ...] = ()


class MockConnectionSettings(Strict):
    """A demo/test IdP served by the hub itself: pick a user, no password."""

    type: Literal["mock"]
    id: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,62}$")
    display_name: str | None = None
    users: tuple[MockUser, ...] = ()


class SamlAttributeMapping(Strict):
    """Attribute names (friendly names, URIs or OIDs) feeding each identity field; the
    first one present wins. The NameID is the subject unless ``subject`` names one."""

    subject: tuple[str, ...] = ()
    email: tuple[str, ...] = (
        "email",
        "mail",
        "urn:oid:0.9.2342.19200300.100.1.3",
        "urn:oid:1.2.840.113549.1.9.1",  # PKCS #9 emailAddress (SimpleSAMLphp name2oid)
        "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/emailaddress",
    )
    name: tuple[str, ...] = (
        "displayName",
        "name",
        "cn",
        "urn:oid:2.16.840.1.113730.3.1.241",
        "urn:oid:2.5.4.3",
        "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/name",
    )
    groups: tuple[str, ...] = (
        "groups",
        "memberOf",
        "urn:oid:1.3.6.1.4.1.5923.1.5.1.1",
        "http://schemas.xmlsoap.org/claims/Group",
    )
    roles: tuple[str, ...] = (
        "roles",
        "role",
        "eduPersonAffiliation",
        "urn:oid:1.3.6.1.4.1.5923.1.1.1.1",
        "http://schemas.microsoft.com/ws/2008/06/identity/claims/role",
    )


class SamlConnectionSettings(Strict):
    """A partner's SAML 2.0 IdP; the hub is the service provider (one SP per connection)."""

    type: Literal["saml"]
    id: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,62}$")
    display_name: str | None = None
    # The IdP: exactly one of a metadata URL (refreshed on a schedule), a file, or inline XML.
    idp_metadata_url: str | None = None
    idp_metadata_file: Path | None = None
    idp_metadata_xml: str | None = None
    # Which IdP of the metadata (required when it is an aggregate describing several).
    idp_entity_id: str | None = None
    metadata_refresh_seconds: int = Field(default=3600, ge=60, le=7 * 86400)
    # PEM certificates trusted to sign the IdP's metadata (the partner's or its federation's
    # metadata signing key; several for a rollover). With any, every load and refresh must
    # carry a signature on the document's root that verifies with one of them.
    metadata_signing_certs: tuple[str, ...] = ()
    # None: required exactly when metadata_signing_certs are given. false with certificates:
    # unsigned metadata is accepted (a warning is logged), a signature that fails is not.
    require_signed_metadata: bool | None = None
    # The SP (the hub, for this connection). entityID defaults to the metadata URL.
    sp_entity_id: str | None = None
    # Signing (AuthnRequests, LogoutRequests) and decryption key pair, PEM files. Without
    # them a key pair is generated at start-up: fine for one process, not for replicas.
    sp_key_file: Path | None = None
    sp_cert_file: Path | None = None
    authn_request_binding: Literal["redirect", "post"] = "redirect"
    # None: sign exactly when the IdP's metadata says WantAuthnRequestsSigned.
    sign_authn_requests: bool | None = None
    name_id_format: str | None = None
    # true: the assertion itself must carry a valid signature (WantAssertionsSigned in the
    # SP metadata); false: a signed Response covering an unsigned assertion is enough
    # (Shibboleth's and Keycloak's defaults sign the Response only).
    want_assertions_signed: bool = True
    attributes: SamlAttributeMapping = SamlAttributeMapping()
    # SAML has no email_verified: the connection vouches for its IdP's emails (the domain
    # binding of invariant 1 applies all the same). false: emails are never kept.
    email_verified: bool = True
    trust_acr: bool = False
    # Unsolicited responses (IdP-initiated SSO) are refused unless this is true.
    allow_idp_initiated: bool = False
    idp_initiated_return_url: str = "/"
    clock_skew_seconds: int = Field(default=120, ge=0, le=300)
    max_response_bytes: int = Field(default=256 * 1024, ge=8 * 1024, le=4 * 1024 * 1024)

    @field_validator("metadata_signing_certs")
    @classmethod
    def _pem_certificates(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        from cryptography import x509  # only SAML connections need it

        for i, text in enumerate(value):
            pem = text.strip()
            if pem.count("-----BEGIN CERTIFICATE-----") != 1:
                raise ValueError(
                    f"entry {i} must hold exactly one PEM certificate "
                    "(-----BEGIN CERTIFICATE----- ... -----END CERTIFICATE-----), not a path"
                )
            try:
                x509.load_pem_x509_certificate(pem.encode())
            except ValueError:
                raise ValueError(f"entry {i} is not a readable X.509 certificate") from None
        return tuple(text.strip() + "\n" for text in value)

    @field_validator("require_signed_metadata")
    @classmethod
    def _required_needs_certificates(cls, value: bool | None, info: Any) -> bool | None:
        certs = info.data.get("metadata_signing_certs", ("(invalid, reported apart)",))
        if value and not certs:
            raise ValueError("true needs metadata_signing_certs, the certificates to check with")
        return value

    @property
    def metadata_signature_required(self) -> bool:
        """Must the IdP's metadata be signed (by one of ``metadata_signing_certs``)?"""
        if self.require_signed_metadata is None:
            return bool(self.metadata_signing_certs)
        return self.require_signed_metadata


class KeycloakAdminSettings(Strict):
    """The Keycloak admin API's credentials: a confidential client whose service account
    (client credentials grant) holds the realm-management roles ``view-users``,
    ``query-groups``, ``view-realm`` (and ``view-clients`` for ``client_roles_from``)."""

    client_id: str = Field(min_length=1)
    client_secret: str = Field(min_length=1)

    @model_validator(mode="before")
    @classmethod
    def _no_user_password(cls, data: Any) -> Any:
        if isinstance(data, Mapping) and {"username", "password"} & set(data):
            raise ValueError(
                "a user's username/password is never accepted for the admin API: give a "
                "service-account client (client_id, client_secret) with the realm-management "
                "roles view-users, query-groups and view-realm"
            )
        return data


class KeycloakConnectionSettings(Strict):
    """Staff of an ``internal`` partner signing in through a Keycloak realm: OIDC with
    Keycloak's roles and groups mapped, read through the admin API when the ID token lacks
    them (docs/keycloak.md)."""

    type: Literal["keycloak"]
    id: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,62}$")
    display_name: str | None = None
    # Keycloak's base URL (https://sso.corp.example), without /realms/...
    server_url: str
    realm: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,254}$")
    # The hub's confidential client in that realm (standard flow, PKCE S256).
    client_id: str = Field(min_length=1)
    client_secret: str = Field(min_length=1)
    scopes: tuple[str, ...] = ("openid", "email", "profile")
    algorithms: tuple[
        Literal["RS256", "RS384", "RS512", "PS256", "ES256", "ES384", "EdDSA"], ...
    ] = ("RS256",)
    # Clients whose client roles become roles, as "<client>:<role>"; realm roles stay plain.
    client_roles_from: tuple[str, ...] = ()
    # None: roles and groups come from the ID token (and userinfo) only.
    admin: KeycloakAdminSettings | None = None
    # How long an admin API answer about one user is reused (0: never), and for how many.
    role_cache_seconds: int = Field(default=300, ge=0, le=86400)
    role_cache_size: int = Field(default=10_000, ge=1, le=1_000_000)
    trust_acr: bool = False
    leeway_seconds: int = Field(default=60, ge=0, le=300)
    timeout_seconds: float = Field(default=10.0, gt=0, le=60)
    # As for oidc connections: sign-out at the hub ends the Keycloak session too.
    upstream_logout: bool = True

    @property
    def issuer(self) -> str:
        return f"{self.server_url.rstrip('/')}/realms/{self.realm}"


class OtpConnectionSettings(Strict):
    """A one-time code sent by email (partners without SSO): the hub serves the pages,
    the address must be in one of the partner's verified domains (docs/otp.md)."""

    type: Literal["otp"]
    id: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,62}$")
    display_name: str | None = None
    code_digits: int = Field(default=6, ge=6, le=8)
    code_ttl_seconds: int = Field(default=300, ge=60, le=900)
    # A code is burnt after this many wrong guesses.
    max_wrong_codes: int = Field(default=5, ge=1, le=10)
    # Codes sent per address, and send or verify attempts per source IP, per window.
    sends_per_address: int = Field(default=3, ge=1, le=100)
    attempts_per_ip: int = Field(default=30, ge=1, le=10_000)
    rate_window_seconds: int = Field(default=900, ge=60, le=86_400)
    # The mail also carries a single-use sign-in link (same record, TTL and limits as the
    # code; it works only in the browser that started the sign-in).
    magic_link: bool = True


ConnectionSettings = Annotated[
    OidcConnectionSettings
    | MockConnectionSettings
    | SamlConnectionSettings
    | KeycloakConnectionSettings
    | OtpConnectionSettings,
    Field(discriminator="type"),
]


class PendingDomain(Strict):
    """A domain a partner claims, waiting for its DNS TXT proof (see docs/admin.md)."""

    name: str
    token: str = Field(min_length=16, max_length=128, pattern=r"^[A-Za-z0-9_-]+$")
    requested_at: datetime

    @field_validator("name")
    @classmethod
    def _domain(cls, value: str) -> str:
        if not _is_domain(value):
            raise ValueError(f"{value!r} is not a domain name")
        return value.lower()


class ReviewSettings(Strict):
    """Access reviews of one partner (docs/lifecycle.md): every ``every_days`` its
    sponsors get the list of who from the partner used what; access they do not confirm
    within ``window_days`` lapses."""

    every_days: int = Field(ge=1, le=3650)
    window_days: int = Field(default=14, ge=1, le=365)

    @model_validator(mode="after")
    def _window_inside_period(self) -> ReviewSettings:
        if self.window_days > self.every_days:
            raise ValueError("window_days must not exceed every_days")
        return self


class PartnerSettings(Strict):
    id: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,62}$")
    name: str
    kind: PartnerKind
    status: PartnerStatus = PartnerStatus.invited
    domains: tuple[str, ...] = ()
    contract: ContractWindow = ContractWindow()
    sponsors: tuple[str, ...] = ()
    connections: tuple[ConnectionSettings, ...] = ()
    # Domains claimed but not yet proven (DNS TXT): they never route a login.
    pending_domains: tuple[PendingDomain, ...] = ()
    # Periodic access reviews by the sponsors (None: none).
    review: ReviewSettings | None = None
    # Its people's grants end after this long without a sign-in (None: lifecycle's value).
    inactive_after_days: int | None = Field(default=None, ge=1, le=3650)

    @field_validator("domains")
    @classmethod
    def _lower_domains(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for domain in value:
            if not _is_domain(domain):
                raise ValueError(f"{domain!r} is not a domain name")
        return tuple(d.lower() for d in value)


class AppSettings(Strict):
    """An extranet application behind the hub: reached through the identity-aware proxy
    (or guarded at the edge through forward-auth), allowed by its policy, deny by default."""

    id: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,62}$")
    name: str | None = None
    # Routing: requests whose Host is one of ``hosts`` (any host when empty) and whose
    # normalized path starts with ``path_prefix``.
    hosts: tuple[str, ...] = ()
    path_prefix: str = "/"
    strip_prefix: bool = False
    upstreams: tuple[str, ...] = Field(min_length=1)
    # The policy: a YAML file (policies/ format) or the same document inline. None: deny all.
    policy_file: Path | None = None
    policy: dict[str, Any] | None = None
    case_insensitive_paths: bool = False
    # Headers injected after every client-supplied identity header is stripped:
    # header name → identity field (subject, email, name, partner_id, partner_kind,
    # connection_id, groups, roles, acr).
    identity_headers: dict[str, str] = Field(
        default_factory=lambda: {
            "X-Isthmus-User": "subject",
            "X-Isthmus-Email": "email",
            "X-Isthmus-Partner": "partner_id",
            "X-Isthmus-Groups": "groups",
        }
    )
    # A short-lived JWT (audience = this app's id) signed by the hub, verifiable with JWKS.
    assertion_header: str | None = "X-Isthmus-Assertion"
    preserve_host: bool = False
    connect_timeout_seconds: float = Field(default=5.0, gt=0, le=60)
    read_timeout_seconds: float = Field(default=60.0, gt=0, le=3600)
    websockets: bool = True

    @field_validator("identity_headers")
    @classmethod
    def _known_identity_fields(cls, value: dict[str, str]) -> dict[str, str]:
        for header, field_name in value.items():
            if not _HEADER_NAME.match(header):
                raise ValueError(f"{header!r} is not a header name")
            if field_name not in IDENTITY_FIELDS:
                known = ", ".join(sorted(IDENTITY_FIELDS))
                raise ValueError(f"{header}: unknown identity field {field_name!r} ({known})")
        return value

    @field_validator("assertion_header")
    @classmethod
    def _header_name(cls, value: str | None) -> str | None:
        if value is not None and not _HEADER_NAME.match(value):
            raise ValueError(f"{value!r} is not a header name")
        return value


# What an app's identity_headers may carry ("subject" is the hub subject, the assertion's
# ``sub``; "upstream_subject" the partner IdP's own subject).
IDENTITY_FIELDS = frozenset(
    {
        "subject",
        "upstream_subject",
        "email",
        "name",
        "partner_id",
        "partner_kind",
        "partner_name",
        "connection_id",
        "issuer",
        "groups",
        "roles",
        "amr",
        "acr",
    }
)
_HEADER_NAME = re.compile(r"^[A-Za-z0-9!#$%&'*+.^_`|~-]+$")


class ClientSettings(Strict):
    """An application that logs users in against the hub's OIDC provider."""

    client_id: str = Field(min_length=1, max_length=128)
    name: str | None = None
    client_secret: str | None = None
    token_endpoint_auth_method: Literal["client_secret_basic", "client_secret_post", "none"] = (
        "client_secret_basic"
    )
    redirect_uris: tuple[str, ...] = Field(min_length=1)
    post_logout_redirect_uris: tuple[str, ...] = ()
    # OIDC Back-Channel Logout 1.0: where the hub POSTs a logout token when a session in
    # which this client received tokens ends; the tokens always carry ``sid``.
    backchannel_logout_uri: str | None = None
    backchannel_logout_session_required: bool = False
    scopes: tuple[str, ...] = ("openid", "email", "profile", "groups", "offline_access")
    grant_types: tuple[Literal["authorization_code", "refresh_token"], ...] = (
        "authorization_code",
        "refresh_token",
    )

    @property
    def public(self) -> bool:
        return self.token_endpoint_auth_method == "none"


class SentinelSettings(Strict):
    """A Redis master watched by Sentinel (docs/operations-redis.md)."""

    # The sentinels as "host:port" (Sentinel's usual port is 26379), asked in this order.
    hosts: tuple[str, ...] = Field(min_length=1)
    master_name: str = Field(min_length=1)
    # For the master and its replicas (requirepass, or an ACL user and its password).
    username: str | None = None
    password: str | None = None
    # The sentinels' own requirepass, if any.
    sentinel_password: str | None = None
    db: int = Field(default=0, ge=0)

    def addresses(self) -> tuple[tuple[str, int], ...]:
        return tuple(host_port(host) for host in self.hosts)


class StoreSettings(Strict):
    """Where sessions, flows and tokens live; with ``redis``, one of three topologies
    (docs/operations-redis.md): one server (``url``: ``redis://``, ``rediss://`` or
    ``unix://``), a master watched by Sentinel (``sentinel``, no ``url``), or a Cluster
    (``cluster: true``, with ``url`` naming any node and/or ``cluster_nodes``)."""

    backend: Literal["memory", "redis"] = "memory"
    url: str | None = None
    prefix: str = "isthmus:"
    sentinel: SentinelSettings | None = None
    cluster: bool = False
    # Further start-up nodes of the Cluster, "host:port" (the client learns the others).
    cluster_nodes: tuple[str, ...] = ()

    def cluster_addresses(self) -> tuple[tuple[str, int], ...]:
        return tuple(host_port(node) for node in self.cluster_nodes)


class KeySettings(Strict):
    # None: keys live in memory only (demo); a path: a JSON key set shared by replicas.
    path: Path | None = None
    algorithm: Literal["RS256", "ES256"] = "RS256"


class SessionSettings(Strict):
    cookie_name: str = "isthmus_session"
    # None: the session cookie is host-only (the hub's host; apps on it by path prefix).
    # A parent domain of the hub's host (e.g. "extranet.example") sends it to apps on
    # other hosts under that domain too (orders.extranet.example): see docs/proxy.md.
    cookie_domain: str | None = None
    ttl_seconds: int = Field(default=8 * 3600, ge=60)


class TokenSettings(Strict):
    access_token_ttl: int = Field(default=300, ge=30, le=86400)
    id_token_ttl: int = Field(default=300, ge=30, le=86400)
    refresh_token_ttl: int = Field(default=30 * 86400, ge=60)
    code_ttl: int = Field(default=60, ge=10, le=600)
    leeway_seconds: int = Field(default=30, ge=0, le=300)


class RegistrySettings(Strict):
    """Where partners, apps, clients and policies live once the hub runs (docs/admin.md).

    ``memory``: seeded from this file at every start, lost at exit (one process, demos).
    ``sqlite``: a file that survives restarts (one replica). ``redis``: shared by every
    replica (persist it with AOF or RDB): on the store's Redis, in the store's topology,
    unless ``url``, ``sentinel`` or ``cluster_nodes`` here say otherwise (the same keys as
    the store's; ``cluster: true`` with them for a Cluster).
    """

    backend: Literal["memory", "sqlite", "redis"] = "memory"
    path: Path | None = None
    url: str | None = None
    sentinel: SentinelSettings | None = None
    cluster: bool = False
    cluster_nodes: tuple[str, ...] = ()
    # Replicas poll the registry's revision this often: a change is live everywhere
    # within this interval (the replica that made it sees it at once).
    poll_seconds: float = Field(default=0.5, ge=0.05, le=5.0)
    # Audit events kept for search and export (oldest dropped first).
    audit_max_events: int = Field(default=200_000, ge=1000)

    @property
    def own_redis(self) -> bool:
        """True when the registry names its own Redis instead of following the store's."""
        return bool(self.url or self.sentinel or self.cluster_nodes)

    def cluster_addresses(self) -> tuple[tuple[str, int], ...]:
        return tuple(host_port(node) for node in self.cluster_nodes)


class AdminSettings(Strict):
    """Who may use the admin API and console: roles the intranet IdP asserts."""

    enabled: bool = True
    # An identity of an ``internal`` partner with this role (or group) is a hub admin.
    admin_role: str = "isthmus-admin"
    # Read-only admin: every document and the audit trail, no change.
    auditor_role: str = "isthmus-auditor"
    # Any partner's identity with this role administers its own partner only.
    partner_admin_role: str = "partner-admin"
    # The ids of the apps sponsors may grant; None: any app (an app's policy still
    # has to admit grants with `grant: valid`). Admins grant any app.
    sponsor_apps: tuple[str, ...] | None = None


class DnsSettings(Strict):
    """The resolver used to check domain-ownership TXT records (system resolver if empty)."""

    nameservers: tuple[str, ...] = ()
    port: int = Field(default=53, ge=1, le=65535)
    timeout_seconds: float = Field(default=5.0, gt=0, le=30)


class SmtpSettings(Strict):
    """The SMTP server the hub sends one-time codes through (``otp`` connections)."""

    host: str = "127.0.0.1"
    port: int = Field(default=25, ge=1, le=65535)
    starttls: bool = False
    username: str | None = None
    password: str | None = None
    from_address: str = "isthmus@localhost"
    timeout: float = Field(default=10.0, gt=0, le=60)


# Public mailbox providers: an address there proves no company, so no sign-up from them.
PUBLIC_MAIL_DOMAINS = (
    "gmail.com",
    "googlemail.com",
    "outlook.com",
    "hotmail.com",
    "live.com",
    "msn.com",
    "yahoo.com",
    "icloud.com",
    "me.com",
    "aol.com",
    "proton.me",
    "protonmail.com",
    "gmx.com",
    "gmx.de",
    "web.de",
    "mail.com",
    "yandex.ru",
    "orange.fr",
    "free.fr",
)


class SignupSettings(Strict):
    """Self-service sign-up (docs/signup.md): a person from an unknown company asks for
    access and names an internal sponsor, who approves or refuses in the console. Off
    unless enabled; nothing is granted before approval."""

    enabled: bool = False
    # Apps a requester may ask for (each must exist); the sponsor may approve fewer.
    apps: tuple[str, ...] = ()
    # The kind of partner an approval creates for a company not known yet.
    partner_kind: PartnerKind = PartnerKind.customer
    # Sponsors' email domains; empty: the verified domains of the internal partners.
    sponsor_domains: tuple[str, ...] = ()
    # Requesters' domains refused outright (public mailbox providers by default).
    blocked_domains: tuple[str, ...] = PUBLIC_MAIL_DOMAINS
    # A request nobody decided on is dropped after this many days.
    request_ttl_days: int = Field(default=14, ge=1, le=365)
    # The grant an approval makes: this long by default, never longer than the maximum.
    grant_days: int = Field(default=90, ge=1, le=3650)
    max_grant_days: int = Field(default=365, ge=1, le=3650)

    @field_validator("partner_kind")
    @classmethod
    def _not_internal(cls, kind: PartnerKind) -> PartnerKind:
        # An internal partner's people are staff (sponsors, its domains the sponsor
        # domains): a stranger's sign-up must never create one.
        if kind is PartnerKind.internal:
            raise ValueError("a sign-up never creates an internal partner")
        return kind


class LifecycleSettings(Strict):
    """The hub's periodic housekeeping (docs/lifecycle.md): access reviews opened and
    closed, grants of inactive accounts ended, stale sign-up requests dropped. Every
    replica runs it; one of them does the work of each interval."""

    enabled: bool = True
    interval_seconds: float = Field(default=300.0, ge=1.0, le=86_400.0)
    # A just-in-time account (an identity the hub has seen sign in) loses its grants
    # after this many days without a sign-in; None: never. Partners may override it.
    inactive_after_days: int | None = Field(default=90, ge=1, le=3650)


class ListenSettings(Strict):
    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=1, le=65535)
    # The HTTP server `isthmus serve` runs: uvicorn, or granian (the ``isthmus[granian]``
    # extra; ~1.3x the forward-auth decisions per core, docs/benchmarks.md).
    server: Literal["uvicorn", "granian"] = "uvicorn"


class TracingSettings(Strict):
    """OpenTelemetry traces (the ``isthmus[otel]`` extra): off unless enabled."""

    enabled: bool = False
    # OTLP over HTTP, e.g. http://otel-collector:4318/v1/traces. None: the exporter's own
    # default, or the OTEL_EXPORTER_OTLP_* environment variables.
    otlp_endpoint: str | None = None
    service_name: str = Field(default="isthmus", min_length=1)


class ObservabilitySettings(Strict):
    """Logs, metrics, readiness and shutdown (docs/operations.md)."""

    # json: one JSON object per line (containers); text: for a terminal.
    log_format: Literal["json", "text"] = "json"
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    # uvicorn's access log (one line per request) in the same format; the audit trail
    # already records every login and decision.
    access_log: bool = False
    # Audit events also as log lines (logger isthmus.audit), besides the audit log.
    audit_log_lines: bool = True
    metrics_enabled: bool = True
    metrics_path: str = "/metrics"
    # Peers (CIDRs) allowed to read the metrics; empty: any peer that reaches the port.
    metrics_allow: tuple[str, ...] = ()
    # /readyz: how long the store and the registry have to answer.
    readiness_timeout_seconds: float = Field(default=0.8, gt=0, le=10)
    # SIGTERM: /readyz answers 503 for this long while requests are still served (load
    # balancers take the replica out), then the listener closes and requests in flight
    # get up to graceful_timeout_seconds to finish.
    drain_seconds: float = Field(default=5.0, ge=0, le=300)
    graceful_timeout_seconds: int = Field(default=20, ge=0, le=3600)
    tracing: TracingSettings = TracingSettings()

    @field_validator("metrics_path")
    @classmethod
    def _metrics_path(cls, value: str) -> str:
        if not re.fullmatch(r"/[A-Za-z0-9._~-]+(/[A-Za-z0-9._~-]+)*", value):
            raise ValueError("must be a plain absolute path, like /metrics")
        if value in ("/healthz", "/readyz"):
            raise ValueError(f"{value} is the hub's own probe")
        return value

    @field_validator("metrics_allow")
    @classmethod
    def _networks(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for cidr in value:
            try:
                ipaddress.ip_network(cidr, strict=False)
            except ValueError:
                raise ValueError(f"{cidr!r} is not an IP network (CIDR)") from None
        return value


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        extra="forbid",
        frozen=True,
        env_prefix=ENV_PREFIX,
        env_nested_delimiter="__",
    )

    issuer: str = "http://127.0.0.1:8080"
    # Plain-http cookies (no Secure flag) only when the operator says so, for local use.
    allow_insecure_http: bool = False
    # Mock connections let anyone sign in as anyone: demo and tests only.
    allow_mock_connections: bool = False
    # Any request body larger than this is refused (413) before it is read in full.
    max_request_bytes: int = Field(default=1024 * 1024, ge=64 * 1024, le=64 * 1024 * 1024)
    listen: ListenSettings = ListenSettings()
    observability: ObservabilitySettings = ObservabilitySettings()
    store: StoreSettings = StoreSettings()
    keys: KeySettings = KeySettings()
    session: SessionSettings = SessionSettings()
    tokens: TokenSettings = TokenSettings()
    registry: RegistrySettings = RegistrySettings()
    admin: AdminSettings = AdminSettings()
    dns: DnsSettings = DnsSettings()
    smtp: SmtpSettings = SmtpSettings()
    signup: SignupSettings = SignupSettings()
    lifecycle: LifecycleSettings = LifecycleSettings()
    partners: tuple[PartnerSettings, ...] = ()
    clients: tuple[ClientSettings, ...] = ()
    apps: tuple[AppSettings, ...] = ()
    # Proxies whose X-Forwarded-For / X-Forwarded-Proto the hub believes (CIDRs); from any
    # other peer those headers are ignored (security invariant 6).
    trusted_proxies: tuple[str, ...] = ()

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The environment overrides the file (which arrives as init kwargs).
        return (env_settings, init_settings)

    def connections(self) -> Iterator[tuple[PartnerSettings, ConnectionSettings]]:
        for partner in self.partners:
            for connection in partner.connections:
                yield partner, connection


def load_settings(path: str | Path | None = None, env: Mapping[str, str] | None = None) -> Settings:
    """Read, validate and cross-check; raise :class:`ConfigError` listing every problem."""
    data: dict[str, Any] = {}
    if path is not None:
        data = _read_yaml(Path(path))
    environ = os.environ if env is None else env
    try:
        settings = _validate(data, environ)
    except ValidationError as exc:
        structural = [(_dotted(e["loc"]), e["msg"]) for e in exc.errors()]
        raise ConfigError(structural + _salvaged_problems(data, environ, exc)) from None
    problems = list(semantic_problems(settings))
    if problems:
        raise ConfigError(problems)
    return settings


_LISTS = ("partners", "clients")


def _salvaged_problems(
    data: dict[str, Any], environ: Mapping[str, str], exc: ValidationError
) -> list[tuple[str, str]]:
    """Cross-check what is structurally sound, so one run reports both kinds of problem.

    Entries with structural errors are set aside (a whole list item, or a top-level key);
    paths of the cross-check problems are mapped back to the file's own indices.
    """
    bad_items: dict[str, set[int]] = {name: set() for name in _LISTS}
    bad_keys: set[str] = set()
    for error in exc.errors():
        loc = error["loc"]
        if len(loc) > 1 and loc[0] in _LISTS and isinstance(loc[1], int):
            bad_items[str(loc[0])].add(loc[1])
        elif loc:
            bad_keys.add(str(loc[0]))
    sound = {k: v for k, v in data.items() if k not in bad_keys}
    kept: dict[str, list[int]] = {}
    for name in _LISTS:
        items = sound.get(name)
        if isinstance(items, list):
            kept[name] = [i for i in range(len(items)) if i not in bad_items[name]]
            sound[name] = [items[i] for i in kept[name]]
    try:
        settings = _validate(sound, environ)
    except ValidationError:
        return []
    return [(_original_path(path, kept), msg) for path, msg in semantic_problems(settings)]


def _original_path(path: str, kept: Mapping[str, list[int]]) -> str:
    head, _, rest = path.partition(".")
    index, _, tail = rest.partition(".")
    if head not in kept or not index.isdigit():
        return path
    original = f"{head}.{kept[head][int(index)]}"
    return f"{original}.{tail}" if tail else original


def _validate(data: dict[str, Any], environ: Mapping[str, str]) -> Settings:
    saved = {k: v for k, v in os.environ.items() if k.startswith(ENV_PREFIX)}
    if environ is not os.environ:
        for key in saved:
            del os.environ[key]
        os.environ.update({k: v for k, v in environ.items() if k.startswith(ENV_PREFIX)})
    try:
        return Settings(**data)
    finally:
        if environ is not os.environ:
            for key in [k for k in os.environ if k.startswith(ENV_PREFIX)]:
                del os.environ[key]
            os.environ.update(saved)


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError([("", f"cannot read {path}: {exc.strerror}")]) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError([("", f"{path} is not valid YAML: {exc}")]) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError([("", f"{path} must hold a mapping at the top level")])
    return data


def _dotted(loc: tuple[int | str, ...]) -> str:
    # Drop pydantic's union-tag segments ("oidc", "mock", ...) that are not file keys.
    parts = [str(p) for p in loc if p not in ("oidc", "mock", "saml", "keycloak", "otp")]
    return ".".join(parts)


def _is_domain(value: str) -> bool:
    labels = value.rstrip(".").split(".")
    return len(labels) >= 2 and all(
        0 < len(label) <= 63
        and label.replace("-", "").isalnum()
        and label.isascii()
        and not label.startswith("-")
        and not label.endswith("-")
        for label in labels
    )


def semantic_problems(settings: Settings) -> Iterator[tuple[str, str]]:
    yield from _url_problems("issuer", settings.issuer, settings, allow_path=True)
    yield from _store_problems(settings)
    yield from _partner_problems(settings)
    yield from _client_problems(settings)
    yield from _app_problems(settings)
    yield from _cookie_domain_problems(settings)
    for i, cidr in enumerate(settings.trusted_proxies):
        try:
            ipaddress.ip_network(cidr, strict=False)
        except ValueError:
            yield f"trusted_proxies.{i}", f"{cidr!r} is not an IP network (CIDR)"


def host_port(value: str) -> tuple[str, int]:
    """``host:port`` (``[v6]:port`` for an IPv6 address) as a pair; ValueError if not."""
    host, sep, port = value.strip().rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{value!r} is not host:port")
    return host, int(port)


def _store_problems(settings: Settings) -> Iterator[tuple[str, str]]:
    """The store's Redis and the registry's: one topology each, consistently given."""
    store, registry = settings.store, settings.registry
    yield from _redis_problems("store", store)
    store_has_redis = bool(store.url or store.sentinel or store.cluster_nodes)
    if store.cluster and not (store.url or store.cluster_nodes or store.sentinel):
        message = "required with store.cluster: true (any node), or give store.cluster_nodes"
        yield "store.url", message
    elif store.backend == "redis" and not store_has_redis:
        yield "store.url", "required when store.backend is 'redis' (or give store.sentinel)"
    if registry.backend == "sqlite" and registry.path is None:
        yield "registry.path", "required when registry.backend is 'sqlite'"
    yield from _redis_problems("registry", registry)
    if registry.backend == "redis" and not (registry.own_redis or store_has_redis):
        message = (
            "required when registry.backend is 'redis' (or give registry.sentinel, or set "
            "store.url or store.sentinel: the registry follows the store's Redis)"
        )
        yield "registry.url", message
    if registry.cluster and not registry.own_redis:
        message = (
            "needs registry.url or registry.cluster_nodes; without them the registry "
            "follows the store's topology (store.cluster)"
        )
        yield "registry.cluster", message


def _redis_problems(
    where: str, redis: StoreSettings | RegistrySettings
) -> Iterator[tuple[str, str]]:
    if redis.sentinel is not None:
        if redis.url:
            message = (
                f"give {where}.url (one server or a Cluster node) or {where}.sentinel "
                "(the sentinels find the master), not both"
            )
            yield f"{where}.sentinel", message
        if redis.cluster or redis.cluster_nodes:
            message = "Sentinel and Cluster exclude each other: a Cluster fails over by itself"
            yield f"{where}.cluster", message
        for i, host in enumerate(redis.sentinel.hosts):
            if not _is_host_port(host):
                yield f"{where}.sentinel.hosts.{i}", f"{host!r} must be host:port"
    if redis.cluster_nodes and not redis.cluster:
        yield f"{where}.cluster_nodes", f"only with {where}.cluster: true"
    for i, node in enumerate(redis.cluster_nodes):
        if not _is_host_port(node):
            yield f"{where}.cluster_nodes.{i}", f"{node!r} must be host:port"
    if redis.url:
        yield from _redis_url_problems(f"{where}.url", redis.url, cluster=redis.cluster)


def _redis_url_problems(where: str, url: str, *, cluster: bool) -> Iterator[tuple[str, str]]:
    parts = urlsplit(url)
    if parts.scheme not in ("redis", "rediss", "unix"):
        yield where, "must be a redis://, rediss:// or unix:// URL (Sentinel: see sentinel)"
        return
    if parts.scheme == "unix":
        if not parts.path:
            yield where, "a unix:// URL needs the socket's path"
        if cluster:
            yield where, "a Cluster is reached over TCP: redis:// or rediss://"
        return
    try:
        parts.port  # noqa: B018 - raises on a bad port
    except ValueError:
        yield where, "has a port that is not a number in 1-65535"
        return
    if cluster and parts.path.strip("/") not in ("", "0"):
        yield where, "a Cluster has database 0 only"


def _is_host_port(value: str) -> bool:
    try:
        host_port(value)
    except ValueError:
        return False
    return True


def _app_problems(settings: Settings) -> Iterator[tuple[str, str]]:
    seen: set[str] = set()
    for i, app in enumerate(settings.apps):
        where = f"apps.{i}"
        if app.id in seen:
            yield f"{where}.id", f"app id {app.id!r} is used twice"
        seen.add(app.id)
        if not app.path_prefix.startswith("/"):
            yield f"{where}.path_prefix", "must start with /"
        for j, upstream in enumerate(app.upstreams):
            parts = urlsplit(upstream)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                yield f"{where}.upstreams.{j}", f"{upstream!r} must be an absolute http(s) URL"
        if app.policy is not None and app.policy_file is not None:
            yield f"{where}.policy", "give policy or policy_file, not both"
        if app.policy_file is not None and not Path(app.policy_file).is_file():
            yield f"{where}.policy_file", f"{app.policy_file} is not a readable file"
        for host in app.hosts:
            if not _is_domain(host.split(":")[0]) and host.split(":")[0] not in ("localhost",):
                try:
                    ipaddress.ip_address(host.split(":")[0])
                except ValueError:
                    yield f"{where}.hosts", f"{host!r} is not a host name"


def _cookie_domain_problems(settings: Settings) -> Iterator[tuple[str, str]]:
    """The session cookie must reach the hub (else nobody stays signed in) and every app
    host the proxy serves (else its users loop through the login)."""
    hub_host = (urlsplit(settings.issuer).hostname or "").lower()
    domain = (settings.session.cookie_domain or "").lower().strip(".")
    if settings.session.cookie_domain is not None and not _under(hub_host, domain):
        yield "session.cookie_domain", f"the hub's host {hub_host!r} is not under {domain!r}"
    for i, app in enumerate(settings.apps):
        for host in app.hosts:
            name = host.split(":")[0].lower()
            if name == hub_host or (domain and _under(name, domain)):
                continue
            yield (
                f"apps.{i}.hosts",
                f"the session cookie does not reach {host!r}: serve the app on the hub's host "
                "by path prefix, or set session.cookie_domain to a domain above both",
            )


def _under(host: str, domain: str) -> bool:
    return bool(domain) and (host == domain or host.endswith("." + domain))


def _partner_problems(settings: Settings) -> Iterator[tuple[str, str]]:
    seen_partners: set[str] = set()
    seen_connections: dict[str, str] = {}
    domain_owner: dict[str, str] = {}
    for i, partner in enumerate(settings.partners):
        where = f"partners.{i}"
        if partner.id in seen_partners:
            yield f"{where}.id", f"partner id {partner.id!r} is used twice"
        seen_partners.add(partner.id)
        for domain in partner.domains:
            owner = domain_owner.setdefault(domain, partner.id)
            if owner != partner.id:
                yield f"{where}.domains", f"domain {domain!r} is already claimed by {owner!r}"
        window = partner.contract
        if window.valid_from and window.valid_until and window.valid_until <= window.valid_from:
            yield f"{where}.contract.valid_until", "must be after valid_from"
        for j, connection in enumerate(partner.connections):
            cwhere = f"{where}.connections.{j}"
            if connection.id in seen_connections:
                yield f"{cwhere}.id", f"connection id {connection.id!r} is used twice"
            seen_connections[connection.id] = partner.id
            yield from _connection_problems(cwhere, connection, settings)
            if isinstance(connection, KeycloakConnectionSettings):
                yield from _keycloak_partner_problems(cwhere, partner)


def _connection_problems(
    where: str, connection: ConnectionSettings, settings: Settings
) -> Iterator[tuple[str, str]]:
    if isinstance(connection, MockConnectionSettings):
        if not settings.allow_mock_connections:
            yield f"{where}.type", "mock connections need allow_mock_connections: true (demo only)"
        return
    if isinstance(connection, SamlConnectionSettings):
        yield from _saml_problems(where, connection, settings)
        return
    if isinstance(connection, KeycloakConnectionSettings):
        yield from _keycloak_problems(where, connection, settings)
        return
    if isinstance(connection, OtpConnectionSettings):
        return  # the hub serves its pages; only the partner's verified domains matter
    yield from _url_problems(f"{where}.issuer", connection.issuer, settings, allow_path=True)
    needs_secret = connection.token_endpoint_auth_method != "none"
    if needs_secret and not connection.client_secret:
        yield (
            f"{where}.client_secret",
            (f"required with token_endpoint_auth_method {connection.token_endpoint_auth_method!r}"),
        )
    if "openid" not in connection.scopes:
        yield f"{where}.scopes", "must include 'openid'"
    if not connection.algorithms:
        yield f"{where}.algorithms", "list at least one signing algorithm"


def _saml_problems(
    where: str, connection: SamlConnectionSettings, settings: Settings
) -> Iterator[tuple[str, str]]:
    sources = [
        connection.idp_metadata_url,
        connection.idp_metadata_file,
        connection.idp_metadata_xml,
    ]
    if sum(source is not None for source in sources) != 1:
        yield where, "give exactly one of idp_metadata_url, idp_metadata_file, idp_metadata_xml"
    if connection.idp_metadata_url is not None:
        yield from _url_problems(
            f"{where}.idp_metadata_url", connection.idp_metadata_url, settings, allow_path=True
        )
    for name in ("idp_metadata_file", "sp_key_file", "sp_cert_file"):
        path = getattr(connection, name)
        if path is not None and not Path(path).is_file():
            yield f"{where}.{name}", f"{path} is not a readable file"
    if (connection.sp_key_file is None) != (connection.sp_cert_file is None):
        yield f"{where}.sp_key_file", "give both sp_key_file and sp_cert_file, or neither"
    # A SAMLResponse arrives base64-encoded in a form: 4/3 of its size, plus the form.
    if connection.max_response_bytes * 4 // 3 + 16 * 1024 > settings.max_request_bytes:
        yield (
            f"{where}.max_response_bytes",
            (
                f"a response this large would not fit in max_request_bytes "
                f"({settings.max_request_bytes}); raise that too"
            ),
        )
    if not connection.idp_initiated_return_url.startswith("/"):
        yield f"{where}.idp_initiated_return_url", "must be a path on the hub, like /apps"


def _keycloak_problems(
    where: str, connection: KeycloakConnectionSettings, settings: Settings
) -> Iterator[tuple[str, str]]:
    url = connection.server_url
    yield from _url_problems(f"{where}.server_url", url, settings, allow_path=True)
    if "/realms/" in f"{urlsplit(url).path}/":
        yield f"{where}.server_url", "give Keycloak's base URL, without /realms/...: set realm"
    if "openid" not in connection.scopes:
        yield f"{where}.scopes", "must include 'openid'"
    if not connection.algorithms:
        yield f"{where}.algorithms", "list at least one signing algorithm"
    for i, client in enumerate(connection.client_roles_from):
        if not client:
            yield f"{where}.client_roles_from.{i}", "must be a client id of the realm"


def _keycloak_partner_problems(where: str, partner: PartnerSettings) -> Iterator[tuple[str, str]]:
    if partner.kind is not PartnerKind.internal:
        yield (
            f"{where}.type",
            (
                f"keycloak connections are for the company's own staff (partner kind "
                f"'internal', not {partner.kind.value!r}); a partner running Keycloak is an "
                "'oidc' or 'saml' connection (docs/keycloak.md)"
            ),
        )


def _client_problems(settings: Settings) -> Iterator[tuple[str, str]]:
    seen: set[str] = set()
    for i, client in enumerate(settings.clients):
        where = f"clients.{i}"
        if client.client_id in seen:
            yield f"{where}.client_id", f"client id {client.client_id!r} is used twice"
        seen.add(client.client_id)
        if client.public and client.client_secret:
            yield f"{where}.client_secret", "a public client (auth method 'none') has no secret"
        if not client.public and not client.client_secret:
            yield f"{where}.client_secret", "required for a confidential client"
        if "openid" not in client.scopes:
            yield f"{where}.scopes", "must include 'openid'"
        for j, uri in enumerate(client.redirect_uris):
            yield from _url_problems(f"{where}.redirect_uris.{j}", uri, settings, allow_path=True)
        for j, uri in enumerate(client.post_logout_redirect_uris):
            yield from _url_problems(
                f"{where}.post_logout_redirect_uris.{j}", uri, settings, allow_path=True
            )
        if client.backchannel_logout_uri is not None:
            yield from _url_problems(
                f"{where}.backchannel_logout_uri",
                client.backchannel_logout_uri,
                settings,
                allow_path=True,
            )


def _url_problems(
    where: str, url: str, settings: Settings, *, allow_path: bool
) -> Iterator[tuple[str, str]]:
    parts = urlsplit(url)
    if parts.scheme not in ("https", "http") or not parts.hostname:
        yield where, f"{url!r} must be an absolute http(s) URL"
        return
    if parts.fragment or "#" in url:
        yield where, "must not contain a fragment"
    if parts.username or parts.password:
        yield where, "must not contain user information"
    if parts.scheme == "http" and not (
        settings.allow_insecure_http or parts.hostname in ("127.0.0.1", "localhost", "::1")
    ):
        yield where, "plain http needs allow_insecure_http: true (local use only)"
    if not allow_path and parts.path not in ("", "/"):
        yield where, "must not have a path"


def now_utc() -> datetime:
    return datetime.now(UTC)
