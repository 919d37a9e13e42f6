"""Headers on the way to an app and back, and the signed assertion JWT.

Towards the app (in this order): hop-by-hop headers go (RFC 9110 §7.6.1, plus any header
the ``Connection`` header names); every client-supplied identity header goes (the app's
``identity_headers`` names, its ``assertion_header``, anything starting with
``X-Isthmus-``, and ``Forwarded``/``X-Forwarded-*``) — invariant 6; the hub's session
cookie is taken out of ``Cookie`` (an app never sees it); then the hub adds
``X-Forwarded-For/Proto/Host``, ``X-Request-ID``, the identity headers and the assertion.
Incoming ``X-Forwarded-*`` are believed only from ``trusted_proxies``.
"""

from __future__ import annotations

import ipaddress
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any
from urllib.parse import quote

from federation import jose
from federation.identity import FederatedIdentity
from federation.keys import KeyManager
from federation.registry import Partner
from federation.settings import AppSettings

__all__ = [
    "ASSERTION_TTL",
    "HOP_BY_HOP",
    "AssertionIssuer",
    "Forwarded",
    "TrustedProxies",
    "hub_subject",
    "identity_header_names",
    "identity_header_values",
    "response_headers",
    "upstream_request_headers",
]

HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "proxy-connection",
        "proxy-authenticate",
        "proxy-authorization",
    }
)
# Set by the WebSocket client on its own handshake; never copied from the browser's.
WEBSOCKET_HANDSHAKE = frozenset(
    {"sec-websocket-key", "sec-websocket-version", "sec-websocket-extensions"}
)
_FORWARDED = frozenset(
    {"forwarded", "x-forwarded-for", "x-forwarded-proto", "x-forwarded-host", "x-real-ip"}
)
IDENTITY_PREFIX = "x-isthmus-"
ASSERTION_TTL = 60

Headers = list[tuple[str, str]]


class TrustedProxies:
    """The peers whose ``X-Forwarded-*`` the hub believes (``settings.trusted_proxies``)."""

    # Answers are remembered per address string (a pure function of it), bounded.
    _MEMO_SIZE = 4096

    def __init__(self, cidrs: Iterable[str]) -> None:
        self._networks = tuple(ipaddress.ip_network(c, strict=False) for c in cidrs)
        self._memo: dict[str, bool] = {}

    def __contains__(self, peer: object) -> bool:
        if not self._networks or not isinstance(peer, str):
            return False
        known = self._memo.get(peer)
        if known is not None:
            return known
        try:
            address = ipaddress.ip_address(peer)
        except ValueError:
            found = False
        else:
            found = any(address in network for network in self._networks)
        if len(self._memo) >= self._MEMO_SIZE:
            self._memo.clear()
        self._memo[peer] = found
        return found


@dataclass(frozen=True, slots=True)
class Forwarded:
    """What the request looked like from the client's side, as far as the hub can tell."""

    client_ip: str
    proto: str
    host: str
    # The X-Forwarded-For chain to send on (trusted incoming chain + the direct peer).
    chain: str

    @classmethod
    def of(
        cls,
        headers: Sequence[tuple[str, str]],
        peer: str,
        scheme: str,
        host: str,
        trusted: TrustedProxies,
    ) -> Forwarded:
        if peer not in trusted:
            return cls(peer, scheme, host, peer)
        incoming = {name.lower(): value for name, value in headers}
        hops = [h.strip() for h in incoming.get("x-forwarded-for", "").split(",") if h.strip()]
        # The client is the nearest hop that is not itself a trusted proxy.
        client = peer
        for hop in reversed(hops):
            client = hop
            if hop not in trusted:
                break
        proto = incoming.get("x-forwarded-proto", scheme).split(",")[0].strip().lower()
        return cls(
            client,
            proto if proto in ("http", "https") else scheme,
            incoming.get("x-forwarded-host", host).split(",")[0].strip() or host,
            ", ".join([*hops, peer]),
        )


@lru_cache(maxsize=16384)
def _hub_subject(key: tuple[str, str, str, str]) -> str:
    return FederatedIdentity(*key).hub_subject


def hub_subject(identity: FederatedIdentity) -> str:
    """``identity.hub_subject`` (a SHA-256 and a base32 of the identity's key), remembered
    per key: it is a pure function of the key, and every proxied request needs it."""
    return _hub_subject(identity.key)


def identity_header_names(app: AppSettings) -> frozenset[str]:
    names = {name.lower() for name in app.identity_headers}
    if app.assertion_header:
        names.add(app.assertion_header.lower())
    return frozenset(names)


def upstream_request_headers(
    headers: Sequence[tuple[str, str]],
    app: AppSettings,
    forwarded: Forwarded,
    *,
    session_cookie: str,
    websocket: bool = False,
) -> Headers:
    """The client's headers, cleaned: hop-by-hop, identity, forwarding and (unless
    ``preserve_host``) Host removed; the hub's session cookie taken out of Cookie."""
    dropped: frozenset[str] | set[str] = _always_dropped(app, websocket)
    for name, value in headers:
        if name.lower() == "connection":
            dropped = set(dropped)
            dropped.update(token.strip().lower() for token in value.split(","))
    kept: Headers = []
    for name, value in headers:
        lower = name.lower()
        if lower in dropped or lower.startswith(IDENTITY_PREFIX):
            continue
        if lower == "cookie":
            value = _without_cookie(value, session_cookie)
            if not value:
                continue
        kept.append((name, value))
    kept.append(("X-Forwarded-For", forwarded.chain))
    kept.append(("X-Forwarded-Proto", forwarded.proto))
    kept.append(("X-Forwarded-Host", forwarded.host))
    return kept


# The per-app part of the request headers dropped, by (id of the app settings, websocket):
# the settings object is kept beside the set so that a reused id() never matches.
_DROPPED: dict[tuple[int, bool], tuple[AppSettings, frozenset[str]]] = {}
_HOP_BY_HOP_BYTES = frozenset(name.encode() for name in HOP_BY_HOP)


def _always_dropped(app: AppSettings, websocket: bool) -> frozenset[str]:
    """Hop-by-hop, forwarding, the app's identity headers, X-Request-ID, Host (unless
    ``preserve_host``) and, for WebSockets, the handshake: computed once per app."""
    key = (id(app), websocket)
    cached = _DROPPED.get(key)
    if cached is not None and cached[0] is app:
        return cached[1]
    dropped = set(HOP_BY_HOP | _FORWARDED | identity_header_names(app))
    dropped.add("x-request-id")
    if not app.preserve_host:
        dropped.add("host")
    if websocket:
        dropped |= WEBSOCKET_HANDSHAKE | {"sec-websocket-protocol"}
    frozen = frozenset(dropped)
    if len(_DROPPED) >= 1024:
        _DROPPED.clear()
    _DROPPED[key] = (app, frozen)
    return frozen


def response_headers(headers: Iterable[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """The app's response headers less hop-by-hop ones (and those Connection names)."""
    pairs = list(headers)
    dropped: frozenset[bytes] | set[bytes] = _HOP_BY_HOP_BYTES
    for name, value in pairs:
        if name.lower() == b"connection":
            dropped = set(dropped)
            dropped.update(t.strip().lower() for t in value.split(b","))
    return [(n, v) for n, v in pairs if n.lower() not in dropped]


def identity_header_values(
    app: AppSettings, identity: FederatedIdentity, partner: Partner
) -> Headers:
    """The app's identity headers. ``subject`` is the hub subject (``sub`` of the
    assertion, stable and opaque); lists are comma-separated; values that are not
    printable ASCII are percent-encoded as UTF-8."""
    values: Headers = []
    for header, field_name in app.identity_headers.items():
        value = _identity_field(identity, partner, field_name)
        if value is not None:
            values.append((header, _header_safe(value)))
    return values


def _identity_field(identity: FederatedIdentity, partner: Partner, name: str) -> str | None:
    match name:
        case "subject":
            return hub_subject(identity)
        case "partner_id":
            return identity.partner_id
        case "partner_kind":
            return partner.settings.kind.value
        case "partner_name":
            return partner.settings.name
        case "connection_id":
            return identity.connection_id
        case "groups" | "roles" | "amr":
            items: tuple[str, ...] = getattr(identity, name)
            return ",".join(items)
        case "email" | "name" | "acr" | "issuer":
            found: str | None = getattr(identity, name)
            return found
        case "upstream_subject":
            return identity.subject
    return None


def _header_safe(value: str) -> str:
    if value.isascii() and value.isprintable():
        return value
    return quote(value, safe=" !\"#$&'()*+,-./:;<=>?@[]^_`{|}~")


def _without_cookie(header: str, name: str) -> str:
    parts = [p.strip() for p in header.split(";")]
    return "; ".join(p for p in parts if p and p.split("=", 1)[0].strip() != name)


class AssertionIssuer:
    """Signs the short-lived assertion JWT an app receives, with the hub's current key.

    Claims: ``iss`` (the hub), ``aud`` (the app id), ``sub`` (the hub subject), ``iat``,
    ``nbf``, ``exp`` (60 s), ``jti``, ``sid``, partner claims and the user's attributes.
    A signature costs far more than forwarding a request, so one token is reused for the
    same session, app and key while more than half its lifetime is left (bounded cache).
    """

    def __init__(
        self,
        keys: KeyManager,
        issuer: str,
        *,
        ttl: int = ASSERTION_TTL,
        clock: Callable[[], float] = time.time,
        cache_size: int = 10_000,
    ) -> None:
        self._keys = keys
        self._issuer = issuer
        self._ttl = ttl
        self._clock = clock
        self._cache: OrderedDict[tuple[str, str, str], tuple[str, float]] = OrderedDict()
        self._cache_size = cache_size

    def claims(
        self, app: AppSettings, identity: FederatedIdentity, partner: Partner, sid: str
    ) -> dict[str, Any]:
        now = int(self._clock())
        claims: dict[str, Any] = {
            "iss": self._issuer,
            "aud": app.id,
            "sub": hub_subject(identity),
            "iat": now,
            "nbf": now,
            "exp": now + self._ttl,
            "jti": secrets.token_urlsafe(16),
            "sid": sid,
            "partner": identity.partner_id,
            "partner_kind": partner.settings.kind.value,
            "partner_name": partner.settings.name,
            "connection": identity.connection_id,
            "email": identity.email,
            "email_verified": identity.email_verified,
            "name": identity.name,
            "groups": list(identity.groups),
            "roles": list(identity.roles),
            "acr": identity.acr,
        }
        return {k: v for k, v in claims.items() if v is not None}

    def issue(
        self, app: AppSettings, identity: FederatedIdentity, partner: Partner, sid: str
    ) -> str:
        key = self._keys.keys.current
        cache_key = (sid, app.id, key.kid)
        now = self._clock()
        cached = self._cache.get(cache_key)
        if cached is not None and cached[1] - now > self._ttl / 2:
            return cached[0]
        claims = self.claims(app, identity, partner, sid)
        token = jose.sign(claims, key.private_key, key.alg, key.kid)
        self._cache[cache_key] = (token, float(claims["exp"]))
        self._cache.move_to_end(cache_key)
        while len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
        return token
