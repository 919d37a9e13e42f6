"""``isthmus keycloak import`` (federation/migrate/) on recorded admin API answers.

The answers were recorded from Keycloak 26.5.6 serving the migration realm
(tests/peers/keycloak/realms/migration.json; the SAML signing certificate is made fresh
here) and are served behind python-keycloak by an ``httpx.MockTransport``. The mapping's
branches run on small snapshots built from Keycloak-shaped answers. The real Keycloak:
tests/integration/test_keycloak_import.py.
"""

from __future__ import annotations

import base64
import copy
import datetime as dt
import itertools
import json
import re
import stat
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from cryptography.hazmat.primitives.serialization import Encoding
from keycloak import KeycloakAdmin
from typer.testing import CliRunner

from connectors.saml._pysaml2 import BINDING_HTTP_POST, BINDING_HTTP_REDIRECT
from connectors.saml.keys import self_signed
from connectors.saml.metadata import parse_idp_metadata
from federation import cli
from federation.admin.catalog import validate_spec
from federation.admin.domains import challenge_name, challenge_value
from federation.migrate import cli as migrate_cli
from federation.migrate.keycloak import (
    IdentityProvider,
    KeycloakImportError,
    Organization,
    RealmSnapshot,
    close,
    connect,
    read_realm,
)
from federation.migrate.output import REPORT_FILE, previous_import, write_import
from federation.migrate.partners import (
    ImportOptions,
    ImportResult,
    PreviousImport,
    build_import,
    slug,
)
from federation.settings import PartnerKind

SERVER = "https://sso.example.com"
REALM = "migration"
ACME = "3ef20cb7-886b-4ac2-b94c-0c46053695b4"
GLOBEX = "6e70fdd7-ff6c-405a-b12c-f271574a8ae0"
NOW = dt.datetime(2026, 3, 1, 12, 0, tzinfo=dt.UTC)
_NOW = dt.datetime.now(dt.UTC)
_, _CERT = self_signed(
    "idp.globex.example",
    not_before=_NOW - dt.timedelta(days=1),
    not_after=_NOW + dt.timedelta(days=365),
)
CERT = base64.b64encode(_CERT.public_bytes(Encoding.DER)).decode()
runner = CliRunner()

# --- recorded answers -----------------------------------------------------------------------

ACME_OIDC: dict[str, Any] = {
    "alias": "acme-oidc",
    "displayName": "Acme staff",
    "providerId": "oidc",
    "enabled": True,
    "trustEmail": True,
    "firstBrokerLoginFlowAlias": "first broker login",
    "organizationId": ACME,
    "config": {
        "validateSignature": "true",
        "clientId": "keycloak-broker",
        "tokenUrl": "https://idp.acme.example/realms/acme/protocol/openid-connect/token",
        "jwksUrl": "https://idp.acme.example/realms/acme/protocol/openid-connect/certs",
        "pkceMethod": "S256",
        "useJwksUrl": "true",
        "pkceEnabled": "true",
        "clientAuthMethod": "client_secret_post",
        "authorizationUrl": "https://idp.acme.example/realms/acme/protocol/openid-connect/auth",
        "syncMode": "IMPORT",
        "clientSecret": "**********",
        "defaultScope": "openid email profile groups",
    },
}
GITHUB: dict[str, Any] = {
    "alias": "github",
    "providerId": "github",
    "enabled": True,
    "config": {"syncMode": "IMPORT", "clientSecret": "**********", "clientId": "gh-client"},
}
GLOBEX_SAML: dict[str, Any] = {
    "alias": "globex-saml",
    "displayName": "Globex SSO",
    "providerId": "saml",
    "enabled": True,
    "trustEmail": False,
    "firstBrokerLoginFlowAlias": "first broker login",
    "organizationId": GLOBEX,
    "config": {
        "validateSignature": "true",
        "signingCertificate": CERT,
        "singleLogoutServiceUrl": "https://idp.globex.example/saml/slo",
        "nameIDPolicyFormat": "urn:oasis:names:tc:SAML:2.0:nameid-format:persistent",
        "postBindingResponse": "true",
        "idpEntityId": "https://idp.globex.example/saml",
        "wantAssertionsSigned": "true",
        "postBindingAuthnRequest": "true",
        "syncMode": "IMPORT",
        "singleSignOnServiceUrl": "https://idp.globex.example/saml/sso",
        "wantAuthnRequestsSigned": "true",
        "principalType": "SUBJECT",
    },
}
ACME_ORG: dict[str, Any] = {
    "id": ACME,
    "name": "Acme Corp",
    "alias": "acme",
    "enabled": True,
    "description": "Parts supplier",
    "attributes": {"isthmus.kind": ["distributor"]},
    "domains": [
        {"name": "acme.example", "verified": True},
        {"name": "acme-corp.example", "verified": False},
    ],
}
GLOBEX_ORG: dict[str, Any] = {
    "id": GLOBEX,
    "name": "Globex Industries",
    "alias": "globex",
    "enabled": True,
    "attributes": {},
    "domains": [
        {"name": "globex-labs.example", "verified": False},
        {"name": "globex.example", "verified": True},
    ],
}


def _mapper(name: str, idp: str, kind: str, **config: str) -> dict[str, Any]:
    return {
        "id": f"id-{name}",
        "name": name,
        "identityProviderAlias": idp,
        "identityProviderMapper": kind,
        "config": {"syncMode": "INHERIT", **config},
    }


def attribute_mapper(name: str, protocol: str, attribute: str, **config: str) -> dict[str, Any]:
    """A user-attribute mapper of IdP ``idp`` feeding the Keycloak user attribute."""
    kind = f"{protocol}-user-attribute-idp-mapper"
    return _mapper(name, "idp", kind, **{"user.attribute": attribute}, **config)


ACME_MAPPERS = [
    _mapper(
        "buyer role",
        "acme-oidc",
        "oidc-role-idp-mapper",
        claim="department",
        role="buyer",
        **{"claim.value": "purchasing"},
    ),
    _mapper(
        "groups",
        "acme-oidc",
        "oidc-user-attribute-idp-mapper",
        claim="memberships",
        **{"user.attribute": "groups"},
    ),
    _mapper(
        "email",
        "acme-oidc",
        "oidc-user-attribute-idp-mapper",
        claim="mail",
        **{"user.attribute": "email"},
    ),
]
GLOBEX_MAPPERS = [
    _mapper(
        "display name",
        "globex-saml",
        "saml-user-attribute-idp-mapper",
        **{"user.attribute": "name", "attribute.friendly.name": "displayName"},
    ),
    _mapper(
        "email",
        "globex-saml",
        "saml-user-attribute-idp-mapper",
        **{"user.attribute": "email", "attribute.name": "urn:oid:0.9.2342.19200300.100.1.3"},
    ),
    _mapper(
        "partner flag",
        "globex-saml",
        "hardcoded-attribute-idp-mapper",
        attribute="partner",
        **{"attribute.value": "globex"},
    ),
]


def recorded() -> dict[str, Any]:
    """The admin API's answers by path (a fresh copy: tests change them)."""
    base = f"/admin/realms/{REALM}"
    brief = [{k: v for k, v in org.items() if k != "attributes"} for org in (ACME_ORG, GLOBEX_ORG)]
    return copy.deepcopy(
        {
            base: {"realm": REALM, "enabled": True, "organizationsEnabled": True},
            f"{base}/identity-provider/instances": [ACME_OIDC, GITHUB, GLOBEX_SAML],
            f"{base}/identity-provider/instances/acme-oidc/mappers": ACME_MAPPERS,
            f"{base}/identity-provider/instances/github/mappers": [],
            f"{base}/identity-provider/instances/globex-saml/mappers": GLOBEX_MAPPERS,
            f"{base}/organizations": brief,
            f"{base}/organizations/{ACME}": ACME_ORG,
            f"{base}/organizations/{ACME}/identity-providers": [ACME_OIDC],
            f"{base}/organizations/{GLOBEX}": GLOBEX_ORG,
            f"{base}/organizations/{GLOBEX}/identity-providers": [GLOBEX_SAML],
        }
    )


class FakeKeycloak:
    """The recorded answers behind an ``httpx.MockTransport``; ``fail`` maps a path to the
    status it answers instead; every request is kept."""

    def __init__(
        self,
        answers: Mapping[str, Any] | None = None,
        *,
        token_status: int = 200,
        fail: Mapping[str, int] | None = None,
        unreachable: bool = False,
    ) -> None:
        self.answers = recorded() if answers is None else dict(answers)
        self.token_status = token_status
        self.fail = dict(fail or {})
        self.unreachable = unreachable
        self.requests: list[httpx.Request] = []

    def handler(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if self.unreachable:
            raise httpx.ConnectError("connection refused", request=request)
        path = request.url.path
        if path == f"/realms/{REALM}/protocol/openid-connect/token":
            if self.token_status != 200:
                body = {"error": "unauthorized_client", "error_description": "Invalid client"}
                return httpx.Response(self.token_status, json=body)
            return httpx.Response(
                200, json={"access_token": "admin-token", "expires_in": 300, "token_type": "Bearer"}
            )
        if path in self.fail:
            return httpx.Response(self.fail[path], json={"error": f"HTTP {self.fail[path]}"})
        if path not in self.answers:
            return httpx.Response(404, json={"error": "Could not find resource"})
        answer = self.answers[path]
        if isinstance(answer, list) and "first" in request.url.params:
            first, size = int(request.url.params["first"]), int(request.url.params["max"])
            answer = answer[first : first + size]
        return httpx.Response(200, json=answer)

    def admin(self) -> KeycloakAdmin:
        admin = connect(SERVER, REALM, "isthmus-import", "s3cret")
        client = httpx.AsyncClient(transport=httpx.MockTransport(self.handler))
        admin.connection.async_s = client
        admin.connection.keycloak_openid.connection.async_s = client
        return admin


async def read(fake: FakeKeycloak) -> RealmSnapshot:
    admin = fake.admin()
    try:
        return await read_realm(admin, SERVER, REALM)
    finally:
        await close(admin)


def tokens() -> Callable[[], str]:
    counter = itertools.count(1)
    return lambda: f"token-{next(counter):026d}"


def options(**overrides: Any) -> ImportOptions:
    values: dict[str, Any] = {"now": NOW, "new_token": tokens()}
    values.update(overrides)
    return ImportOptions(**values)


def snapshot(
    orgs: Iterable[tuple[Mapping[str, Any], Iterable[str]]],
    idps: Iterable[Mapping[str, Any] | tuple[Mapping[str, Any], list[dict[str, Any]]]],
) -> RealmSnapshot:
    parsed = []
    for item in idps:
        rep, mappers = item if isinstance(item, tuple) else (item, [])
        parsed.append(IdentityProvider.from_api(rep, mappers))
    organizations = [
        Organization.from_api(rep, [{"alias": a} for a in linked]) for rep, linked in orgs
    ]
    return RealmSnapshot(SERVER, REALM, tuple(organizations), tuple(parsed))


def org(alias: str, org_id: str | None = None, **extra: Any) -> dict[str, Any]:
    return {"id": org_id or f"id-{alias}", "alias": alias, "name": alias.title(), **extra}


def oidc(alias: str, organization: str | None = None, **config: str) -> dict[str, Any]:
    values = {"clientId": "hub", "issuer": f"https://{alias}.example"}
    values.update(config)
    rep: dict[str, Any] = {"alias": alias, "providerId": "oidc", "enabled": True, "config": values}
    if organization:
        rep["organizationId"] = organization
    return rep


def saml(alias: str, **config: str) -> dict[str, Any]:
    values = {
        "idpEntityId": f"https://{alias}.example/idp",
        "singleSignOnServiceUrl": f"https://{alias}.example/sso",
        "signingCertificate": CERT,
        "validateSignature": "true",
    }
    values.update(config)
    return {"alias": alias, "providerId": "saml", "enabled": True, "config": values}


def one_connection(result: ImportResult, partner: str = "p") -> dict[str, Any]:
    specs = {doc_id: spec for _, doc_id, spec in result.documents}
    connections: list[dict[str, Any]] = specs[partner]["connections"]
    assert len(connections) == 1
    return connections[0]


def report_of(result: ImportResult, partner: str = "p") -> Any:
    return next(p for p in result.report.partners if p.id == partner)


def notes_text(items: Iterable[str]) -> str:
    return "\n".join(items)


def certs(values: Iterable[str]) -> list[str]:
    """Certificates as one base64 line each (pysaml2 gives them wrapped)."""
    return ["".join(value.split()) for value in values]


def plain(text: str) -> str:
    """A usage error's panel as one line of words."""
    return " ".join(re.sub(r"[│╭╰╮╯─]", " ", text).split())


# --- reading the realm ----------------------------------------------------------------------


async def test_reads_the_realm_with_get_requests_only() -> None:
    fake = FakeKeycloak()
    realm = await read(fake)

    assert [o.alias for o in realm.organizations] == ["acme", "globex"]
    acme = realm.organizations[0]
    assert acme.attributes == {"isthmus.kind": ("distributor",)}  # the full representation's
    assert acme.domains == (("acme-corp.example", False), ("acme.example", True))
    assert acme.identity_providers == ("acme-oidc",)
    assert [i.alias for i in realm.identity_providers] == ["acme-oidc", "github", "globex-saml"]
    assert [m.name for m in realm.identity_providers[0].mappers] == [
        "buyer role",
        "email",
        "groups",
    ]
    token, *admin_calls = fake.requests
    assert token.method == "POST" and b"grant_type=client_credentials" in token.content
    assert {r.method for r in admin_calls} == {"GET"}  # the import only reads
    assert all(r.headers["authorization"] == "Bearer admin-token" for r in admin_calls)


@pytest.mark.parametrize(
    ("fake", "expected"),
    [
        (
            FakeKeycloak(token_status=401),
            "Keycloak refused the credentials of client 'isthmus-import'",
        ),
        (
            FakeKeycloak(fail={f"/admin/realms/{REALM}/organizations": 403}),
            "list the organizations of realm 'migration' at https://sso.example.com (role "
            "manage-realm: Keycloak requires it to read organizations): HTTP 403: the service "
            "account of client 'isthmus-import' lacks the role",
        ),
        (
            FakeKeycloak(fail={f"/admin/realms/{REALM}/identity-provider/instances": 403}),
            "(role view-identity-providers): HTTP 403",
        ),
        (
            FakeKeycloak(fail={f"/admin/realms/{REALM}": 404}),
            "HTTP 404: not found (check the server URL and the realm name)",
        ),
        (FakeKeycloak(unreachable=True), "Keycloak unreachable"),
    ],
    ids=["credentials", "organizations-role", "idp-role", "no-realm", "unreachable"],
)
async def test_an_unreadable_realm_says_which_step_failed(
    fake: FakeKeycloak, expected: str
) -> None:
    with pytest.raises(KeycloakImportError) as caught:
        await read(fake)
    assert expected in str(caught.value)


async def test_a_realm_without_organizations_is_refused() -> None:
    answers = recorded()
    answers[f"/admin/realms/{REALM}"]["organizationsEnabled"] = False
    with pytest.raises(KeycloakImportError, match="Organizations are not enabled in realm"):
        await read(FakeKeycloak(answers))


async def test_organizations_are_read_page_by_page() -> None:
    answers = recorded()
    base = f"/admin/realms/{REALM}/organizations"
    many = [org(f"org{n:03d}") for n in range(105)]  # python-keycloak pages by 100
    answers[base] = many
    for item in many:
        answers[f"{base}/{item['id']}"] = item
        answers[f"{base}/{item['id']}/identity-providers"] = []
    realm = await read(FakeKeycloak(answers))
    assert len(realm.organizations) == 105


# --- the recorded realm, mapped -------------------------------------------------------------


async def test_the_recorded_realm_becomes_two_invited_partners() -> None:
    result = build_import(await read(FakeKeycloak()), options())

    specs = {doc_id: spec for kind, doc_id, spec in result.documents if kind == "partner"}
    assert set(specs) == {"acme", "globex"}
    assert specs["acme"] == {
        "id": "acme",
        "name": "Acme Corp",
        "kind": "distributor",
        "status": "invited",
        "pending_domains": [
            {
                "name": "acme-corp.example",
                "token": f"token-{1:026d}",
                "requested_at": NOW.isoformat(),
            },
            {"name": "acme.example", "token": f"token-{2:026d}", "requested_at": NOW.isoformat()},
        ],
        "connections": [
            {
                "type": "oidc",
                "id": "acme-oidc",
                "display_name": "Acme staff",
                "issuer": "https://idp.acme.example/realms/acme",
                "client_id": "keycloak-broker",
                "client_secret": None,
                "token_endpoint_auth_method": "client_secret_post",
                "scopes": ["openid", "email", "profile", "groups"],
                "claims": {"email": "mail", "groups": "memberships"},
            }
        ],
    }
    globex = specs["globex"]
    assert globex["kind"] == "supplier"
    assert [p["name"] for p in globex["pending_domains"]] == [
        "globex-labs.example",
        "globex.example",
    ]
    (saml_connection,) = globex["connections"]
    metadata = saml_connection.pop("idp_metadata_xml")
    assert saml_connection == {
        "type": "saml",
        "id": "globex-saml",
        "display_name": "Globex SSO",
        "authn_request_binding": "post",
        "sign_authn_requests": True,
        "want_assertions_signed": True,
        "name_id_format": "urn:oasis:names:tc:SAML:2.0:nameid-format:persistent",
        "attributes": {
            "email": ["urn:oid:0.9.2342.19200300.100.1.3"],
            "name": ["displayName"],
        },
        "email_verified": False,  # Trust Email was off
    }
    idp = parse_idp_metadata(metadata)
    assert idp.entity_id == "https://idp.globex.example/saml"
    assert idp.sso == {BINDING_HTTP_POST: "https://idp.globex.example/saml/sso"}
    assert idp.slo == {BINDING_HTTP_REDIRECT: "https://idp.globex.example/saml/slo"}
    assert certs(idp.signing_certs) == [CERT]
    assert idp.want_authn_requests_signed is True
    for kind, doc_id, spec in result.documents:
        assert validate_spec(kind, doc_id, spec)[1] == []


async def test_the_report_names_the_unlinked_provider_and_the_missing_secret() -> None:
    result = build_import(await read(FakeKeycloak()), options())
    report = result.report

    assert [(s.what, s.name, s.provider_id) for s in report.skipped] == [
        ("identity provider", "github", "github")
    ]
    assert "social login (github), linked to no organization" in report.skipped[0].reason
    assert "partners/acme.yaml: acme-oidc" in report.todo[0]
    acme = report_of(result, "acme")
    (connection,) = acme.connections
    assert connection.secret_missing
    assert "client secret: Keycloak never reveals it" in connection.notes.not_carried
    not_carried = notes_text(connection.notes.not_carried)
    assert "mapper 'buyer role' (oidc-role-idp-mapper): gives the Keycloak role 'buyer'" in (
        not_carried
    )
    assert "Trust Email" in not_carried
    todo = notes_text(connection.notes.todo)
    assert "register the hub's redirect URI {issuer}/callback/acme-oidc" in todo
    assert "confirm the issuer https://idp.acme.example/realms/acme" in todo
    record = f'{challenge_name("acme.example")}.  IN  TXT  "{challenge_value(f"token-{2:026d}")}"'
    assert f"have the partner publish {record}" in notes_text(acme.notes.todo)
    assert "`isthmus partners activate acme`" in acme.notes.todo[-1]
    globex = report_of(result, "globex")
    assert "hardcoded-attribute-idp-mapper" in notes_text(globex.connections[0].notes.not_carried)
    assert "{issuer}/saml/globex-saml/metadata" in notes_text(globex.connections[0].notes.todo)
    text = report.markdown()
    for expected in (
        "# Keycloak import: realm `migration` at https://sso.example.com",
        "wrote 2 partners with 2 connections",
        "## Partner `acme`: Acme Corp (distributor)",
        "### Connection `acme-oidc` (oidc), from identity provider `acme-oidc` (oidc)",
        "## Not imported",
        "| identity provider | `github` | github | social login (github)",
    ):
        assert expected in text
    as_json = json.loads(json.dumps(report.to_dict()))
    assert as_json["read"] == {"organizations": 2, "identity_providers": 3}
    assert as_json["partners"][0]["connections"][0]["secret_missing"] is True
    assert as_json["skipped"][0]["name"] == "github"


# --- partners -------------------------------------------------------------------------------


def test_domains_are_pending_unless_verified_ones_are_trusted() -> None:
    domains = [{"name": "a.example", "verified": True}, {"name": "b.example", "verified": False}]
    realm = snapshot([(org("p", domains=domains), [])], [])

    cautious = build_import(realm, options())
    (spec,) = (s for _, _, s in cautious.documents)
    assert "domains" not in spec
    assert [p["name"] for p in spec["pending_domains"]] == ["a.example", "b.example"]
    assert "not a proof" in notes_text(report_of(cautious).notes.carried)

    trusting = build_import(realm, options(trust_verified_domains=True))
    (spec,) = (s for _, _, s in trusting.documents)
    assert spec["domains"] == ["a.example"]
    assert [p["name"] for p in spec["pending_domains"]] == ["b.example"]
    assert "taken as verified because of --trust-verified-domains" in notes_text(
        report_of(trusting).notes.carried
    )


def test_odd_domains_are_reported_and_a_partner_without_domains_gets_a_to_do() -> None:
    odd = [
        {"name": "*.acme.example", "verified": True},
        {"name": "Acme.Example.", "verified": False},
    ]
    result = build_import(snapshot([(org("p", domains=odd), [])], []), options())
    (spec,) = (s for _, _, s in result.documents)
    assert spec["pending_domains"][0]["name"] == "acme.example"
    assert "domain '*.acme.example': not a domain name" in notes_text(
        report_of(result).notes.not_carried
    )

    bare = build_import(snapshot([(org("p"), [])], []), options())
    todo = notes_text(report_of(bare).notes.todo)
    assert "claim the partner's email domains" in todo
    assert "add a connection" in todo


@pytest.mark.parametrize(
    ("attributes", "default", "kind", "carried"),
    [
        ({"isthmus.kind": ["customer"]}, PartnerKind.supplier, "customer", True),
        ({"isthmus.kind": [" Subcontractor "]}, PartnerKind.supplier, "subcontractor", True),
        ({"isthmus.kind": ["vendor"]}, PartnerKind.supplier, "supplier", False),
        ({}, PartnerKind.distributor, "distributor", True),
    ],
)
def test_the_kind_comes_from_the_isthmus_kind_attribute(
    attributes: dict[str, list[str]], default: PartnerKind, kind: str, carried: bool
) -> None:
    result = build_import(
        snapshot([(org("p", attributes=attributes), [])], []), options(default_kind=default)
    )
    (spec,) = (s for _, _, s in result.documents)
    assert spec["kind"] == kind
    notes = report_of(result).notes
    assert any("kind" in n for n in (notes.carried if carried else notes.not_carried))


def test_what_a_partner_cannot_keep_is_listed() -> None:
    extra: dict[str, Any] = {
        "description": "x",
        "redirectUrl": "https://portal.p.example",
        "enabled": False,
        "attributes": {"isthmus.kind": ["customer"], "region": ["emea"], "tier": ["gold"]},
    }
    result = build_import(snapshot([(org("p", **extra), [])], []), options())
    text = notes_text(report_of(result).notes.not_carried)
    for expected in (
        "description",
        "redirect URL https://portal.p.example",
        "attributes region, tier",
        "disabled in Keycloak",
        "members: Isthmus keeps no accounts",
    ):
        assert expected in text


def test_ids_are_slugs_unique_and_never_reserved() -> None:
    assert slug("Acme Corp!!") == "acme-corp"
    assert slug("Société Générale") == "societe-generale"
    assert slug("--x--") == "x"
    assert slug("a" * 80) == "a" * 63
    realm = snapshot(
        [
            (org("Acme Corp", "1"), ["idp"]),
            (org("acme-corp", "2"), ["IDP!"]),
            (org("new", "3"), []),
            (org("***", "abcdef0123"), []),
        ],
        [oidc("idp"), oidc("IDP!")],
    )
    result = build_import(realm, options())
    ids = [doc_id for _, doc_id, _ in result.documents]
    assert ids == ["acme-corp", "acme-corp-2", "new-2", "org-abcdef01"]
    connection_ids = [c.id for p in result.report.partners for c in p.connections]
    assert connection_ids == ["idp", "idp-2"]


def test_an_invalid_partner_is_left_out_and_reported() -> None:
    domains = [{"name": "p.example", "verified": False}]
    previous = PreviousImport(pending={("p", "p.example"): ("short", NOW.isoformat())})
    result = build_import(snapshot([(org("p", domains=domains), [])], []), options(), previous)
    assert result.documents == ()
    partner = report_of(result)
    assert not partner.written
    assert "left out, invalid: partner/p: pending_domains.0.token" in notes_text(
        partner.notes.not_carried
    )
    assert ("organization", "p") in [(s.what, s.name) for s in result.report.skipped]
    assert "## Partner `p`: P (supplier) — NOT WRITTEN" in result.report.markdown()


# --- which identity providers become connections --------------------------------------------


def test_identity_providers_that_make_no_connection_are_reported() -> None:
    realm = snapshot(
        [(org("p"), ["off", "google", "odd", "missing"])],
        [
            {**oidc("off"), "enabled": False},
            {"alias": "google", "providerId": "google", "enabled": True, "config": {}},
            {"alias": "odd", "providerId": "oauth2", "enabled": True, "config": {}},
            oidc("spare"),
            {"alias": "gh", "providerId": "github", "enabled": True, "config": {}},
        ],
    )
    result = build_import(realm, options())
    skipped = {s.name: s.reason for s in result.report.skipped}
    assert skipped["off"].startswith("disabled in Keycloak")
    assert skipped["google"].startswith("social login (google)")
    assert skipped["odd"] == "provider type 'oauth2' is not supported (only OIDC and SAML)"
    assert skipped["spare"].startswith("linked to no organization")
    assert skipped["gh"].startswith("social login (github), linked to no organization")
    text = notes_text(report_of(result).notes.not_carried)
    assert "identity provider 'missing' is linked but could not be read" in text
    assert "identity provider 'off': disabled in Keycloak" in text
    (spec,) = (s for _, _, s in result.documents)
    assert "connections" not in spec


def test_an_identity_provider_linked_by_its_organization_id_is_imported() -> None:
    realm = snapshot([(org("p", "org-1"), [])], [oidc("idp", organization="org-1")])
    result = build_import(realm, options())
    assert one_connection(result)["id"] == "idp"
    assert result.report.skipped == []


# --- OIDC connections -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("config", "issuer", "derived"),
    [
        ({"issuer": "https://idp.p.example/"}, "https://idp.p.example/", False),
        (
            {
                "issuer": "",
                "metadataDescriptorUrl": "https://idp.p.example/t/.well-known/openid-configuration",
            },
            "https://idp.p.example/t",
            True,
        ),
        (
            {
                "issuer": "",
                "authorizationUrl": "https://kc.p.example/realms/r/protocol/openid-connect/auth",
            },
            "https://kc.p.example/realms/r",
            True,
        ),
        (
            {
                "issuer": "",
                "authorizationUrl": "https://login.microsoftonline.com/t1/oauth2/v2.0/authorize",
            },
            "https://login.microsoftonline.com/t1/v2.0",
            True,
        ),
        (
            {"issuer": "", "authorizationUrl": "https://p.okta.com/oauth2/default/v1/authorize"},
            "https://p.okta.com/oauth2/default",
            True,
        ),
        (
            {"issuer": "", "authorizationUrl": "https://op.p.example/auth"},
            "https://op.p.example",
            True,
        ),
    ],
    ids=["issuer", "discovery", "keycloak", "entra", "okta", "generic"],
)
def test_the_issuer_is_taken_or_derived(config: dict[str, str], issuer: str, derived: bool) -> None:
    result = build_import(snapshot([(org("p"), ["idp"])], [oidc("idp", **config)]), options())
    assert one_connection(result)["issuer"] == issuer
    todo = notes_text(report_of(result).connections[0].notes.todo)
    assert ("confirm the issuer" in todo) is derived


@pytest.mark.parametrize(
    "config",
    [{"issuer": "", "authorizationUrl": "https://op.p.example/login"}, {"clientId": ""}],
    ids=["no-issuer", "no-client-id"],
)
def test_an_oidc_provider_without_issuer_or_client_is_not_imported(config: dict[str, str]) -> None:
    result = build_import(snapshot([(org("p"), ["idp"])], [oidc("idp", **config)]), options())
    (skipped,) = result.report.skipped
    assert skipped.name == "idp"
    assert skipped.reason.startswith(("no issuer", "no client id"))


@pytest.mark.parametrize(
    ("method", "expected", "note"),
    [
        ("client_secret_basic", "client_secret_basic", False),
        ("client_secret_post", "client_secret_post", False),
        ("", "client_secret_post", False),  # Keycloak's default
        ("private_key_jwt", "client_secret_basic", True),
        ("client_secret_jwt", "client_secret_basic", True),
    ],
)
def test_client_authentication(method: str, expected: str, note: bool) -> None:
    result = build_import(
        snapshot([(org("p"), ["idp"])], [oidc("idp", clientAuthMethod=method)]), options()
    )
    assert one_connection(result)["token_endpoint_auth_method"] == expected
    notes = report_of(result).connections[0].notes
    assert (f"client authentication {method}" in notes_text(notes.not_carried)) is note


def test_oidc_settings_carried_and_warned() -> None:
    config = {
        "issuer": "http://idp.p.example",
        "defaultScope": "profile,openid email profile",
        "disableUserInfo": "true",
        "validateSignature": "false",
    }
    rep = {**oidc("idp", **config), "trustEmail": True, "postBrokerLoginFlowAlias": "otp"}
    rep["displayName"] = "P staff"
    rep["config"]["kc.org.domain"] = "p.example"
    rep["config"]["hideOnLogin"] = "true"
    result = build_import(snapshot([(org("p"), ["idp"])], [rep]), options())
    spec = one_connection(result)
    assert spec["scopes"] == ["openid", "profile", "email"]
    assert spec["use_userinfo"] is False
    assert spec["display_name"] == "P staff"
    notes = report_of(result).connections[0].notes
    not_carried = notes_text(notes.not_carried)
    assert "did not validate this IdP's token signatures" in not_carried
    assert "Trust Email" in not_carried
    assert "Keycloak authentication flows 'otp'" in not_carried
    assert "hidden on Keycloak's login page" in not_carried
    assert "Keycloak sent users of p.example here" in notes_text(notes.carried)
    assert "the issuer http://idp.p.example is plain http" in notes_text(notes.todo)


def test_a_secret_filled_in_earlier_is_kept_for_the_same_client() -> None:
    realm = snapshot([(org("p"), ["idp"])], [oidc("idp")])
    kept = build_import(realm, options(), PreviousImport(secrets={"idp": ("hub", "s3cret")}))
    assert one_connection(kept)["client_secret"] == "s3cret"
    assert not report_of(kept).connections[0].secret_missing
    assert not any("client secrets" in step for step in kept.report.todo)

    moved = build_import(realm, options(), PreviousImport(secrets={"idp": ("old", "s3cret")}))
    assert one_connection(moved)["client_secret"] is None
    assert report_of(moved).connections[0].secret_missing


MAPPER_CASES = [  # (mapper name, claim, user attribute, claims mapped, note when not carried)
    ("email", "mail", "email", {"email": "mail"}, None),
    ("name", "cn", "displayName", {"name": "cn"}, None),
    ("roles", "realm_access.roles", "roles", {"roles": "realm_access.roles"}, None),
    ("dotted", "https://p\\.example/g", "groups", {"groups": "https://p.example/g"}, None),
    ("mixed", "a\\.b.c", "groups", {}, "cannot be named in Isthmus"),
    ("first", "given_name", "firstName", {}, "one full name"),
    ("user", "upn", "username", {}, "not an identity field"),
    ("dept", "department", "department", {}, "stays available to policies"),
]


@pytest.mark.parametrize(("name", "claim", "attribute", "claims", "note"), MAPPER_CASES)
def test_oidc_user_attribute_mappers(
    name: str, claim: str, attribute: str, claims: dict[str, str], note: str | None
) -> None:
    mapper = attribute_mapper(name, "oidc", attribute, claim=claim)
    result = build_import(snapshot([(org("p"), ["idp"])], [(oidc("idp"), [mapper])]), options())
    assert one_connection(result).get("claims", {}) == claims
    notes = report_of(result).connections[0].notes
    if note is None:
        assert f"mapper '{name}'" in notes_text(notes.carried)
    else:
        assert note in notes_text(notes.not_carried)


@pytest.mark.parametrize(
    ("kind", "config", "note"),
    [
        ("oidc-advanced-role-idp-mapper", {"role": "admin"}, "gives the Keycloak role 'admin'"),
        ("keycloak-oidc-role-to-role-idp-mapper", {"role": "x"}, "Isthmus assigns no roles"),
        ("oidc-advanced-group-idp-mapper", {"group": "/staff"}, "Keycloak group '/staff'"),
        ("hardcoded-role-idp-mapper", {"role": "r"}, "sets a fixed value"),
        ("oidc-hardcoded-group-idp-mapper", {"group": "/g"}, "sets a fixed value"),
        ("oidc-username-idp-mapper", {"template": "${CLAIM.email}"}, "not on a username"),
        ("custom-mapper", {}, "this mapper type is not carried over"),
    ],
)
def test_other_mappers_are_not_carried(kind: str, config: dict[str, str], note: str) -> None:
    mapper = _mapper("m", "idp", kind, **config)
    result = build_import(snapshot([(org("p"), ["idp"])], [(oidc("idp"), [mapper])]), options())
    assert "claims" not in one_connection(result)
    assert f"mapper 'm' ({kind}): " in notes_text(
        report_of(result).connections[0].notes.not_carried
    )
    assert note in notes_text(report_of(result).connections[0].notes.not_carried)


def test_the_first_mapper_of_a_field_wins() -> None:
    mappers = [
        attribute_mapper("a", "oidc", "email", claim="mail"),
        attribute_mapper("b", "oidc", "email", claim="email2"),
    ]
    result = build_import(snapshot([(org("p"), ["idp"])], [(oidc("idp"), mappers)]), options())
    assert one_connection(result)["claims"] == {"email": "mail"}
    assert "email already comes from 'mail'" in notes_text(
        report_of(result).connections[0].notes.not_carried
    )


# --- SAML connections -----------------------------------------------------------------------


def test_a_saml_metadata_url_is_used_as_it_is() -> None:
    rep = saml(
        "idp",
        metadataDescriptorUrl="http://idp.p.example/metadata",
        signingCertificate="",
        wantAssertionsSigned="false",
        validateSignature="false",
    )
    result = build_import(snapshot([(org("p"), ["idp"])], [rep]), options())
    spec = one_connection(result)
    assert spec["idp_metadata_url"] == "http://idp.p.example/metadata"
    assert spec["idp_entity_id"] == "https://idp.example/idp"
    assert "idp_metadata_xml" not in spec
    assert spec["want_assertions_signed"] is False
    assert "authn_request_binding" not in spec  # redirect, the default
    notes = report_of(result).connections[0].notes
    assert "metadata URL http://idp.p.example/metadata is plain http" in notes_text(notes.todo)
    assert "did not validate this IdP's signatures" in notes_text(notes.not_carried)


def test_saml_settings_carried() -> None:
    rep = {
        **saml(
            "idp",
            principalType="FRIENDLY_ATTRIBUTE",
            principalAttribute="uid",
            allowedClockSkew="900",
            postBindingLogout="true",
            singleLogoutServiceUrl="https://idp.example/slo",
            wantAssertionsEncrypted="true",
            authnContextClassRefs='["urn:mfa"]',
            forceAuthn="true",
        ),
        "trustEmail": True,
    }
    mappers = [
        attribute_mapper(
            "g",
            "saml",
            "groups",
            **{"attribute.name": "memberOf", "attribute.friendly.name": "groups"},
        ),
        _mapper("r", "idp", "saml-role-idp-mapper", role="admin", **{"attribute.name": "x"}),
        attribute_mapper("x", "saml", "roles"),
        attribute_mapper("o", "saml", "unit", **{"attribute.name": "ou"}),
    ]
    result = build_import(snapshot([(org("p"), ["idp"])], [(rep, mappers)]), options())
    spec = one_connection(result)
    assert spec["attributes"] == {"subject": ["uid"], "groups": ["memberOf", "groups"]}
    assert spec["clock_skew_seconds"] == 300
    assert spec["email_verified"] is True
    assert "sign_authn_requests" not in spec
    idp = parse_idp_metadata(spec["idp_metadata_xml"])
    assert idp.sso == {BINDING_HTTP_REDIRECT: "https://idp.example/sso"}
    assert idp.slo == {BINDING_HTTP_POST: "https://idp.example/slo"}
    assert idp.want_authn_requests_signed is False
    notes = report_of(result).connections[0].notes
    not_carried = notes_text(notes.not_carried)
    assert "mapper 'r' (saml-role-idp-mapper): gives the Keycloak role 'admin'" in not_carried
    assert "mapper 'x' (saml-user-attribute-idp-mapper): names no SAML attribute" in not_carried
    assert "raw attribute 'ou' stays available to policies" in not_carried
    assert "AuthnContext" in not_carried and "ForceAuthn" in not_carried
    assert "encryption certificate" in notes_text(notes.todo)


@pytest.mark.parametrize(
    ("config", "reason"),
    [
        ({"idpEntityId": ""}, "no metadata URL, and no IdP entity id"),
        ({"singleSignOnServiceUrl": ""}, "no metadata URL, and no IdP entity id"),
        ({"signingCertificate": ""}, "no signing certificate: Isthmus requires signed"),
        (
            {"signingCertificate": "", "validateSignature": "false"},
            "no signing certificate (Keycloak did not check signatures)",
        ),
        ({"signingCertificate": "bm90IGEgY2VydA=="}, "no signing certificate"),
    ],
)
def test_a_saml_provider_that_cannot_be_described_is_not_imported(
    config: dict[str, str], reason: str
) -> None:
    result = build_import(snapshot([(org("p"), ["idp"])], [saml("idp", **config)]), options())
    (skipped,) = result.report.skipped
    assert skipped.reason.startswith(reason)


def test_an_unreadable_certificate_is_left_out_and_the_good_one_kept() -> None:
    rep = saml("idp", signingCertificate=f"not-base64!, {CERT}")
    result = build_import(snapshot([(org("p"), ["idp"])], [rep]), options())
    metadata = parse_idp_metadata(one_connection(result)["idp_metadata_xml"])
    assert certs(metadata.signing_certs) == [CERT]
    assert "signing certificate 1: not a readable X.509" in notes_text(
        report_of(result).connections[0].notes.not_carried
    )


# --- determinism and the output directory ---------------------------------------------------


async def test_the_same_realm_gives_the_same_files(tmp_path: Path) -> None:
    realm = await read(FakeKeycloak())
    first, second = build_import(realm, options()), build_import(realm, options())
    assert first == second
    write_import(tmp_path / "a", first)
    write_import(tmp_path / "b", second)
    assert _files(tmp_path / "a") == _files(tmp_path / "b")

    # Again over its own output, later, with other random tokens: nothing changes, so the
    # TXT records already handed out stay valid.
    later = options(now=NOW + dt.timedelta(days=3), new_token=lambda: "x" * 32)
    again = build_import(realm, later, previous_import(tmp_path / "a"))
    write_import(tmp_path / "a", again)
    assert _files(tmp_path / "a") == _files(tmp_path / "b")


def _files(directory: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(directory)): p.read_bytes()
        for p in sorted(directory.rglob("*"))
        if p.is_file()
    }


async def test_written_files_are_private_and_stale_ones_removed(tmp_path: Path) -> None:
    realm = await read(FakeKeycloak())
    written = write_import(tmp_path, build_import(realm, options()))
    assert [str(p.relative_to(tmp_path)) for p in written] == [
        "partners/acme.yaml",
        "partners/globex.yaml",
        REPORT_FILE,
    ]
    for path in written[:2]:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        document = yaml.safe_load(path.read_text())
        assert set(document) == {"kind", "id", "spec"}
    fewer = RealmSnapshot(SERVER, REALM, realm.organizations[:1], realm.identity_providers)
    write_import(tmp_path, build_import(fewer, options(), previous_import(tmp_path)))
    assert not (tmp_path / "partners" / "globex.yaml").exists()


def test_the_output_directory_must_be_new_empty_or_an_earlier_import(tmp_path: Path) -> None:
    assert previous_import(tmp_path / "new") == PreviousImport()
    assert previous_import(tmp_path) == PreviousImport()
    (tmp_path / "file").write_text("x")
    with pytest.raises(KeycloakImportError, match="is not a directory"):
        previous_import(tmp_path / "file")
    with pytest.raises(KeycloakImportError, match=r"is not empty and holds no IMPORT-REPORT\.md"):
        previous_import(tmp_path)
    earlier = tmp_path / "earlier"
    (earlier / "partners").mkdir(parents=True)
    (earlier / REPORT_FILE).write_text("# report\n")
    (earlier / "partners" / "p.yaml").write_text("kind: partner\nid: p\nspec: [")
    assert previous_import(earlier) == PreviousImport()  # unreadable: started afresh


# --- the command ----------------------------------------------------------------------------


@pytest.fixture
def fake_keycloak(monkeypatch: pytest.MonkeyPatch) -> FakeKeycloak:
    fake = FakeKeycloak()
    seen: list[tuple[Any, ...]] = []

    def fake_connect(*args: Any, **kwargs: Any) -> KeycloakAdmin:
        seen.append((*args, kwargs))
        return fake.admin()

    monkeypatch.setattr(migrate_cli, "connect", fake_connect)
    fake.connected = seen  # type: ignore[attr-defined]
    return fake


def invoke(*args: str, secret: str | None = "s3cret") -> Any:
    env = {"ISTHMUS_KEYCLOAK_CLIENT_SECRET": secret} if secret is not None else {}
    base = [
        "keycloak",
        "import",
        "--server",
        SERVER,
        "--realm",
        REALM,
        "--client-id",
        "isthmus-import",
    ]
    return runner.invoke(cli.app, [*base, *args], env=env)


def test_the_command_writes_the_files_and_a_summary(
    fake_keycloak: FakeKeycloak, tmp_path: Path
) -> None:
    result = invoke("-o", str(tmp_path / "out"))
    assert result.exit_code == 0, result.output
    assert fake_keycloak.connected == [  # type: ignore[attr-defined]
        (SERVER, REALM, "isthmus-import", "s3cret", {"auth_realm": None})
    ]
    out = result.stdout
    assert "Imported realm migration from https://sso.example.com: 2 of 2 organizations" in out
    assert (
        "acme     Acme Corp          distributor  -        acme-corp.example, acme.example" in out
    )
    assert "identity provider github (github): social login (github)" in out
    assert f"The details, partner by partner: {tmp_path / 'out' / REPORT_FILE}" in out
    assert sorted(p.name for p in (tmp_path / "out" / "partners").iterdir()) == [
        "acme.yaml",
        "globex.yaml",
    ]


def test_the_command_reports_as_json(fake_keycloak: FakeKeycloak, tmp_path: Path) -> None:
    secret_file = tmp_path / "secret"
    secret_file.write_text("from-a-file\n")
    result = invoke(
        "-o", str(tmp_path / "out"), "--client-secret-file", str(secret_file),
        "--auth-realm", "master", "--trust-verified-domains", "--json", secret=None,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    body = json.loads(result.stdout)
    assert body["files"] == ["partners/acme.yaml", "partners/globex.yaml", REPORT_FILE]
    assert [p["domains"] for p in body["partners"]] == [["acme.example"], ["globex.example"]]
    assert fake_keycloak.connected[0][3:] == (  # type: ignore[attr-defined]
        "from-a-file",
        {"auth_realm": "master"},
    )


@pytest.mark.parametrize(
    ("args", "secret", "message"),
    [
        ((), None, "the environment variable ISTHMUS_KEYCLOAK_CLIENT_SECRET is not set"),
        (("--client-secret-env", "MY_SECRET"), None, "MY_SECRET is not set"),
        (("--client-secret-env", "X", "--client-secret-file", "f"), "s", "not both"),
        (("--client-secret-file", "/nonexistent/secret"), None, "cannot read"),
        (("--password", "admin"), "s", "No such option"),  # never a user's password
    ],
)
def test_the_secret_comes_from_the_environment_or_a_file(
    fake_keycloak: FakeKeycloak,
    tmp_path: Path,
    args: tuple[str, ...],
    secret: str | None,
    message: str,
) -> None:
    result = invoke("-o", str(tmp_path / "out"), *args, secret=secret)
    assert result.exit_code == 2
    assert message in plain(result.stderr)
    assert fake_keycloak.requests == []


def test_an_empty_secret_file_is_refused(fake_keycloak: FakeKeycloak, tmp_path: Path) -> None:
    (tmp_path / "secret").write_text("\n")
    result = invoke("-o", str(tmp_path / "out"), "--client-secret-file", str(tmp_path / "secret"))
    assert result.exit_code == 2
    assert "is empty" in plain(result.stderr)


def test_nothing_is_written_when_the_realm_cannot_be_read(
    fake_keycloak: FakeKeycloak, tmp_path: Path
) -> None:
    fake_keycloak.fail[f"/admin/realms/{REALM}/organizations"] = 403
    result = invoke("-o", str(tmp_path / "out"))
    assert result.exit_code == 1
    assert "error: cannot list the organizations of realm 'migration'" in result.stderr
    assert "Nothing was written." in result.stderr
    assert not (tmp_path / "out").exists()

    as_json = invoke("-o", str(tmp_path / "out"), "--json")
    assert as_json.exit_code == 1
    body = json.loads(as_json.stdout)
    assert body["error"] == "keycloak_import_failed"
    assert "HTTP 403" in body["message"]


def test_the_command_refuses_a_directory_of_other_files(
    fake_keycloak: FakeKeycloak, tmp_path: Path
) -> None:
    (tmp_path / "partners").mkdir()
    (tmp_path / "partners" / "mine.yaml").write_text("kind: partner\n")
    result = invoke("-o", str(tmp_path))
    assert result.exit_code == 1
    assert "is not empty and holds no IMPORT-REPORT.md" in result.stderr
    assert fake_keycloak.requests == []  # refused before Keycloak is asked anything
    assert (tmp_path / "partners" / "mine.yaml").exists()
