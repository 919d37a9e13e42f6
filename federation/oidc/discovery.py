"""OpenID Connect Discovery 1.0 — the provider metadata at /.well-known/openid-configuration.

Only what the provider does is advertised: code flow with PKCE (S256), query response
mode, RFC 9207 ``iss`` in authorization responses, no request objects, back-channel
logout with ``sid``.
"""

from __future__ import annotations

from typing import Any

from federation.oidc.core import PARTNER_CLAIMS, SCOPE_CLAIMS

ENDPOINTS = {
    "authorization_endpoint": "/oauth2/authorize",
    "token_endpoint": "/oauth2/token",
    "userinfo_endpoint": "/oauth2/userinfo",
    "jwks_uri": "/oauth2/jwks",
    "introspection_endpoint": "/oauth2/introspect",
    "revocation_endpoint": "/oauth2/revoke",
    "end_session_endpoint": "/oauth2/logout",
}
AUTH_METHODS = ["client_secret_basic", "client_secret_post", "none"]


def metadata(issuer: str, signing_alg: str) -> dict[str, Any]:
    standard = [c for claims in SCOPE_CLAIMS.values() for c in claims]
    return {
        "issuer": issuer,
        **{name: issuer + path for name, path in ENDPOINTS.items()},
        "response_types_supported": ["code"],
        "response_modes_supported": ["query"],
        "grant_types_supported": ["authorization_code", "refresh_token"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": [signing_alg],
        "scopes_supported": ["openid", *SCOPE_CLAIMS, "offline_access"],
        "claims_supported": [
            "iss",
            "sub",
            "aud",
            "exp",
            "iat",
            "auth_time",
            "nonce",
            "sid",
            "at_hash",
            "azp",
            *standard,
            *PARTNER_CLAIMS,
        ],
        "token_endpoint_auth_methods_supported": AUTH_METHODS,
        "introspection_endpoint_auth_methods_supported": AUTH_METHODS[:2],
        "revocation_endpoint_auth_methods_supported": AUTH_METHODS,
        "code_challenge_methods_supported": ["S256"],
        "prompt_values_supported": ["none", "login", "consent", "select_account"],
        "authorization_response_iss_parameter_supported": True,
        "claims_parameter_supported": False,
        "request_parameter_supported": False,
        "request_uri_parameter_supported": False,
        "frontchannel_logout_supported": False,
        # OIDC Back-Channel Logout 1.0: logout tokens always carry sid (and sub).
        "backchannel_logout_supported": True,
        "backchannel_logout_session_supported": True,
    }
