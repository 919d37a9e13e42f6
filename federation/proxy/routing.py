"""Which app a request is for: its host and its path, normalized once (invariant 4).

The path is normalized with :func:`policies.paths.normalize` (case-insensitively for apps
that say so); the prefix match, the policy decision and the path forwarded upstream all
use that one normalized path. An ambiguous encoding raises :class:`AmbiguousPath` (a 400).
Apps named by host win over apps on any host; the longest path prefix wins within each.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from federation.settings import AppSettings
from policies.paths import AmbiguousPath, normalize

__all__ = [
    "HUB_PATHS",
    "AmbiguousPath",
    "AppRoute",
    "Match",
    "Router",
    "Upstream",
    "app_origins",
    "is_edge_path",
    "is_hub_path",
]

# The hub's own routes: on the hub's own host they always win over an app's path prefix.
HUB_PATHS = (
    "/login",
    "/logout",
    "/callback",
    "/mock",
    "/oauth2",
    "/saml",
    "/static",
    "/healthz",
    "/.well-known",
    "/forward-auth",
)


# The forward-auth endpoint: the hub's on every host, for calls from trusted edges.
EDGE_PATHS = ("/forward-auth",)


def is_edge_path(path: str) -> bool:
    return any(path == p or path.startswith(p + "/") for p in EDGE_PATHS)


def is_hub_path(path: str) -> bool:
    return any(path == p or path.startswith(p + "/") for p in HUB_PATHS)


@dataclass(frozen=True, slots=True)
class Upstream:
    """One upstream of an app: ``origin`` (scheme://host[:port]) and a base path, no ``/``
    at the end (``""`` for the root)."""

    origin: str
    base_path: str

    @classmethod
    def parse(cls, url: str) -> Upstream:
        parts = urlsplit(url)
        return cls(f"{parts.scheme}://{parts.netloc}", parts.path.rstrip("/"))

    @property
    def host(self) -> str:
        return urlsplit(self.origin).netloc


@dataclass(slots=True)
class AppRoute:
    app: AppSettings
    upstreams: tuple[Upstream, ...]
    prefix: str
    _turn: Iterator[int] = field(default_factory=itertools.count)

    @classmethod
    def of(cls, app: AppSettings) -> AppRoute:
        prefix = app.path_prefix.rstrip("/") or "/"
        if app.case_insensitive_paths:
            prefix = prefix.lower()
        return cls(app, tuple(Upstream.parse(u) for u in app.upstreams), prefix)

    def upstream(self) -> Upstream:
        """The next upstream, round robin."""
        return self.upstreams[next(self._turn) % len(self.upstreams)]

    def owns(self, path: str) -> bool:
        if self.prefix == "/":
            return True
        candidate = path.lower() if self.app.case_insensitive_paths else path
        return candidate == self.prefix or candidate.startswith(self.prefix + "/")

    def forward_path(self, path: str) -> str:
        """The path sent upstream: the normalized path, less the prefix when stripped."""
        if not self.app.strip_prefix or self.prefix == "/":
            return path
        return path[len(self.prefix) :] or "/"


@dataclass(frozen=True, slots=True)
class Match:
    route: AppRoute
    # The normalized path: what the policy decides on.
    path: str
    # What goes upstream (the same path, without the prefix when the app strips it).
    forward_path: str

    @property
    def app(self) -> AppSettings:
        return self.route.app


class Router:
    """Apps by host (exact, with or without port) and path prefix; framework-free."""

    def __init__(self, apps: Iterable[AppSettings]) -> None:
        self._by_host: dict[str, list[AppRoute]] = {}
        self._any_host: list[AppRoute] = []
        self._routes: dict[str, AppRoute] = {}
        for app in apps:
            route = AppRoute.of(app)
            self._routes[app.id] = route
            if not app.hosts:
                self._any_host.append(route)
            for host in app.hosts:
                self._by_host.setdefault(_host_key(host), []).append(route)
        for routes in (*self._by_host.values(), self._any_host):
            routes.sort(key=lambda r: len(r.prefix), reverse=True)

    def __bool__(self) -> bool:
        return bool(self._routes)

    def route(self, app_id: str) -> AppRoute | None:
        return self._routes.get(app_id)

    def candidates(self, host: str) -> Sequence[AppRoute]:
        key = _host_key(host)
        named = self._by_host.get(key)
        if named is None and ":" in key and not key.endswith("]"):
            named = self._by_host.get(key.rsplit(":", 1)[0])
        if named is None:
            return self._any_host
        return [*named, *self._any_host] if self._any_host else named

    def match(self, host: str, raw_path: str) -> Match | None:
        """The app for ``host`` and the raw (still percent-encoded) ``raw_path``, or None.

        Raises :class:`AmbiguousPath` when the path cannot be normalized for an app that
        could serve this host: such a request is refused, never passed on.
        """
        normalized: dict[bool, str] = {}
        for route in self.candidates(host):
            insensitive = route.app.case_insensitive_paths
            path = normalized.get(insensitive)
            if path is None:
                path = normalize(raw_path, case_insensitive=insensitive)
                normalized[insensitive] = path
            if route.owns(path):
                return Match(route, path, route.forward_path(path))
        return None


def app_origins(apps: Iterable[AppSettings], issuer: str) -> tuple[str, ...]:
    """The origins users reach apps at (return URLs after login may point there,
    invariant 5): each app host with the hub's scheme, and the hub's port unless the host
    entry names its own."""
    hub = urlsplit(issuer)
    origins: list[str] = []
    for app in apps:
        for host in app.hosts:
            netloc = host if ":" in host or hub.port is None else f"{host}:{hub.port}"
            origins.append(f"{hub.scheme}://{netloc.lower()}")
    return tuple(origins)


def _host_key(host: str) -> str:
    return host.strip().lower().rstrip(".")
