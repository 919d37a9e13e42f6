"""The SP's key pair and the certificates of a SAML connection.

Specs: SAML 2.0 Metadata §2.4.1.1 (KeyDescriptor ``use="signing"``/``"encryption"``);
XML-DSig 1.1 §4.5.4 (X509Data); RFC 5280 (certificate validity).

The SP signs its AuthnRequests and logout messages and decrypts encrypted assertions with
one key pair: the connection's ``sp_key_file``/``sp_cert_file``, or — when absent — an
RSA-2048 key and a self-signed certificate generated once per connector (per process: fine
for one hub, not for replicas, which must share configured files).
"""

from __future__ import annotations

import base64
import datetime as dt
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

GENERATED_VALIDITY = dt.timedelta(days=5 * 365)


@dataclass(frozen=True, slots=True)
class CertInfo:
    """One certificate of a connection, for expiry reports."""

    connection_id: str
    whose: Literal["IdP", "SP"]
    subject: str
    not_after: dt.datetime
    fingerprint_sha256: str

    def expires_within(self, days: float, now: dt.datetime) -> bool:
        return self.not_after <= now + dt.timedelta(days=days)


def cert_info(connection_id: str, whose: Literal["IdP", "SP"], pem_or_der: bytes) -> CertInfo:
    if pem_or_der.lstrip().startswith(b"-----BEGIN"):
        cert = x509.load_pem_x509_certificate(pem_or_der)
    else:
        cert = x509.load_der_x509_certificate(pem_or_der)
    return CertInfo(
        connection_id=connection_id,
        whose=whose,
        subject=cert.subject.rfc4514_string(),
        not_after=cert.not_valid_after_utc,
        fingerprint_sha256=cert.fingerprint(hashes.SHA256()).hex(":"),
    )


def der_from_base64(text: str) -> bytes:
    """The DER of a ds:X509Certificate value (base64, whitespace allowed)."""
    return base64.b64decode("".join(text.split()))


@dataclass(frozen=True, slots=True)
class SpKeyPair:
    """PEM files pysaml2 and xmlsec1 read (they take paths, not bytes)."""

    key_file: Path
    cert_file: Path

    @property
    def cert_pem(self) -> bytes:
        return self.cert_file.read_bytes()

    @property
    def cert_base64(self) -> str:
        """The certificate body for a ds:X509Certificate element."""
        der = x509.load_pem_x509_certificate(self.cert_pem).public_bytes(serialization.Encoding.DER)
        return base64.b64encode(der).decode()


def self_signed(
    common_name: str, *, not_before: dt.datetime, not_after: dt.datetime
) -> tuple[rsa.RSAPrivateKey, x509.Certificate]:
    """An RSA-2048 key and a self-signed certificate for it (SAML keys are not chained)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name[:64])])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    return key, cert


def generate_key_pair(common_name: str, directory: Path) -> SpKeyPair:
    """RSA-2048 and a self-signed certificate, written 0600 into ``directory``."""
    now = dt.datetime.now(dt.UTC)
    key, cert = self_signed(
        common_name, not_before=now - dt.timedelta(minutes=5), not_after=now + GENERATED_VALIDITY
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    pair = SpKeyPair(directory / "sp.key", directory / "sp.crt")
    _write_private(pair.key_file, key_pem)
    _write_private(pair.cert_file, cert.public_bytes(serialization.Encoding.PEM))
    return pair


def _write_private(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as file:
        file.write(data)


def private_directory(prefix: str) -> Path:
    """A 0700 temporary directory for generated key files."""
    return Path(tempfile.mkdtemp(prefix=prefix))
