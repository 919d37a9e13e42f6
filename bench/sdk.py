"""SDK token validation: validations/s of TokenValidator beside the raw `cryptography`
verify rate of the same tokens, in the same run (and PyJWT's decode for reference).

    .venv/bin/python -m bench.sdk [--tokens 2000] [--rounds 5] [--chunk 100]

"raw" is the floor of any validator: one `key.verify(signature, signing_input, ...)` per
token with the signature and signing input already decoded (for ES256 already in DER).
The SDK does everything else on top of that (split, base64url, header lookup, JSON,
claims, HubClaims). Target (docs/architecture.md): SDK >= 80 % of raw for RS256.
The variants take turns on the same 100-token slices and each keeps its best slice (see
`interleaved`), so a shared machine's busy moments do not favour one of them.
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
from federation.sdk import TokenValidator, _codec

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


Pass = Callable[[int, int], None]  # validate tokens[lo:hi]


def interleaved(passes: dict[str, Pass], count: int, chunk: int, rounds: int) -> dict[str, float]:
    """Operations per second of each variant: the best of many short passes, the variants
    taking turns on the same slice of tokens, so that a busy moment of a shared machine
    hits them alike and the best windows compare like with like."""
    best = dict.fromkeys(passes, 0.0)
    for _ in range(rounds):
        for lo in range(0, count - chunk + 1, chunk):
            for name, work in passes.items():
                start = time.perf_counter()
                work(lo, lo + chunk)
                best[name] = max(best[name], chunk / (time.perf_counter() - start))
    return best


def raw_pass(keys: KeySet, tokens: list[str]) -> Pass:
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
    if isinstance(public, rsa.RSAPublicKey):
        rsa_key, pad, digest = public, padding.PKCS1v15(), hashes.SHA256()

        def rsa_pass(lo: int, hi: int) -> None:
            for data, signature in prepared[lo:hi]:
                rsa_key.verify(signature, data, pad, digest)

        return rsa_pass
    assert isinstance(public, ec.EllipticCurvePublicKey)
    ec_key, ecdsa = public, ec.ECDSA(hashes.SHA256())

    def ec_pass(lo: int, hi: int) -> None:
        for data, signature in prepared[lo:hi]:
            ec_key.verify(signature, data, ecdsa)

    return ec_pass


def codec_pass(codec: _codec.Codec, validate: Callable[[str], object], tokens: list[str]) -> Pass:
    """The SDK with one base64url/JSON implementation (see federation/sdk/_codec.py)."""

    def sdk_pass(lo: int, hi: int) -> None:
        saved = _codec.CODEC
        _codec.CODEC = codec
        try:
            for token in tokens[lo:hi]:
                validate(token)
        finally:
            _codec.CODEC = saved

    return sdk_pass


# The SDK with the standard library alone, and with the sdk-speedups extra if installed.
CODECS = tuple(c for c in (_codec.PURE, _codec.FAST) if c is not None)


def run(alg: Algorithm, count: int, rounds: int, chunk: int) -> dict[str, float]:
    keys = KeySet.generate(alg)
    tokens = make_tokens(keys, count)
    validator = TokenValidator(ISSUER, audience=AUDIENCE, jwks=keys.jwks())
    pyjwt_key = jwt.PyJWK(keys.current.public_jwk()).key

    def sdk(token: str) -> object:
        return validator.validate(token, typ="at+jwt")

    def pyjwt_pass(lo: int, hi: int) -> None:
        for token in tokens[lo:hi]:
            jwt.decode(
                token,
                pyjwt_key,
                algorithms=[alg],
                audience=AUDIENCE,
                issuer=ISSUER,
                leeway=30,
                options={"require": ["exp", "iat", "sub"]},
            )

    passes: dict[str, Pass] = {"raw": raw_pass(keys, tokens)}
    passes |= {f"sdk-{c.name}": codec_pass(c, sdk, tokens) for c in CODECS}
    passes["pyjwt"] = pyjwt_pass
    for work in passes.values():
        work(0, 1)  # warm: header cache, key objects
    return interleaved(passes, count, chunk, rounds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tokens", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--chunk", type=int, default=100, help="tokens per timed pass")
    args = parser.parse_args()
    print(
        f"machine: {platform.machine()} {platform.processor() or ''}",
        f"python {platform.python_version()}",
    )
    columns = "".join(f" {'SDK ' + c.name + '/s':>14} {'%':>6}" for c in CODECS)
    print(f"{'alg':6} {'raw verify/s':>13}{columns} {'PyJWT/s':>9} {'%':>6}")
    for alg in ("RS256", "ES256"):
        result = run(alg, args.tokens, args.rounds, args.chunk)
        raw = result["raw"]
        cells = "".join(
            f" {result['sdk-' + c.name]:14,.0f} {100 * result['sdk-' + c.name] / raw:5.1f}%"
            for c in CODECS
        )
        print(
            f"{alg:6} {raw:13,.0f}{cells} "
            f"{result['pyjwt']:9,.0f} {100 * result['pyjwt'] / raw:5.1f}%"
        )


if __name__ == "__main__":
    main()
