"""``isthmus saml certs``: lists every SAML certificate, fails on one expiring soon."""

from __future__ import annotations

from pathlib import Path

import yaml
from typer.testing import CliRunner

from federation.cli import app
from tests.fakes.saml_idp import FakeSamlIdP


def config_with(tmp_path: Path, idp: FakeSamlIdP) -> Path:
    metadata = tmp_path / "idp.xml"
    metadata.write_text(idp.metadata_xml())
    document = {
        "issuer": "https://hub.test",
        "partners": [
            {
                "id": "acme",
                "name": "Acme",
                "kind": "supplier",
                "domains": ["acme.test"],
                "connections": [
                    {"type": "saml", "id": "acme-saml", "idp_metadata_file": str(metadata)}
                ],
            }
        ],
    }
    path = tmp_path / "isthmus.yaml"
    path.write_text(yaml.safe_dump(document))
    return path


def test_lists_both_rollover_certificates_and_passes(tmp_path: Path) -> None:
    idp = FakeSamlIdP()
    idp.add_next_key(common_name="new idp")  # the metadata lists the old and the new
    config = config_with(tmp_path, idp)

    result = CliRunner().invoke(app, ["saml", "certs", "--config", str(config)])

    assert result.exit_code == 0, result.output
    assert "acme/acme-saml IdP CN=fake-saml-idp" in result.output
    assert "acme/acme-saml IdP CN=new idp" in result.output


def test_fails_when_a_certificate_expires_within_the_window(tmp_path: Path) -> None:
    config = config_with(tmp_path, FakeSamlIdP(cert_valid_days=10))

    result = CliRunner().invoke(app, ["saml", "certs", "--config", str(config)])
    assert result.exit_code == 1
    assert "EXPIRES SOON" in result.output

    relaxed = CliRunner().invoke(app, ["saml", "certs", "--config", str(config), "--days", "5"])
    assert relaxed.exit_code == 0, relaxed.output
