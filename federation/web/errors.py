"""Every error becomes a response here, and only here: JSON or HTML by ``Accept``.

Responses carry the spec code, a safe public message and the request id; the detail and
any traceback go to the log only (security invariant 7).
"""

from __future__ import annotations

import logging
from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from federation.admin.documents import VersionConflict
from federation.errors import IsthmusError, NotFound, StoreUnavailable
from federation.web.templating import render

_log = logging.getLogger("isthmus.errors")


def wants_json(request: Request) -> bool:
    if request.url.path.startswith("/admin/api/"):
        return True  # the admin API answers JSON only, whatever the client accepts
    accept = request.headers.get("accept", "")
    if "text/html" in accept:
        return False
    return "json" in accept or request.url.path.startswith(("/oauth2/", "/.well-known/"))


def error_response(request: Request, exc: IsthmusError, *, challenge: str = "Bearer") -> Response:
    """The response for ``exc``; ``challenge`` names the auth scheme a 401 asks for
    (``Basic`` where OAuth clients authenticate, RFC 6749 §5.2; else ``Bearer``, RFC 6750)."""
    request_id = getattr(request.state, "request_id", "")
    log = _log.error if exc.status >= 500 else _log.warning
    log(
        "%s %s -> %s %s: %s [request_id=%s]",
        request.method,
        request.url.path,
        exc.status,
        exc.error,
        exc.detail,
        request_id,
    )
    headers = {"Cache-Control": "no-store", "Pragma": "no-cache", "X-Request-ID": request_id}
    if exc.status == 401 and request.url.path.startswith(("/oauth2/", "/admin/api/")):
        headers["WWW-Authenticate"] = (
            'Basic realm="isthmus"'
            if challenge == "Basic"
            else f'Bearer realm="isthmus", error="{exc.error}"'
        )
    if wants_json(request):
        body = {
            "error": exc.error,
            "error_description": exc.public_message,
            "request_id": request_id,
            **public_fields(exc),
        }
        return JSONResponse(body, status_code=exc.status, headers=headers)
    response = render(
        request,
        "error.html",
        status=exc.status,
        error=exc,
        retry_url=getattr(exc, "retry_url", None),
    )
    response.headers.update(headers)
    return response


def public_fields(exc: IsthmusError) -> dict[str, Any]:
    """What an error adds to its JSON body: ``errors`` (kind, id, dotted field, message) of
    refused documents, ``conflicts`` of a stale write."""
    fields: dict[str, Any] = {}
    extra = getattr(exc, "public_fields", None)
    if callable(extra):
        fields.update(extra())
    if isinstance(exc, VersionConflict):
        fields["conflicts"] = [
            {"kind": kind, "id": doc_id, "expected_version": expected, "current_version": found}
            for kind, doc_id, expected, found in exc.conflicts
        ]
    return fields


async def isthmus_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, IsthmusError)
    return error_response(request, exc)


async def http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if exc.status_code == 404:
        return error_response(request, NotFound(f"no route for {request.url.path}"))
    return error_response(
        request,
        IsthmusError(
            str(exc.detail),
            status=exc.status_code,
            error="http_error",
            public_message="The request could not be handled.",
        ),
    )


async def unexpected_error(request: Request, exc: Exception) -> Response:
    request_id = getattr(request.state, "request_id", "")
    if isinstance(exc, ConnectionError | TimeoutError):
        return error_response(request, StoreUnavailable(repr(exc)))
    _log.exception("unhandled error [request_id=%s]", request_id, exc_info=exc)
    return error_response(request, IsthmusError("unhandled exception"))
