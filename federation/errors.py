"""Errors that carry a spec code, an HTTP status and a safe public message.

Every error the hub raises on purpose is an :class:`IsthmusError`. The web layer maps
them to responses in one place (``federation.web.errors``): JSON or HTML by ``Accept``,
always with a request id. ``detail`` goes to the log only, never to the client.
OAuth 2.0 / OIDC codes follow RFC 6749 §4.1.2.1, §5.2 and OIDC Core §3.1.2.6.
"""

from __future__ import annotations


class IsthmusError(Exception):
    error: str = "server_error"
    status: int = 500
    public_message: str = "Something went wrong. Please try again later."

    def __init__(
        self,
        detail: str = "",
        *,
        public_message: str | None = None,
        error: str | None = None,
        status: int | None = None,
    ) -> None:
        super().__init__(detail or self.public_message)
        self.detail = detail
        if public_message is not None:
            self.public_message = public_message
        if error is not None:
            self.error = error
        if status is not None:
            self.status = status


# --- OAuth 2.0 / OIDC protocol errors -------------------------------------------------


class InvalidRequest(IsthmusError):
    error = "invalid_request"
    status = 400
    public_message = "The request is missing a parameter or is malformed."


class InvalidClient(IsthmusError):
    error = "invalid_client"
    status = 401
    public_message = "Client authentication failed."


class InvalidGrant(IsthmusError):
    error = "invalid_grant"
    status = 400
    public_message = "The grant is invalid, expired, revoked or was issued to another client."


class UnauthorizedClient(IsthmusError):
    error = "unauthorized_client"
    status = 400
    public_message = "This client may not use this grant type."


class UnsupportedGrantType(IsthmusError):
    error = "unsupported_grant_type"
    status = 400
    public_message = "The grant type is not supported."


class UnsupportedResponseType(IsthmusError):
    error = "unsupported_response_type"
    status = 400
    public_message = "The response type is not supported."


class InvalidScope(IsthmusError):
    error = "invalid_scope"
    status = 400
    public_message = "The requested scope is invalid."


class InvalidToken(IsthmusError):
    error = "invalid_token"
    status = 401
    public_message = "The access token is invalid or expired."


class LoginRequired(IsthmusError):
    error = "login_required"
    status = 400
    public_message = "The user must sign in."


class AccessDenied(IsthmusError):
    error = "access_denied"
    status = 403
    public_message = "Access was denied."


class InvalidRedirectUri(IsthmusError):
    # Never redirect to an unregistered URI: shown to the user as a page instead.
    error = "invalid_redirect_uri"
    status = 400
    public_message = "The redirect URI is not registered for this application."


# --- Broker / federation errors ----------------------------------------------------------


class UpstreamError(IsthmusError):
    """The partner IdP answered with an error, or could not be reached."""

    error = "upstream_error"
    status = 502
    public_message = "Your company's sign-in service did not complete the sign-in."


class InvalidUpstreamResponse(IsthmusError):
    """The partner IdP's answer failed validation (signature, nonce, issuer, expiry...)."""

    error = "invalid_upstream_response"
    status = 400
    public_message = "The answer from your company's sign-in service could not be verified."


class InvalidState(IsthmusError):
    error = "invalid_state"
    status = 400
    public_message = "This sign-in link has expired or was already used. Please start again."


class PartnerMismatch(IsthmusError):
    """Invariant 1: an IdP asserted an identity outside its own partner's verified domains."""

    error = "partner_mismatch"
    status = 403
    public_message = "Your company's sign-in service is not allowed to sign in this email address."


class PartnerNotActive(IsthmusError):
    error = "partner_not_active"
    status = 403
    public_message = "Your company's access to this extranet is not active."


class UnknownDomain(IsthmusError):
    error = "unknown_domain"
    status = 404
    public_message = "We do not know a company for this email address."


class CsrfError(IsthmusError):
    error = "csrf_failed"
    status = 403
    public_message = "The form expired. Please reload the page and try again."


class NotFound(IsthmusError):
    error = "not_found"
    status = 404
    public_message = "This page does not exist."


class PayloadTooLarge(IsthmusError):
    error = "payload_too_large"
    status = 413
    public_message = "The request is too large."


class StoreUnavailable(IsthmusError):
    error = "temporarily_unavailable"
    status = 503
    public_message = "The service is temporarily unavailable. Please try again shortly."


class ConfigError(Exception):
    """Every configuration problem found at once, each with the path of the bad key."""

    def __init__(self, problems: list[tuple[str, str]]) -> None:
        self.problems = problems
        lines = [f"  {path or '<root>'}: {message}" for path, message in problems]
        super().__init__(f"{len(problems)} configuration problem(s):\n" + "\n".join(lines))
