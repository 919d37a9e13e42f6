"""Return URLs after login (security invariant 5): only to the hub itself or configured hosts.

The configured hosts are the app hosts the proxy serves (:func:`return_origins`): a user
sent to the login by an app at ``https://orders.extranet.example/x`` comes back there.

Relative paths must be plain absolute paths ("/x", not "//x", "/\\x" or "x"); absolute URLs
must be http(s) without user info and on an allowed origin. Control characters and
backslashes anywhere are refused. Anything else falls back to the hub's home page.
"""

from __future__ import annotations

from collections.abc import Iterable
from urllib.parse import urlsplit

from federation.settings import Settings


def return_origins(settings: Settings) -> tuple[str, ...]:
    """Origins a return URL may point at besides the hub: the proxied apps' hosts."""
    from federation.proxy.routing import app_origins

    return app_origins(settings.apps, settings.issuer)


def safe_return_url_for(candidate: str | None, settings: Settings) -> str:
    """:func:`safe_return_url` with the hub's issuer and the proxied apps' origins."""
    return safe_return_url(candidate, settings.issuer, return_origins(settings))


def safe_return_url(candidate: str | None, issuer: str, allowed_origins: Iterable[str] = ()) -> str:
    fallback = "/"
    if not candidate or len(candidate) > 2048:
        return fallback
    if any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in candidate) or "\\" in candidate:
        return fallback
    if candidate.startswith("/"):
        return candidate if not candidate.startswith("//") else fallback
    try:
        parts = urlsplit(candidate)
        origin = _origin(candidate)
    except ValueError:  # e.g. a port out of range
        return fallback
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return fallback
    if parts.username is not None or parts.password is not None or "@" in parts.netloc:
        return fallback
    origins = {_origin(issuer), *(_origin(o) for o in allowed_origins)}
    return candidate if origin in origins else fallback


def _origin(url: str) -> str:
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    return f"{parts.scheme}://{(parts.hostname or '').lower()}:{port}"
