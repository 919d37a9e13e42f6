"""``isthmus saml certs``: lists every SAML certificate, fails on one expiring soon."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID
from typer.testing import CliRunner

from connectors.saml.keys import SpKeyPair
from federation.cli import app
from tests.connectors.test_saml_fakeidp import FakeIdp, new_keys


def short_lived(directory: Path, days: int) -> SpKeyPair:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "short lived")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=days))
        .sign(key, hashes.SHA256())
    )
    pair = SpKeyPair(directory / "short.key", directory / "short.crt")
    pair.key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    pair.cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return pair


def config_with(tmp_path: Path, idp: FakeIdp) -> Path:
    metadata = tmp_path / "idp.xml"
    metadata.write_text(idp.metadata_xml)
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
    old, new = new_keys("old idp"), new_keys("new idp")
    config = config_with(tmp_path, FakeIdp(keys=old, published=[old, new]))

    result = CliRunner().invoke(app, ["saml", "certs", "--config", str(config)])

    assert result.exit_code == 0, result.output
    assert "acme/acme-saml IdP CN=old idp" in result.output
    assert "acme/acme-saml IdP CN=new idp" in result.output


def test_fails_when_a_certificate_expires_within_the_window(tmp_path: Path) -> None:
    expiring = short_lived(tmp_path, days=10)
    config = config_with(tmp_path, FakeIdp(keys=expiring))

    result = CliRunner().invoke(app, ["saml", "certs", "--config", str(config)])
    assert result.exit_code == 1
    assert "EXPIRES SOON" in result.output

    relaxed = CliRunner().invoke(app, ["saml", "certs", "--config", str(config), "--days", "5"])
    assert relaxed.exit_code == 0, relaxed.output
