"""Invariant 2: allow-listed algorithms tied to keys, no none, no HMAC, crit, claims, leeway."""

from __future__ import annotations

import base64
import json
import time
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization

from federation import jose
from federation.keys import KeySet, SigningKey

ISS, AUD = "https://hub.example", "app"


def claims(**extra: Any) -> dict[str, Any]:
    now = int(time.time())
    return {"iss": ISS, "aud": AUD, "sub": "s", "iat": now, "exp": now + 60, **extra}


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@pytest.fixture(scope="module")
def rsa_keys() -> KeySet:
    return KeySet.generate("RS256")


def sign(keys: KeySet, body: dict[str, Any], **headers: Any) -> str:
    key = keys.current
    return jwt.encode(body, key.private_key, algorithm=key.alg, headers={"kid": key.kid, **headers})


def verify(token: str, keys: KeySet, **kwargs: Any) -> dict[str, Any]:
    return jose.verify(token, keys.verification_keys(), issuer=ISS, audience=AUD, **kwargs)


def test_valid_token(rsa_keys: KeySet) -> None:
    assert verify(sign(rsa_keys, claims()), rsa_keys)["sub"] == "s"


def test_es256_key_verifies_only_es256() -> None:
    keys = KeySet.generate("ES256")
    assert verify(sign(keys, claims()), keys)["sub"] == "s"
    assert keys.current.verification_key().algorithms == frozenset({"ES256"})


def test_alg_none_is_refused(rsa_keys: KeySet) -> None:
    header = b64(json.dumps({"alg": "none", "kid": rsa_keys.current.kid}).encode())
    token = f"{header}.{b64(json.dumps(claims()).encode())}."
    with pytest.raises(jose.JWTError, match="not allowed"):
        verify(token, rsa_keys)


def test_hmac_signed_with_the_public_key_is_refused(rsa_keys: KeySet) -> None:
    public_pem = rsa_keys.current.private_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    header = b64(json.dumps({"alg": "HS256", "kid": rsa_keys.current.kid}).encode())
    payload = b64(json.dumps(claims()).encode())
    import hashlib
    import hmac

    mac = hmac.new(public_pem, f"{header}.{payload}".encode(), hashlib.sha256).digest()
    with pytest.raises(jose.JWTError):
        verify(f"{header}.{payload}.{b64(mac)}", rsa_keys)


def test_rsa_key_refuses_an_es256_header(rsa_keys: KeySet) -> None:
    other = SigningKey.generate("ES256")
    token = jwt.encode(
        claims(), other.private_key, algorithm="ES256", headers={"kid": rsa_keys.current.kid}
    )
    with pytest.raises(jose.JWTError, match="no key"):
        verify(token, rsa_keys)


def test_unknown_crit_is_refused(rsa_keys: KeySet) -> None:
    token = sign(rsa_keys, claims(), crit=["exp-ext"], **{"exp-ext": 1})
    with pytest.raises(jose.JWTError, match="critical"):
        verify(token, rsa_keys)


@pytest.mark.parametrize(
    ("override", "match"),
    [
        ({"iss": "https://evil.example"}, "issuer"),
        ({"aud": "other-app"}, "(?i)audience"),
        ({"exp": int(time.time()) - 3600}, "expired"),
        ({"nbf": int(time.time()) + 3600}, "not yet valid"),
        ({"iat": int(time.time()) + 3600}, "not yet valid"),
    ],
)
def test_registered_claims_are_checked(
    rsa_keys: KeySet, override: dict[str, Any], match: str
) -> None:
    with pytest.raises(jose.JWTError, match=match):
        verify(sign(rsa_keys, claims(**override)), rsa_keys)


def test_missing_exp_is_refused(rsa_keys: KeySet) -> None:
    body = claims()
    del body["exp"]
    with pytest.raises(jose.JWTError, match="exp"):
        verify(sign(rsa_keys, body), rsa_keys)


def test_leeway_is_bounded(rsa_keys: KeySet) -> None:
    old = sign(rsa_keys, claims(exp=int(time.time()) - 1000))
    with pytest.raises(jose.JWTError, match="expired"):
        verify(old, rsa_keys, leeway=10_000)  # capped at MAX_LEEWAY (300 s)
    assert verify(sign(rsa_keys, claims(exp=int(time.time()) - 20)), rsa_keys, leeway=30)


def test_tampered_payload_is_refused(rsa_keys: KeySet) -> None:
    header, _, signature = sign(rsa_keys, claims()).split(".")
    forged = b64(json.dumps(claims(sub="admin")).encode())
    with pytest.raises(jose.JWTError, match="signature"):
        verify(f"{header}.{forged}.{signature}", rsa_keys)


def test_foreign_key_is_refused(rsa_keys: KeySet) -> None:
    stranger = KeySet.generate("RS256")
    token = jwt.encode(
        claims(),
        stranger.current.private_key,
        algorithm="RS256",
        headers={"kid": rsa_keys.current.kid},
    )
    with pytest.raises(jose.JWTError, match="signature"):
        verify(token, rsa_keys)


def test_jwks_oct_keys_and_mismatched_alg_are_ignored(rsa_keys: KeySet) -> None:
    jwks = rsa_keys.jwks()
    jwks["keys"].append({"kty": "oct", "k": "c2VjcmV0", "kid": "hmac", "alg": "HS256"})
    keys = jose.keys_from_jwks(jwks, ["RS256"])
    assert {k.kid for k in keys} == {k.kid for k in rsa_keys.published()}
    assert jose.keys_from_jwks(jwks, ["ES256"]) == []


def test_malformed_token_is_refused(rsa_keys: KeySet) -> None:
    with pytest.raises(jose.JWTError):
        verify("not.a.jwt", rsa_keys)
