"""A plain OIDC relying party for tests: authorization code + PKCE (S256), state, nonce.

Used by the peer smoke test against node oidc-provider; usable against any OP, including the
hub's own provider (flow 2)::

    rp = OidcRP(issuer, client_id="hub", client_secret="s", redirect_uri="http://rp.test/cb")
    with Browser() as browser:
        result = rp.login(browser, "alice", "alice-password")
    result.claims["email"], result.tokens["access_token"], result.header["alg"]

``login`` checks state and RFC 9207 ``iss`` on the callback, and verifies the ID token's
signature with PyJWT against the OP's JWKS (key chosen by ``kid``; the algorithm must be the
key's), plus ``aud``, ``iss``, ``exp`` and ``nonce``. The back channel (discovery, token,
JWKS) uses its own cookie-less client.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlencode, urlparse

import httpx
import jwt

from tests.peers.browser import Browser


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def pkce_pair() -> tuple[str, str]:
    """(code_verifier, S256 code_challenge)."""
    verifier = b64url(secrets.token_bytes(32))
    return verifier, b64url(hashlib.sha256(verifier.encode()).digest())


@dataclass
class LoginResult:
    tokens: dict[str, Any]
    header: dict[str, Any]
    claims: dict[str, Any]
    callback: dict[str, str]


class OidcRP:
    def __init__(
        self,
        issuer: str,
        *,
        client_id: str,
        client_secret: str | None,
        redirect_uri: str,
        auth_method: str = "client_secret_basic",
        scope: str = "openid email profile groups",
        algorithms: tuple[str, ...] = ("RS256", "ES256", "PS256", "EdDSA"),
    ) -> None:
        self.issuer = issuer.rstrip("/")
        self.client_id = client_id
        self.client_secret = client_secret
        self.redirect_uri = redirect_uri
        self.auth_method = auth_method
        self.scope = scope
        self.algorithms = algorithms
        self.http = httpx.Client(timeout=10, follow_redirects=False)
        self.metadata: dict[str, Any] = self._json(
            self.http.get(f"{self.issuer}/.well-known/openid-configuration")
        )
        if self.metadata["issuer"] != self.issuer:
            raise AssertionError(f"issuer mismatch: {self.metadata['issuer']} != {self.issuer}")

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> OidcRP:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @staticmethod
    def _json(response: httpx.Response) -> dict[str, Any]:
        if response.status_code != 200:
            raise AssertionError(f"HTTP {response.status_code} at {response.url}: {response.text}")
        data: dict[str, Any] = response.json()
        return data

    def jwks(self) -> dict[str, Any]:
        return self._json(self.http.get(self.metadata["jwks_uri"]))

    def authorization_url(self, **extra: str) -> tuple[str, dict[str, str]]:
        """The authorize URL and the secrets to keep (state, nonce, code_verifier)."""
        verifier, challenge = pkce_pair()
        flow = {
            "state": secrets.token_urlsafe(16),
            "nonce": secrets.token_urlsafe(16),
            "code_verifier": verifier,
        }
        params = {
            "response_type": "code",
            "client_id": self.client_id,
            "redirect_uri": self.redirect_uri,
            "scope": self.scope,
            "state": flow["state"],
            "nonce": flow["nonce"],
            "code_challenge": challenge,
            "code_challenge_method": "S256",
            **extra,
        }
        return f"{self.metadata['authorization_endpoint']}?{urlencode(params)}", flow

    def token_request(self, data: dict[str, str]) -> httpx.Response:
        data = dict(data)
        if self.auth_method == "client_secret_basic":
            auth = httpx.BasicAuth(self.client_id, self.client_secret or "")
            return self.http.post(self.metadata["token_endpoint"], data=data, auth=auth)
        elif self.auth_method == "client_secret_post":
            data.update(client_id=self.client_id, client_secret=self.client_secret or "")
        else:
            data.update(client_id=self.client_id)
        return self.http.post(self.metadata["token_endpoint"], data=data)

    def verify_id_token(self, id_token: str, nonce: str | None) -> tuple[dict[str, Any], Any]:
        header = jwt.get_unverified_header(id_token)
        if header.get("alg") not in self.algorithms:
            raise AssertionError(f"ID token alg not allowed: {header}")
        jwk = next(k for k in self.jwks()["keys"] if k.get("kid") == header.get("kid"))
        if jwk.get("alg") not in (None, header["alg"]):
            raise AssertionError(f"alg {header['alg']} does not match key {jwk['kid']}")
        key = jwt.PyJWK(jwk, algorithm=header["alg"])
        claims: dict[str, Any] = jwt.decode(
            id_token,
            key,
            algorithms=[header["alg"]],
            audience=self.client_id,
            issuer=self.issuer,
            options={"require": ["exp", "iat", "sub", "aud", "iss"]},
        )
        if nonce is not None and claims.get("nonce") != nonce:
            raise AssertionError("nonce mismatch")
        return header, claims

    def finish(self, callback_url: str, flow: dict[str, str]) -> LoginResult:
        """Check the callback, redeem the code, verify the ID token."""
        if not callback_url.startswith(self.redirect_uri):
            raise AssertionError(f"callback {callback_url} is not at {self.redirect_uri}")
        query = {k: v[0] for k, v in parse_qs(urlparse(callback_url).query).items()}
        if "error" in query:
            raise AssertionError(f"authorization error: {query}")
        if query.get("state") != flow["state"]:
            raise AssertionError("state mismatch")
        if "iss" in query and query["iss"] != self.issuer:
            raise AssertionError(f"RFC 9207 iss mismatch: {query['iss']}")
        response = self.token_request(
            {
                "grant_type": "authorization_code",
                "code": query["code"],
                "redirect_uri": self.redirect_uri,
                "code_verifier": flow["code_verifier"],
            }
        )
        tokens = self._json(response)
        header, claims = self.verify_id_token(tokens["id_token"], flow["nonce"])
        return LoginResult(tokens=tokens, header=header, claims=claims, callback=query)

    def login(self, browser: Browser, username: str, password: str, **extra: str) -> LoginResult:
        """Full front-channel login through the OP's password form."""
        url, flow = self.authorization_url(**extra)
        page = browser.get(url, stop_at=self.redirect_uri)
        if page.status_code in (301, 302, 303, 307, 308):  # already signed in at the OP
            return self.finish(browser.location(page), flow)
        done = browser.login(page, username, password, stop_at=self.redirect_uri)
        return self.finish(browser.location(done), flow)
