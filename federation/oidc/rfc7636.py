"""RFC 7636 — Proof Key for Code Exchange (PKCE), S256 only.

Required for public clients; a confidential client that sends a challenge has it
enforced too. ``plain`` is refused: it protects nothing against a code interceptor that
also sees the authorization request. The S256 transform is authlib's.
"""

from __future__ import annotations

import hmac
import re

from authlib.oauth2.rfc7636 import create_s256_code_challenge

from federation.errors import InvalidGrant, InvalidRequest

# RFC 7636 §4.1: 43-128 unreserved characters (the challenge of S256 is always 43).
_VERIFIER = re.compile(r"^[A-Za-z0-9._~-]{43,128}$")
_CHALLENGE = re.compile(r"^[A-Za-z0-9_-]{43}$")


def validate_challenge(challenge: str | None, method: str | None, *, public: bool) -> str | None:
    """The challenge to bind to the code (None when a confidential client sent none)."""
    if not challenge:
        if method:
            raise InvalidRequest("code_challenge_method without code_challenge")
        if public:
            raise InvalidRequest(
                "public client without PKCE",
                public_message="PKCE (code_challenge with S256) is required for this client.",
            )
        return None
    if method != "S256":
        raise InvalidRequest(
            f"code_challenge_method {method!r}",
            public_message="Only the S256 code challenge method is supported.",
        )
    if not _CHALLENGE.match(challenge):
        raise InvalidRequest("malformed code_challenge")
    return challenge


def verify(verifier: str | None, challenge: str | None) -> None:
    """Check the token request's verifier against the challenge bound to the code."""
    if challenge is None:
        if verifier:
            # A verifier for a code issued without a challenge: a downgrade attempt.
            raise InvalidGrant("code_verifier sent for a code issued without a challenge")
        return
    if not verifier or not _VERIFIER.match(verifier):
        raise InvalidGrant("missing or malformed code_verifier")
    computed: str = create_s256_code_challenge(verifier)
    if not hmac.compare_digest(computed, challenge):
        raise InvalidGrant("code_verifier does not match the code_challenge")
