"""TokenValidator: the hub's JWTs (access tokens, ID tokens, the proxy's assertion) checked
fast, with the hub's own rules (invariant 2).

The hot path does not go through ``jwt.decode``: the compact JWS is split here, its header
segment looked up in a small cache (the hub signs with a handful of keys, so there are a
handful of distinct headers), the signature checked by the ``cryptography`` key object
prepared per key, the payload base64url-decoded and parsed once (``_codec``: the standard
library, or pybase64 + orjson with the ``sdk-speedups`` extra), the claims compared
plainly, and :class:`HubClaims` a lazy view of them. Nothing is cached per token;
everything that can be is cached per key.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

import httpx
from cryptography.exceptions import InvalidSignature

from federation.sdk import _codec
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
_NUMBER = (int, float)
_setattr = object.__setattr__
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


class HubClaims:
    """What the hub says about the caller: typed, read-only views of the token's claims.

    Built on every validation, so it holds only the claims; each field reads them when
    asked (``groups`` and ``roles`` as tuples of strings, whatever the token carried).
    ``raw`` holds every claim, read-only.
    """

    __slots__ = ("_claims",)
    _claims: dict[str, Any]

    def __init__(self, claims: Mapping[str, Any]) -> None:
        _setattr(self, "_claims", dict(claims))

    @classmethod
    def from_claims(cls, claims: Mapping[str, Any]) -> HubClaims:
        made = object.__new__(cls)
        # Validated claims are a fresh dict nobody else holds: no copy on the hot path.
        _setattr(made, "_claims", claims if claims.__class__ is dict else dict(claims))
        return made

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError("HubClaims is read-only")

    def __eq__(self, other: object) -> bool:
        return isinstance(other, HubClaims) and other._claims == self._claims

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return (
            f"HubClaims(subject={self.subject!r}, partner_id={self.partner_id!r}, "
            f"audience={self.audience!r}, groups={self.groups!r}, roles={self.roles!r})"
        )

    @property
    def raw(self) -> Mapping[str, Any]:
        return MappingProxyType(self._claims)

    @property
    def subject(self) -> str:
        return _str(self._claims.get("sub")) or ""

    @property
    def issuer(self) -> str:
        return _str(self._claims.get("iss")) or ""

    @property
    def audience(self) -> tuple[str, ...]:
        aud = self._claims.get("aud")
        return (aud,) if aud.__class__ is str else _strs(aud)

    @property
    def partner_id(self) -> str | None:
        # Tokens carry partner_id; the proxy's assertion, partner.
        claims = self._claims
        return _str(claims["partner_id"] if "partner_id" in claims else claims.get("partner"))

    @property
    def partner_kind(self) -> str | None:
        return _str(self._claims.get("partner_kind"))

    @property
    def groups(self) -> tuple[str, ...]:
        return _strs(self._claims.get("groups"))

    @property
    def roles(self) -> tuple[str, ...]:
        return _strs(self._claims.get("roles"))

    @property
    def acr(self) -> str | None:
        return _str(self._claims.get("acr"))

    @property
    def amr(self) -> tuple[str, ...]:
        return _strs(self._claims.get("amr"))

    @property
    def email(self) -> str | None:
        return _str(self._claims.get("email"))

    @property
    def name(self) -> str | None:
        return _str(self._claims.get("name"))

    @property
    def sid(self) -> str | None:
        return _str(self._claims.get("sid"))

    @property
    def expires_at(self) -> float | None:
        exp = self._claims.get("exp")
        return exp if exp.__class__ in _NUMBER else None

    def has_group(self, group: str) -> bool:
        return group in self.groups

    def has_role(self, role: str) -> bool:
        return role in self.roles


def _str(value: object) -> str | None:
    return value if isinstance(value, str) else None


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


# No token matches it: "\uffff" is not base64url (and such a token is refused as non-ASCII).
_NO_HEADER = ("\uffff", _Header("", None, ()))


class _NeedKeys(Exception):
    pass


class _NotJws(Exception):
    """Not a compact JWS (not exactly two dots): an opaque token, for introspection."""


def _json_object(segment: str, what: str) -> dict[str, Any]:
    try:
        if not _codec.url_safe(segment):
            raise ValueError("base64, not base64url")
        value = _codec.CODEC.parse(_codec.CODEC.decode(segment.encode("ascii")))
    except ValueError:
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
        self._last_header: tuple[str, _Header] = _NO_HEADER
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
        try:
            claims = self._verify(token, audience, typ, self.required_claims, refresh=True)
        except _NeedKeys:
            self._refresh()
            claims = self._verify(token, audience, typ, self.required_claims, refresh=False)
        except _NotJws:
            claims = self._introspect(token, audience)
        made = object.__new__(HubClaims)
        _setattr(made, "_claims", claims)
        return made

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
        try:
            return self._verify(token, audience, typ, required, refresh=True)
        except _NeedKeys:
            self._refresh()
            return self._verify(token, audience, typ, required, refresh=False)
        except _NotJws:
            return self._introspect(token, audience)

    async def _aclaims(
        self, token: str, audience: str | None, typ: str | None, required: Sequence[str]
    ) -> dict[str, Any]:
        try:
            return self._verify(token, audience, typ, required, refresh=True)
        except _NeedKeys:
            await self._arefresh()
            return self._verify(token, audience, typ, required, refresh=False)
        except _NotJws:
            return await self._aintrospect(token, audience)

    def _verify(
        self,
        token: str,
        audience: str | None,
        typ: str | None,
        required: Sequence[str],
        *,
        refresh: bool,
    ) -> dict[str, Any]:
        # The compact serialization (RFC 7515 §7.1) cut at its two dots, in bytes: the
        # signing input is a view of the token, no segment is copied twice.
        first = token.find(".")
        last = token.rfind(".")
        if first == last or token.find(".", first + 1, last) != -1:
            raise _NotJws
        # Most tokens share the last header seen (one signing key): a prefix comparison
        # finds it without slicing and hashing the segment.
        last_head, header = self._last_header
        if first != len(last_head) or not token.startswith(last_head):
            head = token[:first]
            found = self._headers.get(head)
            header = found if found is not None else self._header(head, refresh)
            self._last_header = (head, header)
        if typ is None:
            if header.typ == LOGOUT_TYP:
                raise InvalidToken("wrong_type", "a logout token is not a credential")
        elif header.typ != (_TYPS.get(typ) or _typ(typ)):
            raise InvalidToken("wrong_type", f"expected typ {typ!r}, got {header.typ!r}")
        codec = _codec.CODEC
        try:
            if "+" in token or "/" in token:  # _codec.url_safe, inline on the hot path
                raise ValueError("base64, not base64url")
            raw = token.encode("ascii")
            signature = codec.decode(raw[last + 1 :])
        except ValueError:
            raise InvalidToken("malformed", "the signature is not base64url") from None
        signed = memoryview(raw)[:last]
        for verify in header.verifiers:
            try:
                verify(signed, signature)
                break
            except (InvalidSignature, ValueError):
                continue
        else:
            raise InvalidToken("bad_signature", "signature verification failed")
        try:
            claims = codec.parse(codec.decode(raw[first + 1 : last]))
        except ValueError:
            raise InvalidToken("malformed", "the payload is not base64url JSON") from None
        if claims.__class__ is not dict:
            raise InvalidToken("malformed", "the payload is not a JSON object")
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
        self._last_header = _NO_HEADER
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
