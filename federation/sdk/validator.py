"""TokenValidator: the hub's JWTs (access tokens, ID tokens, the proxy's assertion) checked
fast, with the hub's own rules (invariant 2).

The hot path does not go through ``jwt.decode``: the compact JWS is split here, its header
segment looked up in a small cache (the hub signs with a handful of keys, so there are a
handful of distinct headers), the signature checked by the ``cryptography`` key object
prepared per key, the payload base64url-decoded and parsed once, and the claims compared
plainly. Nothing is cached per token; everything that can be is cached per key.
"""

from __future__ import annotations

import asyncio
import binascii
import json
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

import httpx
from cryptography.exceptions import InvalidSignature

from federation.sdk._keys import SUPPORTED, BoundKey, Verifier, bind_all

__all__ = [
    "MAX_LEEWAY",
    "HubClaims",
    "IntrospectionConfig",
    "InvalidToken",
    "TokenValidator",
    "avalidate_token",
    "validate_token",
]

MAX_LEEWAY = 300.0
_HEADER_CACHE_SIZE = 64
_B64_TABLE = bytes.maketrans(b"-_", b"+/")
_PAD = (b"", b"", b"==", b"=")  # by len % 4 (1 is malformed: caught by a2b_base64)
_NUMBER = (int, float)
_SCAN: Callable[[str, int], tuple[Any, int]] = json.JSONDecoder().scan_once  # type: ignore[attr-defined]
_setattr = object.__setattr__
a2b_base64 = binascii.a2b_base64
_TYPS = {"at+jwt": "at+jwt", "jwt": "jwt", "JWT": "jwt", "logout+jwt": "logout+jwt"}
LOGOUT_TYP = "logout+jwt"


class InvalidToken(Exception):
    """The one exception of the SDK: ``reason`` is a stable code, ``str()`` the detail.

    Reasons: malformed, unsupported_algorithm, crit, wrong_type, unknown_key,
    bad_signature, wrong_issuer, wrong_audience, expired, not_yet_valid, issued_in_future,
    missing_claim, invalid_claim, inactive, jwks_unavailable, introspection_unavailable,
    and for logout tokens: not_logout_token, nonce_present, replayed.
    """

    def __init__(self, reason: str, detail: str | None = None) -> None:
        super().__init__(detail or reason)
        self.reason = reason


@dataclass(frozen=True)
class HubClaims:
    """What the hub says about the caller. ``raw`` holds every claim, read-only."""

    subject: str
    issuer: str
    audience: tuple[str, ...]
    partner_id: str | None
    partner_kind: str | None
    groups: tuple[str, ...]
    roles: tuple[str, ...]
    acr: str | None
    amr: tuple[str, ...]
    email: str | None
    name: str | None
    sid: str | None
    expires_at: float | None
    raw: Mapping[str, Any]

    @classmethod
    def from_claims(cls, claims: Mapping[str, Any]) -> HubClaims:
        get = claims.get
        aud = get("aud")
        exp = get("exp")
        partner = get("partner_id", get("partner"))  # tokens: partner_id; assertion: partner
        kind, acr, email, name, sid = (
            get("partner_kind"),
            get("acr"),
            get("email"),
            get("name"),
            get("sid"),
        )
        made = object.__new__(cls)
        # The fields set without fourteen object.__setattr__ calls: same result as __init__.
        _setattr(
            made,
            "__dict__",
            {
                "subject": get("sub"),
                "issuer": get("iss"),
                "audience": (aud,) if aud.__class__ is str else _strs(aud),
                "partner_id": partner if partner.__class__ is str else None,
                "partner_kind": kind if kind.__class__ is str else None,
                "groups": _strs(get("groups")),
                "roles": _strs(get("roles")),
                "acr": acr if acr.__class__ is str else None,
                "amr": _strs(get("amr")),
                "email": email if email.__class__ is str else None,
                "name": name if name.__class__ is str else None,
                "sid": sid if sid.__class__ is str else None,
                "expires_at": exp if exp.__class__ in _NUMBER else None,
                "raw": MappingProxyType(claims if claims.__class__ is dict else dict(claims)),
            },
        )
        return made

    def has_group(self, group: str) -> bool:
        return group in self.groups

    def has_role(self, role: str) -> bool:
        return role in self.roles


def _strs(value: object) -> tuple[str, ...]:
    if value is None:
        return ()
    if value.__class__ is list:
        found = tuple(value)
        for item in found:
            if item.__class__ is not str:
                return tuple(v for v in found if isinstance(v, str))
        return found
    if isinstance(value, str):
        return tuple(value.split())  # space-separated (a scope-style string)
    if isinstance(value, tuple):
        return tuple(v for v in value if isinstance(v, str))
    return ()


@dataclass(frozen=True)
class IntrospectionConfig:
    """RFC 7662 fallback for opaque tokens: the resource server's own client credentials.

    ``endpoint`` defaults to the discovery document's ``introspection_endpoint``.
    """

    client_id: str
    client_secret: str
    endpoint: str | None = None
    auth_method: str = "client_secret_basic"  # or "client_secret_post"
    timeout: float = 5.0


@dataclass(frozen=True, slots=True)
class _Header:
    alg: str
    typ: str | None  # lower case, "application/" removed
    verifiers: tuple[Verifier, ...]


class _NeedKeys(Exception):
    pass


def _b64decode(segment: str) -> bytes:
    raw = segment.encode("ascii").translate(_B64_TABLE)
    return binascii.a2b_base64(raw + _PAD[len(raw) & 3], strict_mode=True)


def _json_object(segment: str, what: str) -> dict[str, Any]:
    try:
        text = _b64decode(segment).decode("utf-8")
        try:
            # The C scanner json.loads uses, without its encoding sniffing and whitespace
            # regular expressions (the hub's JSON has no whitespace around it).
            value, end = _SCAN(text, 0)
        except StopIteration:
            end = -1
        if end != len(text):
            value = json.loads(text)
    except (ValueError, binascii.Error):
        raise InvalidToken("malformed", f"the {what} is not base64url JSON") from None
    if not isinstance(value, dict):
        raise InvalidToken("malformed", f"the {what} is not a JSON object")
    return value


def _typ(value: object) -> str | None:
    if not isinstance(value, str):
        return None
    lowered = value.lower()
    return lowered[12:] if lowered.startswith("application/") else lowered


class TokenValidator:
    """Validates the hub's JWTs; one per (issuer, audience) and kept for the process.

    Keys come from the hub's discovery document (``jwks_uri``), fetched on first use and
    cached; a token with an unknown ``kid`` refetches them at most once per
    ``jwks_refresh_interval`` seconds, and is refused otherwise. With ``jwks`` given the
    keys are those, and nothing is fetched.
    """

    def __init__(
        self,
        issuer: str,
        *,
        audience: str | Sequence[str],
        algorithms: Sequence[str] = ("RS256", "ES256"),
        leeway: float = 30,
        required_claims: Sequence[str] = ("exp", "iat", "sub"),
        jwks_refresh_interval: float = 30,
        http: httpx.Client | None = None,
        jwks: Mapping[str, Any] | None = None,
        introspection: IntrospectionConfig | None = None,
        clock: Callable[[], float] = time.time,
        async_http: httpx.AsyncClient | None = None,
        jwks_uri: str | None = None,
    ) -> None:
        self.issuer = issuer
        self.audiences: frozenset[str] = frozenset(
            (audience,) if isinstance(audience, str) else audience
        )
        if not self.audiences:
            raise ValueError("an audience is required")
        unknown = set(algorithms) - SUPPORTED
        if unknown:
            # Catches "none" and HS*: never accepted, whatever the caller asks.
            raise ValueError(f"algorithms not allowed: {sorted(unknown)}")
        self.algorithms = frozenset(algorithms)
        self.leeway = min(max(float(leeway), 0.0), MAX_LEEWAY)
        self.required_claims = tuple(required_claims)
        self.jwks_refresh_interval = jwks_refresh_interval
        self.introspection = introspection
        self._clock = clock
        self._http = http
        self._async_http = async_http
        self._jwks_uri = jwks_uri
        self._metadata: dict[str, Any] | None = None
        self._static = jwks is not None
        self._keys: dict[str | None, BoundKey] = {}
        self._anonymous: list[BoundKey] = []  # keys without a kid
        self._headers: dict[str, _Header] = {}
        self._fetched_at: float | None = None
        self._refreshed_at: float | None = None
        self._loaded = False
        self._lock = threading.Lock()
        self._alock: asyncio.Lock | None = None
        self.fetches = 0  # JWKS fetches made (observability, tests)
        if jwks is not None:
            self._install(jwks)

    # -- public API ---------------------------------------------------------------------

    def validate(
        self, token: str, *, audience: str | None = None, typ: str | None = None
    ) -> HubClaims:
        """A JWT of the hub (or, with introspection configured, an opaque token)."""
        if token.count(".") == 2:
            try:
                claims = self._verify(token, audience, typ, self.required_claims, refresh=True)
            except _NeedKeys:
                self._refresh()
                claims = self._verify(token, audience, typ, self.required_claims, refresh=False)
        else:
            claims = self._introspect(token, audience)
        return HubClaims.from_claims(claims)

    async def avalidate(
        self, token: str, *, audience: str | None = None, typ: str | None = None
    ) -> HubClaims:
        """As :meth:`validate`; key fetches and introspection go through httpx.AsyncClient."""
        claims = await self._aclaims(token, audience, typ, self.required_claims)
        return HubClaims.from_claims(claims)

    def validate_assertion(self, header_value: str) -> HubClaims:
        """The proxy's assertion header (``X-Isthmus-Assertion``): aud is the app's id,
        which is this validator's audience."""
        value = header_value.strip()
        if value[:7].lower() == "bearer ":
            value = value[7:].strip()
        if value.count(".") != 2:
            raise InvalidToken("malformed", "the assertion is not a JWT")
        return self.validate(value, typ="jwt")

    # -- the hot path -------------------------------------------------------------------

    def _claims(
        self, token: str, audience: str | None, typ: str | None, required: Sequence[str]
    ) -> dict[str, Any]:
        if token.count(".") != 2:
            return self._introspect(token, audience)
        try:
            return self._verify(token, audience, typ, required, refresh=True)
        except _NeedKeys:
            self._refresh()
            return self._verify(token, audience, typ, required, refresh=False)

    async def _aclaims(
        self, token: str, audience: str | None, typ: str | None, required: Sequence[str]
    ) -> dict[str, Any]:
        if token.count(".") != 2:
            return await self._aintrospect(token, audience)
        try:
            return self._verify(token, audience, typ, required, refresh=True)
        except _NeedKeys:
            await self._arefresh()
            return self._verify(token, audience, typ, required, refresh=False)

    def _verify(
        self,
        token: str,
        audience: str | None,
        typ: str | None,
        required: Sequence[str],
        *,
        refresh: bool,
    ) -> dict[str, Any]:
        head, body, sig = token.split(".")
        header = self._headers.get(head)
        if header is None:
            header = self._header(head, refresh)
        if typ is None:
            if header.typ == LOGOUT_TYP:
                raise InvalidToken("wrong_type", "a logout token is not a credential")
        elif header.typ != (_TYPS.get(typ) or _typ(typ)):
            raise InvalidToken("wrong_type", f"expected typ {typ!r}, got {header.typ!r}")
        try:
            raw = token.encode("ascii")
            sig_b = sig.encode("ascii").translate(_B64_TABLE)
            signature = a2b_base64(sig_b + _PAD[len(sig_b) & 3], strict_mode=True)
        except (ValueError, binascii.Error):
            raise InvalidToken("malformed", "the signature is not base64url") from None
        signed = memoryview(raw)[: len(head) + 1 + len(body)]
        for verify in header.verifiers:
            try:
                verify(signed, signature)
                break
            except (InvalidSignature, ValueError):
                continue
        else:
            raise InvalidToken("bad_signature", "signature verification failed")
        claims = _json_object(body, "payload")
        self._check(claims, audience, required)
        return claims

    def _check(self, claims: dict[str, Any], audience: str | None, required: Sequence[str]) -> None:
        for name in required:
            if name not in claims:
                raise InvalidToken("missing_claim", f"the {name!r} claim is required")
        if claims.get("iss") != self.issuer:
            raise InvalidToken("wrong_issuer", f"issuer {claims.get('iss')!r} is not expected")
        aud = claims.get("aud")
        if audience is None:
            expected = self.audiences
            if isinstance(aud, str):
                ok = aud in expected
            else:
                ok = isinstance(aud, list) and any(a in expected for a in aud)
        elif isinstance(aud, str):
            ok = aud == audience
        else:
            ok = isinstance(aud, list) and audience in aud
        if not ok:
            raise InvalidToken("wrong_audience", f"audience {aud!r} is not expected")
        now = self._clock()
        leeway = self.leeway
        exp = claims.get("exp")
        if exp is not None:
            if exp.__class__ not in _NUMBER:
                raise InvalidToken("invalid_claim", "exp is not a number")
            if exp <= now - leeway:
                raise InvalidToken("expired", "the token has expired")
        nbf = claims.get("nbf")
        if nbf is not None:
            if nbf.__class__ not in _NUMBER:
                raise InvalidToken("invalid_claim", "nbf is not a number")
            if nbf > now + leeway:
                raise InvalidToken("not_yet_valid", "the token is not yet valid")
        iat = claims.get("iat")
        if iat is not None:
            if iat.__class__ not in _NUMBER:
                raise InvalidToken("invalid_claim", "iat is not a number")
            if iat > now + leeway:
                raise InvalidToken("issued_in_future", "the token was issued in the future")
        sub = claims.get("sub")
        if sub is not None and sub.__class__ is not str:
            raise InvalidToken("invalid_claim", "sub is not a string")

    def _header(self, head: str, refresh: bool) -> _Header:
        """Parse a header segment and resolve its key (cached per segment, per key set)."""
        header = _json_object(head, "header")
        alg = header.get("alg")
        if not isinstance(alg, str) or alg not in self.algorithms:
            raise InvalidToken("unsupported_algorithm", f"algorithm {alg!r} is not allowed")
        if "crit" in header:
            # No JWS extension is implemented, so every critical one is unknown (RFC 7515).
            raise InvalidToken("crit", f"unsupported critical parameters {header['crit']!r}")
        kid = header.get("kid")
        if kid is not None and not isinstance(kid, str):
            raise InvalidToken("malformed", "kid is not a string")
        if not self._loaded:
            if refresh and self._refresh_due():
                raise _NeedKeys
            raise InvalidToken("jwks_unavailable", "the hub's keys could not be fetched")
        if kid is None:
            candidates = self._anonymous or list(self._keys.values())
        else:
            known = self._keys.get(kid)
            candidates = [known] if known is not None else []
        if not candidates:
            if refresh and self._refresh_due():
                raise _NeedKeys
            raise InvalidToken("unknown_key", f"no key with kid {kid!r}")
        verifiers = tuple(k.verifiers[alg] for k in candidates if alg in k.verifiers)
        if not verifiers:
            raise InvalidToken("unsupported_algorithm", f"the key is not bound to {alg}")
        resolved = _Header(alg, _typ(header.get("typ")), verifiers)
        if len(self._headers) >= _HEADER_CACHE_SIZE:
            self._headers.clear()
        self._headers[head] = resolved
        return resolved

    # -- keys ---------------------------------------------------------------------------

    def _install(self, jwks: Mapping[str, Any]) -> None:
        bound = bind_all(jwks, self.algorithms)
        self._keys = {k.kid: k for k in bound if k.kid is not None}
        self._anonymous = [k for k in bound if k.kid is None]
        self._headers = {}
        self._loaded = True

    def _refresh_due(self) -> bool:
        """First load: now (failures retried after min(interval, 5 s)). Afterwards an
        unknown kid may refetch once per ``jwks_refresh_interval``."""
        if self._static:
            return False
        now = self._clock()
        if not self._loaded:
            retry = min(self.jwks_refresh_interval, 5.0)
            return self._fetched_at is None or now - self._fetched_at >= retry
        return self._refreshed_at is None or now - self._refreshed_at >= self.jwks_refresh_interval

    def _refresh(self) -> None:
        with self._lock:
            if not self._refresh_due():
                return  # another thread just fetched
            self._fetched_at = self._clock()
            if self._loaded:
                self._refreshed_at = self._fetched_at
            self.fetches += 1
            try:
                client = self._http or httpx.Client(timeout=5.0)
                try:
                    uri = self._jwks_uri or self._discover(client)["jwks_uri"]
                    response = client.get(uri)
                    response.raise_for_status()
                    jwks = response.json()
                finally:
                    if client is not self._http:
                        client.close()
            except (httpx.HTTPError, ValueError, KeyError, TypeError):
                return  # keys stay as they were; the token is refused below
            self._install(jwks)

    def _discover(self, client: httpx.Client) -> dict[str, Any]:
        if self._metadata is None:
            response = client.get(self.issuer.rstrip("/") + "/.well-known/openid-configuration")
            response.raise_for_status()
            self._metadata = self._checked_metadata(response.json())
        return self._metadata

    async def _adiscover(self, client: httpx.AsyncClient) -> dict[str, Any]:
        if self._metadata is None:
            response = await client.get(
                self.issuer.rstrip("/") + "/.well-known/openid-configuration"
            )
            response.raise_for_status()
            self._metadata = self._checked_metadata(response.json())
        return self._metadata

    def _checked_metadata(self, metadata: object) -> dict[str, Any]:
        # OpenID Connect Discovery 1.0 §4.3: the document must name the issuer asked for.
        if not isinstance(metadata, dict) or metadata.get("issuer") != self.issuer:
            raise ValueError("the discovery document is for another issuer")
        return metadata

    async def _arefresh(self) -> None:
        if self._alock is None:
            self._alock = asyncio.Lock()
        async with self._alock:
            if not self._refresh_due():
                return
            if self._async_http is None and self._http is not None:
                await asyncio.to_thread(self._refresh)
                return
            self._fetched_at = self._clock()
            if self._loaded:
                self._refreshed_at = self._fetched_at
            self.fetches += 1
            try:
                client = self._async_http or httpx.AsyncClient(timeout=5.0)
                try:
                    uri = self._jwks_uri or (await self._adiscover(client))["jwks_uri"]
                    response = await client.get(uri)
                    response.raise_for_status()
                    jwks = response.json()
                finally:
                    if client is not self._async_http:
                        await client.aclose()
            except (httpx.HTTPError, ValueError, KeyError, TypeError):
                return
            self._install(jwks)

    # -- introspection (RFC 7662) -------------------------------------------------------

    def _introspection_request(self, token: str) -> tuple[dict[str, str], httpx.BasicAuth | None]:
        config = self.introspection
        assert config is not None
        form = {"token": token}
        if config.auth_method == "client_secret_post":
            form |= {"client_id": config.client_id, "client_secret": config.client_secret}
            return form, None
        return form, httpx.BasicAuth(config.client_id, config.client_secret)

    def _introspect(self, token: str, audience: str | None) -> dict[str, Any]:
        config = self._opaque(token)
        try:
            client = self._http or httpx.Client(timeout=config.timeout)
            try:
                endpoint = config.endpoint or self._discover(client)["introspection_endpoint"]
                form, auth = self._introspection_request(token)
                response = client.post(endpoint, data=form, auth=auth or httpx.USE_CLIENT_DEFAULT)
                response.raise_for_status()
                answer = response.json()
            finally:
                if client is not self._http:
                    client.close()
        except (httpx.HTTPError, ValueError, KeyError, TypeError):
            raise InvalidToken("introspection_unavailable", "introspection failed") from None
        return self._introspected(answer, audience)

    async def _aintrospect(self, token: str, audience: str | None) -> dict[str, Any]:
        config = self._opaque(token)
        try:
            client = self._async_http or httpx.AsyncClient(timeout=config.timeout)
            try:
                endpoint = (
                    config.endpoint or (await self._adiscover(client))["introspection_endpoint"]
                )
                form, auth = self._introspection_request(token)
                response = await client.post(
                    endpoint, data=form, auth=auth or httpx.USE_CLIENT_DEFAULT
                )
                response.raise_for_status()
                answer = response.json()
            finally:
                if client is not self._async_http:
                    await client.aclose()
        except (httpx.HTTPError, ValueError, KeyError, TypeError):
            raise InvalidToken("introspection_unavailable", "introspection failed") from None
        return self._introspected(answer, audience)

    def _opaque(self, token: str) -> IntrospectionConfig:
        if self.introspection is None:
            raise InvalidToken("malformed", "not a JWT and no introspection is configured")
        if not token or len(token) > 8192 or not token.isascii() or not token.isprintable():
            raise InvalidToken("malformed", "not a token")
        return self.introspection

    def _introspected(self, answer: object, audience: str | None) -> dict[str, Any]:
        if not isinstance(answer, dict) or answer.get("active") is not True:
            raise InvalidToken("inactive", "the token is not active")
        claims = dict(answer)
        claims.setdefault("iss", self.issuer)
        if "aud" not in claims and isinstance(claims.get("client_id"), str):
            # A hub refresh token names its client, not an audience: the client is it.
            claims["aud"] = claims["client_id"]
        self._check(claims, audience, ("sub", "aud"))
        return claims


_VALIDATORS: dict[tuple[Any, ...], TokenValidator] = {}
_VALIDATORS_LOCK = threading.Lock()


def _cached(issuer: str, audience: str | Sequence[str], options: dict[str, Any]) -> TokenValidator:
    aud = (audience,) if isinstance(audience, str) else tuple(audience)
    key = (issuer, aud, tuple(sorted((k, _hashable(v)) for k, v in options.items())))
    found = _VALIDATORS.get(key)
    if found is None:
        with _VALIDATORS_LOCK:
            found = _VALIDATORS.get(key)
            if found is None:
                found = _VALIDATORS[key] = TokenValidator(issuer, audience=aud, **options)
    return found


def _hashable(value: Any) -> Any:
    if isinstance(value, list | tuple):
        return tuple(value)
    if isinstance(value, Mapping):
        return id(value)
    return value


def validate_token(
    token: str,
    issuer: str,
    audience: str | Sequence[str],
    *,
    typ: str | None = None,
    **options: Any,
) -> HubClaims:
    """Plain-function API: one cached :class:`TokenValidator` per (issuer, audience,
    options), so keys are fetched once per process."""
    return _cached(issuer, audience, options).validate(token, typ=typ)


async def avalidate_token(
    token: str,
    issuer: str,
    audience: str | Sequence[str],
    *,
    typ: str | None = None,
    **options: Any,
) -> HubClaims:
    return await _cached(issuer, audience, options).avalidate(token, typ=typ)
