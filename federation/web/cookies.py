"""Cookie policy: HttpOnly, SameSite=Lax, Secure unless plain http was explicitly allowed."""

from __future__ import annotations

from starlette.responses import Response

from federation.settings import Settings

FLOW_COOKIE = "isthmus_flow"


def set_cookie(response: Response, settings: Settings, name: str, value: str, max_age: int) -> None:
    response.set_cookie(
        name,
        value,
        max_age=max_age,
        path="/",
        domain=_domain(settings, name),
        secure=not settings.allow_insecure_http,
        httponly=True,
        samesite="lax",
    )


def clear_cookie(response: Response, settings: Settings, name: str) -> None:
    response.delete_cookie(
        name,
        path="/",
        domain=_domain(settings, name),
        secure=not settings.allow_insecure_http,
        httponly=True,
        samesite="lax",
    )


def _domain(settings: Settings, name: str) -> str | None:
    """Only the session cookie is shared with app hosts (``session.cookie_domain``); flow
    and CSRF cookies stay host-only."""
    return settings.session.cookie_domain if name == settings.session.cookie_name else None
