"""Integration: ``isthmus keycloak import`` against a real Keycloak 26, then ``isthmus apply``.

The session's one Keycloak (``tests/peers/keycloak.py``) imports the realm ``migration``
(``tests/peers/keycloak/realms/migration.json``): Organizations on; ``acme`` (attribute
``isthmus.kind: distributor``; domains acme.example, verified, and acme-corp.example) linked
to the OIDC provider ``acme-oidc`` (three mappers); ``globex`` (globex.example, verified,
and globex-labs.example) linked to the SAML provider ``globex-saml`` (entity id, single
sign-on URL and signing certificate, no metadata URL; three mappers); the social provider
``github``, linked to no organization. The service-account client ``isthmus-import`` holds
the realm-management roles view-realm, view-identity-providers and manage-realm;
``isthmus-import-viewer`` lacks manage-realm.

The command runs as a user would (the CLI, the secret in an environment variable); the
files go through ``isthmus apply`` into a SQLite registry, and the hub built on it reads the
SAML metadata the import wrote.
"""

from __future__ import annotations

import asyncio
import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from connectors.saml import SamlConnector
from federation import cli
from federation.hub import build_hub
from federation.migrate.output import REPORT_FILE
from federation.settings import load_settings
from tests.peers.keycloak import KeycloakPeer

pytestmark = pytest.mark.integration

REALM = "migration"
SECRETS = {
    "isthmus-import": "migration-import-secret",
    "isthmus-import-viewer": "migration-viewer-secret",
}
runner = CliRunner()


def keycloak_import(
    peer: KeycloakPeer, output: Path, *args: str, client: str = "isthmus-import"
) -> Any:
    argv = [
        "keycloak", "import", "--server", peer.base_url, "--realm", REALM,
        "--client-id", client, "-o", str(output), *args,
    ]  # fmt: skip
    return runner.invoke(cli.app, argv, env={"ISTHMUS_KEYCLOAK_CLIENT_SECRET": SECRETS[client]})


def isthmus(*argv: str) -> Any:
    return runner.invoke(cli.app, list(argv))


def partner_file(directory: Path, partner_id: str) -> dict[str, Any]:
    document = yaml.safe_load((directory / "partners" / f"{partner_id}.yaml").read_text())
    assert document["kind"] == "partner" and document["id"] == partner_id
    spec: dict[str, Any] = document["spec"]
    return spec


@pytest.fixture(scope="module")
def imported(keycloak_peer: KeycloakPeer, tmp_path_factory: pytest.TempPathFactory) -> Path:
    output = tmp_path_factory.mktemp("keycloak-import") / "registry"
    result = keycloak_import(keycloak_peer, output)
    assert result.exit_code == 0, result.output + keycloak_peer.log()[-3000:]
    return output


def test_two_organizations_become_two_partners_with_their_connections(imported: Path) -> None:
    assert sorted(p.name for p in (imported / "partners").iterdir()) == [
        "acme.yaml",
        "globex.yaml",
    ]
    acme = partner_file(imported, "acme")
    assert (acme["name"], acme["kind"], acme["status"]) == ("Acme Corp", "distributor", "invited")
    assert "domains" not in acme  # Keycloak's "verified" is not a proof
    assert [d["name"] for d in acme["pending_domains"]] == ["acme-corp.example", "acme.example"]
    (oidc,) = acme["connections"]
    assert oidc == {
        "type": "oidc",
        "id": "acme-oidc",
        "display_name": "Acme staff",
        "issuer": "https://idp.acme.example/realms/acme",
        "client_id": "keycloak-broker",
        "client_secret": None,  # Keycloak answers "**********"
        "token_endpoint_auth_method": "client_secret_post",
        "scopes": ["openid", "email", "profile", "groups"],
        "claims": {"email": "mail", "groups": "memberships"},
    }
    globex = partner_file(imported, "globex")
    assert (globex["kind"], globex["status"]) == ("supplier", "invited")
    assert [d["name"] for d in globex["pending_domains"]] == [
        "globex-labs.example",
        "globex.example",
    ]
    (saml,) = globex["connections"]
    assert saml["type"] == "saml" and saml["id"] == "globex-saml"
    assert 'entityID="https://idp.globex.example/saml"' in saml["idp_metadata_xml"]
    assert saml["attributes"] == {
        "email": ["urn:oid:0.9.2342.19200300.100.1.3"],
        "name": ["displayName"],
    }
    assert (saml["authn_request_binding"], saml["email_verified"]) == ("post", False)


def test_the_report_names_the_unlinked_provider_and_the_missing_secret(imported: Path) -> None:
    report = (imported / REPORT_FILE).read_text()
    assert "Read 2 organizations and 3 identity providers; wrote 2 partners" in report
    assert "| identity provider | `github` | github | social login (github), linked to no" in (
        report
    )
    assert "refuses a null client_secret): partners/acme.yaml: acme-oidc" in report
    assert "client secret: Keycloak never reveals it" in report
    assert "mapper 'buyer role' (oidc-role-idp-mapper)" in report
    assert "mapper 'partner flag' (hardcoded-attribute-idp-mapper)" in report
    assert "_isthmus-challenge.acme.example.  IN  TXT" in report


def test_verified_domains_are_trusted_only_when_asked(
    keycloak_peer: KeycloakPeer, tmp_path: Path
) -> None:
    result = keycloak_import(keycloak_peer, tmp_path / "out", "--trust-verified-domains", "--json")
    assert result.exit_code == 0, result.output
    body = json.loads(result.stdout)
    domains = {
        p["id"]: (p["domains"], [d["domain"] for d in p["pending_domains"]])
        for p in body["partners"]
    }
    assert domains == {
        "acme": (["acme.example"], ["acme-corp.example"]),
        "globex": (["globex.example"], ["globex-labs.example"]),
    }
    assert [s["name"] for s in body["skipped"]] == ["github"]


def test_apply_plans_the_partners_and_takes_them_once_secrets_are_set(
    keycloak_peer: KeycloakPeer, imported: Path, tmp_path: Path
) -> None:
    config = tmp_path / "isthmus.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "issuer": "https://hub.example.com",
                "keys": {"algorithm": "ES256", "path": str(tmp_path / "keys.json")},
                "registry": {"backend": "sqlite", "path": str(tmp_path / "registry.db")},
            }
        )
    )
    files = tmp_path / "registry-files"
    shutil.copytree(imported, files)  # the module's import stays as it was

    plan = isthmus("apply", "-c", str(config), "-f", str(files), "--dry-run", "--json")
    assert plan.exit_code == 0, plan.output
    body = json.loads(plan.stdout)
    assert body["summary"]["create"] == 2
    assert [(c["action"], c["kind"], c["id"]) for c in body["changes"]] == [
        ("create", "partner", "acme"),
        ("create", "partner", "globex"),
    ]

    refused = isthmus("apply", "-c", str(config), "-f", str(files))
    assert refused.exit_code == 1
    assert "partner/acme: connections.0.client_secret: required" in refused.stderr

    acme = files / "partners" / "acme.yaml"
    acme.write_text(acme.read_text().replace("client_secret: null", "client_secret: from-acme"))
    applied = isthmus("apply", "-c", str(config), "-f", str(files))
    assert applied.exit_code == 0, applied.output
    listed = json.loads(isthmus("partners", "list", "-c", str(config), "--json").stdout)
    assert [(p["id"], p["spec"]["status"]) for p in listed] == [
        ("acme", "invited"),
        ("globex", "invited"),
    ]

    # The hub reads the SAML metadata the import built from Keycloak's settings.
    idp = asyncio.run(_saml_idp(config))
    assert idp.entity_id == "https://idp.globex.example/saml"
    assert len(idp.signing_certs) == 1

    # Importing again over the files keeps the secret and the DNS tokens: nothing to apply.
    again = keycloak_import(keycloak_peer, files)
    assert again.exit_code == 0, again.output
    unchanged = isthmus("apply", "-c", str(config), "-f", str(files), "--dry-run")
    assert unchanged.exit_code == 0, unchanged.output
    assert "No changes: the registry matches" in unchanged.stdout


async def _saml_idp(config: Path) -> Any:
    hub = build_hub(load_settings(config))
    try:
        await hub.ready()
        found = hub.connector("globex-saml")
        assert found is not None
        _, connector = found
        assert isinstance(connector, SamlConnector)
        return await connector.idp()
    finally:
        await hub.aclose()


def test_a_service_account_without_manage_realm_cannot_read_organizations(
    keycloak_peer: KeycloakPeer, tmp_path: Path
) -> None:
    result = keycloak_import(keycloak_peer, tmp_path / "out", client="isthmus-import-viewer")
    assert result.exit_code == 1
    assert "cannot list the organizations of realm 'migration'" in result.stderr
    assert "manage-realm" in result.stderr and "HTTP 403" in result.stderr
    assert not (tmp_path / "out").exists()


def test_wrong_credentials_write_nothing(keycloak_peer: KeycloakPeer, tmp_path: Path) -> None:
    argv = [
        "keycloak", "import", "--server", keycloak_peer.base_url, "--realm", REALM,
        "--client-id", "isthmus-import", "-o", str(tmp_path / "out"), "--json",
    ]  # fmt: skip
    result = runner.invoke(cli.app, argv, env={"ISTHMUS_KEYCLOAK_CLIENT_SECRET": "wrong"})
    assert result.exit_code == 1
    body = json.loads(result.stdout)
    assert (
        "Keycloak refused the credentials of client 'isthmus-import' (HTTP 401" in (body["message"])
    )
    assert not (tmp_path / "out").exists()
