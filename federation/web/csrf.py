"""CSRF protection for every form (security invariant 8): double-submit token.

A random token lives in an ``HttpOnly``, ``SameSite=Lax`` cookie and in a hidden field of
each form the hub renders; a POST is accepted only when both are present and equal. A
cross-site page can neither read the cookie nor set it, so it cannot forge the field.
No server state is kept, so an anonymous GET of a form costs the store nothing.
"""

from __future__ import annotations

import hmac
import re
import secrets

from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import Response

from federation.errors import CsrfError
from federation.settings import Settings
from federation.web.cookies import set_cookie

CSRF_COOKIE = "isthmus_csrf"
CSRF_FIELD = "csrf"
CSRF_TTL = 3600
_TOKEN = re.compile(r"^[A-Za-z0-9_-]{32,64}$")


def token(request: Request) -> str:
    """The browser's token, or a new one (send it with :func:`remember`)."""
    current = request.cookies.get(CSRF_COOKIE, "")
    return current if _TOKEN.match(current) else secrets.token_urlsafe(32)


def remember(response: Response, settings: Settings, value: str) -> Response:
    set_cookie(response, settings, CSRF_COOKIE, value, CSRF_TTL)
    return response


def check(request: Request, form: FormData) -> str:
    """Refuse the POST unless its field matches the cookie; return the token."""
    cookie = request.cookies.get(CSRF_COOKIE, "")
    field = form.get(CSRF_FIELD)
    if not (isinstance(field, str) and _TOKEN.match(cookie) and hmac.compare_digest(cookie, field)):
        raise CsrfError(f"{request.url.path}: form token does not match its cookie")
    return cookie
