"""SDK token validation: validations/s of TokenValidator beside the raw `cryptography`
verify rate of the same tokens, in the same run (and PyJWT's decode for reference).

    .venv/bin/python -m bench.sdk [--tokens 2000] [--rounds 5]

"raw" is the floor of any validator: one `key.verify(signature, signing_input, ...)` per
token with the signature and signing input already decoded (for ES256 already in DER).
The SDK does everything else on top of that (split, base64url, header lookup, JSON,
claims, HubClaims). Target (docs/architecture.md): SDK >= 80 % of raw for RS256.
"""

from __future__ import annotations

import argparse
import base64
import platform
import time
from collections.abc import Callable

import jwt
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from federation.jose import sign
from federation.keys import Algorithm, KeySet
from federation.sdk import TokenValidator

ISSUER = "https://hub.example.com"
AUDIENCE = "orders"


def _b64(segment: str) -> bytes:
    return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))


def make_tokens(keys: KeySet, count: int) -> list[str]:
    """Access tokens shaped like the hub's (RFC 9068 claims + partner claims)."""
    key = keys.current
    now = int(time.time())
    return [
        sign(
            {
                "iss": ISSUER,
                "sub": f"u{i:06d}" + "x" * 40,
                "aud": AUDIENCE,
                "client_id": AUDIENCE,
                "iat": now,
                "exp": now + 3600,
                "jti": f"jti-{i:08d}-0123456789",
                "scope": "openid email profile groups",
                "sid": f"sid-{i:08d}-abcdefghij",
                "auth_time": now,
                "partner_id": "acme",
                "partner_kind": "supplier",
                "groups": ["buyers", "approvers"],
                "acr": "urn:isthmus:acr:mfa",
                "amr": ["pwd", "otp"],
            },
            key.private_key,
            key.alg,
            key.kid,
            typ="at+jwt",
        )
        for i in range(count)
    ]


def rate(fn: Callable[[str], object], tokens: list[str], rounds: int) -> float:
    """Best of `rounds` passes over the tokens, in operations per second."""
    best = 0.0
    for _ in range(rounds):
        start = time.perf_counter()
        for token in tokens:
            fn(token)
        elapsed = time.perf_counter() - start
        best = max(best, len(tokens) / elapsed)
    return best


def raw_rate(keys: KeySet, tokens: list[str], rounds: int) -> float:
    public = keys.current.private_key.public_key()
    prepared: list[tuple[bytes, bytes]] = []
    for token in tokens:
        signing_input, _, sig = token.rpartition(".")
        signature = _b64(sig)
        if isinstance(public, ec.EllipticCurvePublicKey):
            signature = encode_dss_signature(
                int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:], "big")
            )
        prepared.append((signing_input.encode(), signature))
    best = 0.0
    for _ in range(rounds):
        start = time.perf_counter()
        if isinstance(public, rsa.RSAPublicKey):
            pad, digest = padding.PKCS1v15(), hashes.SHA256()
            for data, signature in prepared:
                public.verify(signature, data, pad, digest)
        else:
            assert isinstance(public, ec.EllipticCurvePublicKey)
            ecdsa = ec.ECDSA(hashes.SHA256())
            for data, signature in prepared:
                public.verify(signature, data, ecdsa)
        best = max(best, len(prepared) / (time.perf_counter() - start))
    return best


def run(alg: Algorithm, count: int, rounds: int) -> dict[str, float]:
    keys = KeySet.generate(alg)
    tokens = make_tokens(keys, count)
    validator = TokenValidator(ISSUER, audience=AUDIENCE, jwks=keys.jwks())
    pyjwt_key = jwt.PyJWK(keys.current.public_jwk()).key

    def sdk(token: str) -> object:
        return validator.validate(token, typ="at+jwt")

    def pyjwt(token: str) -> object:
        return jwt.decode(
            token,
            pyjwt_key,
            algorithms=[alg],
            audience=AUDIENCE,
            issuer=ISSUER,
            leeway=30,
            options={"require": ["exp", "iat", "sub"]},
        )

    sdk(tokens[0])
    pyjwt(tokens[0])
    raw = raw_rate(keys, tokens, rounds)
    ours = rate(sdk, tokens, rounds)
    reference = rate(pyjwt, tokens[: max(count // 4, 1)], rounds)
    raw_again = raw_rate(keys, tokens, rounds)  # the machine may drift during the run
    raw = max(raw, raw_again)
    return {"raw": raw, "sdk": ours, "pyjwt": reference}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tokens", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    print(
        f"machine: {platform.machine()} {platform.processor() or ''}",
        f"python {platform.python_version()}",
    )
    print(f"{'alg':6} {'raw verify/s':>13} {'SDK/s':>9} {'SDK %':>6} {'PyJWT/s':>9} {'PyJWT %':>8}")
    for alg in ("RS256", "ES256"):
        result = run(alg, args.tokens, args.rounds)
        raw = result["raw"]
        print(
            f"{alg:6} {raw:13,.0f} {result['sdk']:9,.0f} {100 * result['sdk'] / raw:5.1f}% "
            f"{result['pyjwt']:9,.0f} {100 * result['pyjwt'] / raw:7.1f}%"
        )


if __name__ == "__main__":
    main()
