"""TokenValidator against the hub's own keys: every rejection invariant 2 names, key
rotation and refresh, ES256, and the plain function API."""

from __future__ import annotations

import json
import time
from typing import Any

import httpx
import pytest
from jwt.utils import base64url_decode

from federation.hub import build_hub
from federation.jose import sign
from federation.sdk import HubClaims, InvalidToken, TokenValidator, validate_token
from federation.settings import KeySettings
from tests.oidc.support import ISSUER, Env, make_settings
from tests.sdk.support import HubEndpoints, b64, claims, forge, mint


def reason(validator: TokenValidator, token: str, **kwargs: Any) -> str:
    with pytest.raises(InvalidToken) as caught:
        validator.validate(token, **kwargs)
    return caught.value.reason


async def test_valid_access_token_gives_typed_claims(
    env: Env, validator: TokenValidator, endpoints: HubEndpoints
) -> None:
    got = validator.validate(mint(env.hub, roles=["approver"], sid="s1"), typ="at+jwt")
    assert isinstance(got, HubClaims)
    assert (got.subject, got.issuer, got.audience) == ("hub-subject-1", ISSUER, ("orders",))
    assert (got.partner_id, got.partner_kind, got.groups, got.roles) == (
        "acme",
        "supplier",
        ("buyers",),
        ("approver",),
    )
    assert (got.acr, got.amr, got.sid) == ("urn:mace:incommon:iap:silver", ("pwd",), "s1")
    assert got.expires_at == got.raw["exp"]
    with pytest.raises(TypeError):
        got.raw["sub"] = "x"  # type: ignore[index]
    validator.validate(mint(env.hub))
    assert endpoints.jwks_fetches == 1  # fetched lazily, once, then cached


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        ({"iss": "https://evil.example"}, "wrong_issuer"),
        ({"aud": "billing"}, "wrong_audience"),
        ({"aud": ["billing", "docs"]}, "wrong_audience"),
        ({"exp": -31}, "expired"),
        ({"nbf": 120}, "not_yet_valid"),
        ({"iat": 120}, "issued_in_future"),
        ({"exp": None}, "missing_claim"),
        ({"iat": None}, "missing_claim"),
        ({"sub": None}, "missing_claim"),
        ({"exp": "tomorrow"}, "invalid_claim"),
        ({"sub": 42}, "invalid_claim"),
    ],
)
async def test_claim_rejections(
    env: Env, validator: TokenValidator, extra: dict[str, Any], expected: str
) -> None:
    # Times are given relative to now (parameters are built at collection time).
    now = int(time.time())
    timed: dict[str, Any] = {
        k: now + v if k in ("exp", "nbf", "iat") and isinstance(v, int) else v
        for k, v in extra.items()
    }
    assert reason(validator, mint(env.hub, **timed)) == expected


async def test_leeway_is_honoured_and_capped(env: Env, endpoints: HubEndpoints) -> None:
    with endpoints.client() as http:
        lenient = TokenValidator(ISSUER, audience="orders", http=http, leeway=10_000)
        assert lenient.leeway == 300
        lenient.validate(mint(env.hub, exp=int(time.time()) - 200))
        assert reason(lenient, mint(env.hub, exp=int(time.time()) - 400)) == "expired"
    strict = TokenValidator(ISSUER, audience="orders", jwks=env.hub.keys.keys.jwks())
    strict.validate(mint(env.hub, exp=int(time.time()) - 20))  # within the default 30 s


async def test_audience_list_and_per_call_audience(env: Env, validator: TokenValidator) -> None:
    assert validator.validate(mint(env.hub, aud=["docs", "orders"])).audience == (
        "docs",
        "orders",
    )
    assert reason(validator, mint(env.hub), audience="docs") == "wrong_audience"
    assert validator.validate(mint(env.hub, aud="docs"), audience="docs").subject


async def test_alg_none_refused(env: Env, validator: TokenValidator) -> None:
    kid = env.hub.keys.keys.current.kid
    token = forge({"alg": "none", "kid": kid, "typ": "at+jwt"}, claims())
    assert reason(validator, token) == "unsupported_algorithm"
    for alg in ("None", "NONE"):
        token = forge({"alg": alg, "kid": kid}, claims())
        assert reason(validator, token) == "unsupported_algorithm"


async def test_hs256_signed_with_the_public_key_refused(
    env: Env, validator: TokenValidator
) -> None:
    """The classic confusion: HMAC keyed with the published RSA key (PEM and JWK forms)."""
    import hashlib
    import hmac

    from cryptography.hazmat.primitives import serialization

    current = env.hub.keys.keys.current
    pem = current.private_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    header = b64(json.dumps({"alg": "HS256", "kid": current.kid}).encode())
    body = b64(json.dumps(claims()).encode())
    for secret in (pem, json.dumps(current.public_jwk()).encode()):
        mac = hmac.new(secret, f"{header}.{body}".encode(), hashlib.sha256).digest()
        assert reason(validator, f"{header}.{body}.{b64(mac)}") == "unsupported_algorithm"
    with pytest.raises(ValueError, match="not allowed"):
        TokenValidator(ISSUER, audience="orders", algorithms=("RS256", "HS256"))
    with pytest.raises(ValueError, match="not allowed"):
        TokenValidator(ISSUER, audience="orders", algorithms=("none",))


async def test_key_bound_to_its_algorithm(env: Env, validator: TokenValidator) -> None:
    """An RSA key never verifies ES256 (or PS256 when its JWK says RS256)."""
    current = env.hub.keys.keys.current
    for alg in ("ES256", "PS256"):
        token = forge({"alg": alg, "kid": current.kid}, claims(), b"\x00" * 64)
        assert reason(validator, token) == "unsupported_algorithm"


async def test_oct_keys_never_verify() -> None:
    jwks = {"keys": [{"kty": "oct", "kid": "k", "k": b64(b"secret" * 8), "alg": "HS256"}]}
    validator = TokenValidator(ISSUER, audience="orders", jwks=jwks)
    token = forge({"alg": "RS256", "kid": "k"}, claims(), b"\x00" * 256)
    assert reason(validator, token) == "unknown_key"


async def test_unknown_crit_refused(env: Env, validator: TokenValidator) -> None:
    key = env.hub.keys.keys.current
    import jwt

    token = jwt.encode(
        claims(),
        key.private_key,
        algorithm="RS256",
        headers={"kid": key.kid, "crit": ["exp-ext"], "exp-ext": 1},
    )
    assert reason(validator, token) == "crit"


async def test_typ_checked(env: Env, validator: TokenValidator) -> None:
    id_token = mint(env.hub, typ="JWT")
    assert reason(validator, id_token, typ="at+jwt") == "wrong_type"
    assert validator.validate(id_token, typ="JWT").subject == "hub-subject-1"
    assert validator.validate(mint(env.hub, typ="application/at+jwt"), typ="at+jwt")
    # A logout token is never a credential, even when no typ is asked for.
    logout = mint(env.hub, typ="logout+jwt", events={"x": {}})
    assert reason(validator, logout) == "wrong_type"


async def test_tampered_payload_refused(env: Env, validator: TokenValidator) -> None:
    head, body, sig = mint(env.hub).split(".")
    payload = json.loads(base64url_decode(body))
    payload["partner_id"] = "globex"
    tampered = f"{head}.{b64(json.dumps(payload).encode())}.{sig}"
    assert reason(validator, tampered) == "bad_signature"
    flipped = sig[:10] + ("A" if sig[10] != "A" else "B") + sig[11:]
    assert reason(validator, f"{head}.{body}.{flipped}") == "bad_signature"
    assert reason(validator, f"{head}.{body}.") in ("bad_signature", "malformed")
    assert reason(validator, f"{head}.{body}.!!!") == "malformed"
    assert reason(validator, "a.b.c") == "malformed"
    assert reason(validator, "not-a-jwt") == "malformed"  # opaque, no introspection


async def test_unknown_kid_refetches_once_per_interval_then_refuses(env: Env) -> None:
    endpoints = HubEndpoints(env.hub)
    now = [time.time()]
    with endpoints.client() as http:
        validator = TokenValidator(
            ISSUER, audience="orders", http=http, jwks_refresh_interval=30, clock=lambda: now[0]
        )
        validator.validate(mint(env.hub))
        assert endpoints.jwks_fetches == 1
        stranger = build_hub(make_settings())  # another hub: keys the JWKS never lists
        for _ in range(5):
            assert reason(validator, mint(stranger)) == "unknown_key"
        assert endpoints.jwks_fetches == 2  # one refresh, then refusals without fetching
        now[0] += 31
        assert reason(validator, mint(stranger)) == "unknown_key"
        assert endpoints.jwks_fetches == 3
        validator.validate(mint(env.hub))  # known keys never refetch
        assert endpoints.jwks_fetches == 3


async def test_rotation_accepted_during_overlap(env: Env, endpoints: HubEndpoints) -> None:
    now = [time.time()]
    with endpoints.client() as http:
        validator = TokenValidator(ISSUER, audience="orders", http=http, clock=lambda: now[0])
        before = mint(env.hub)
        validator.validate(before)
        env.hub.keys.rotate()  # next (already published and cached) becomes current
        after = mint(env.hub)
        validator.validate(after)
        validator.validate(before)  # previous still published: still valid
        assert endpoints.jwks_fetches == 1
        env.hub.keys.rotate()  # a key the cached JWKS never saw
        now[0] += 31
        validator.validate(mint(env.hub))
        assert endpoints.jwks_fetches == 2
        validator.validate(after)  # now previous
        env.hub.keys.rotate()
        env.hub.keys.rotate()
        now[0] += 31
        validator.validate(mint(env.hub))
        assert reason(validator, before) == "unknown_key"  # retired from the JWKS


async def test_es256_hub() -> None:
    base = make_settings()
    settings = base.model_copy(update={"keys": KeySettings(algorithm="ES256")})
    hub = build_hub(settings)
    assert hub.keys.keys.current.alg == "ES256"
    validator = TokenValidator(ISSUER, audience="orders", jwks=hub.keys.keys.jwks())
    token = mint(hub)
    assert json.loads(base64url_decode(token.split(".")[0]))["alg"] == "ES256"
    assert validator.validate(token).partner_id == "acme"
    head, body, sig = token.split(".")
    raw = base64url_decode(sig)
    assert reason(validator, f"{head}.{body}.{b64(raw[:-1])}") == "bad_signature"
    assert reason(validator, f"{head}.{body}.{b64(raw[32:] + raw[:32])}") == "bad_signature"
    # ES256 only: an RS256-only validator refuses it.
    rs_only = TokenValidator(
        ISSUER, audience="orders", algorithms=("RS256",), jwks=hub.keys.keys.jwks()
    )
    assert reason(rs_only, token) == "unsupported_algorithm"


async def test_ps256_and_key_size(env: Env) -> None:
    key = env.hub.keys.keys.current
    jwk = {k: v for k, v in key.public_jwk().items() if k != "alg"}
    validator = TokenValidator(
        ISSUER, audience="orders", algorithms=("PS256",), jwks={"keys": [jwk]}
    )
    token = sign(claims(), key.private_key, "PS256", key.kid)
    assert validator.validate(token).subject == "hub-subject-1"


async def test_discovery_must_name_the_issuer(env: Env) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"issuer": "https://evil", "jwks_uri": ISSUER + "/j"})

    with httpx.Client(transport=httpx.MockTransport(handler)) as http:
        validator = TokenValidator(ISSUER, audience="orders", http=http)
        assert reason(validator, mint(env.hub)) == "jwks_unavailable"


async def test_function_api_caches_validators(env: Env) -> None:
    jwks = env.hub.keys.keys.jwks()
    first = validate_token(mint(env.hub), ISSUER, "orders", jwks=jwks)
    again = validate_token(mint(env.hub), ISSUER, "orders", jwks=jwks, typ="at+jwt")
    assert first.subject == again.subject == "hub-subject-1"
    with pytest.raises(InvalidToken) as caught:
        validate_token(mint(env.hub), ISSUER, "billing", jwks=jwks)
    assert caught.value.reason == "wrong_audience"


def test_sdk_imports_nothing_of_the_server() -> None:
    import subprocess
    import sys

    code = (
        "import sys, federation.sdk; "
        "bad = [m for m in sys.modules if m.split('.')[0] in "
        "('starlette', 'authlib', 'pydantic', 'redis', 'saml2', 'aiohttp', 'uvicorn') "
        "or (m.startswith('federation.') and not m.startswith('federation.sdk'))]; "
        "print(bad); sys.exit(1 if bad else 0)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stdout + done.stderr


async def test_base64_alphabet_and_non_finite_numbers_refused(
    env: Env, validator: TokenValidator
) -> None:
    """RFC 7515 uses base64url only: "+" or "/" anywhere is refused, not decoded; and a
    claim of NaN (which compares false to every time) never reaches the exp check."""
    token = mint(env.hub)
    head, body, sig = token.split(".")
    std = sig.replace("-", "+").replace("_", "/")
    if std == sig:  # no 62/63 sextets in this signature: force one
        std = "+" + sig[1:]
    assert reason(validator, f"{head}.{body}.{std}") == "malformed"
    assert reason(validator, f"{head}.{body.replace('-', '+')}x+.{sig}") == "malformed"
    for constant in ("nan", "inf", "-inf"):
        signed = mint(env.hub, exp=float(constant))  # signed by the hub's own key
        assert reason(validator, signed) == "malformed"
