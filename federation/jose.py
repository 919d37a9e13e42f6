"""JSON Web Tokens (RFC 7519) signed with JWS (RFC 7515), the hub's one way to sign and verify.

Security invariant 2 lives here: an explicit algorithm allow-list tied to each key (an
RSA key only verifies RS*/PS*, a P-256 key only ES256, never ``none``, never HMAC with a
public key); an unknown ``crit`` header is refused; ``iss``/``aud``/``exp``/``nbf``/``iat``
are checked with a bounded leeway. Both the upstream OIDC connector and the hub's own
endpoints verify through :func:`verify`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from jwt.algorithms import get_default_algorithms

from federation.errors import IsthmusError

MAX_LEEWAY = 300
_ALGORITHMS = get_default_algorithms()
_RSA_ALGS = frozenset({"RS256", "RS384", "RS512", "PS256", "PS384", "PS512"})
_EC_ALGS = {"secp256r1": "ES256", "secp384r1": "ES384", "secp521r1": "ES512"}

PublicKey = rsa.RSAPublicKey | ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey
PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey


class JWTError(IsthmusError):
    error = "invalid_token"
    status = 401
    public_message = "The token is invalid or expired."


@dataclass(frozen=True, slots=True)
class VerificationKey:
    kid: str | None
    key: PublicKey
    algorithms: frozenset[str]


def algorithms_for(key: PublicKey) -> frozenset[str]:
    """The algorithms a key type can honestly verify."""
    if isinstance(key, rsa.RSAPublicKey):
        return _RSA_ALGS
    if isinstance(key, ec.EllipticCurvePublicKey):
        alg = _EC_ALGS.get(key.curve.name)
        return frozenset({alg}) if alg else frozenset()
    return frozenset({"EdDSA"})


def keys_from_jwks(jwks: Mapping[str, Any], allowed: Iterable[str]) -> list[VerificationKey]:
    """Signature keys of a JWK set, each bound to the allowed algorithms it can verify."""
    allow = frozenset(allowed)
    keys: list[VerificationKey] = []
    for jwk in jwks.get("keys", []):
        if not isinstance(jwk, dict) or jwk.get("use", "sig") != "sig":
            continue
        if jwk.get("kty") not in ("RSA", "EC", "OKP"):
            continue  # "oct" keys never verify tokens: no HMAC with shared material
        try:
            key = jwt.PyJWK(jwk).key
        except (jwt.PyJWKError, jwt.InvalidKeyError, ValueError, KeyError):
            continue
        if not isinstance(
            key, rsa.RSAPublicKey | ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey
        ):
            continue
        algs = algorithms_for(key) & allow
        if "alg" in jwk:
            algs &= {jwk["alg"]}
        if algs:
            keys.append(VerificationKey(jwk.get("kid"), key, frozenset(algs)))
    return keys


def sign(claims: Mapping[str, Any], key: PrivateKey, alg: str, kid: str, typ: str = "JWT") -> str:
    return jwt.encode(dict(claims), key, algorithm=alg, headers={"kid": kid, "typ": typ})


def header(token: str) -> dict[str, Any]:
    try:
        return jwt.get_unverified_header(token)
    except jwt.PyJWTError as exc:
        raise JWTError(f"malformed token header: {exc}") from None


def verify(
    token: str,
    keys: Sequence[VerificationKey],
    *,
    issuer: str | None,
    audience: str | Sequence[str] | None,
    leeway: int = 30,
    require: Sequence[str] = ("exp", "iat"),
    verify_exp: bool = True,
    typ: str | None = None,
) -> dict[str, Any]:
    """Verify signature and registered claims; return the claims or raise JWTError."""
    hdr = header(token)
    alg = hdr.get("alg")
    if not isinstance(alg, str) or alg == "none" or alg.startswith("HS"):
        raise JWTError(f"algorithm {alg!r} is not allowed")
    if "crit" in hdr:
        # We implement no JWS extensions, so every critical one is unknown (RFC 7515 §4.1.11).
        raise JWTError(f"unsupported critical header parameters {hdr['crit']!r}")
    if typ is not None and str(hdr.get("typ", "")).lower() not in (
        typ.lower(),
        f"application/{typ}".lower(),
    ):
        raise JWTError(f"unexpected token type {hdr.get('typ')!r}")
    candidates = [
        k for k in keys if alg in k.algorithms and (k.kid is None or k.kid == hdr.get("kid"))
    ]
    if not candidates:
        raise JWTError(f"no key for kid={hdr.get('kid')!r} alg={alg!r}")
    last: Exception | None = None
    for candidate in candidates:
        try:
            return jwt.decode(
                token,
                candidate.key,
                algorithms=[alg],
                issuer=issuer,
                audience=audience,
                leeway=min(leeway, MAX_LEEWAY),
                options={
                    "require": list(require),
                    "verify_aud": audience is not None,
                    "verify_iss": issuer is not None,
                    "verify_exp": verify_exp,
                },
            )
        except jwt.InvalidSignatureError as exc:
            last = exc
        except jwt.PyJWTError as exc:
            raise JWTError(f"token rejected: {exc}") from None
    raise JWTError(f"signature verification failed: {last}")
