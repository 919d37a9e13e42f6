"""Helpers shared by the partner → hub → OIDC app integration tests: the hub served on a
real port with a Redis store, and an OIDC app's login (authorization request, code, ID
token checked with PyJWT against the hub's JWKS)."""

from __future__ import annotations

import hashlib
import json
import secrets
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import authlib.deprecate
import httpx
import jwt
import redis
import yaml

from federation.audit import Audit
from federation.hub import Hub, build_hub
from federation.settings import load_settings
from federation.web.app import create_app
from tests.peers.asgi import ServeApp
from tests.peers.browser import Browser

with warnings.catch_warnings():
    # authlib 1.9 announces that its httpx integration moves to the httpx2 package.
    warnings.simplefilter("ignore", authlib.deprecate.AuthlibDeprecationWarning)
    from authlib.integrations.httpx_client import OAuth2Client

SESSION_COOKIE = "isthmus_session"
FLOW_COOKIE = "isthmus_flow"
SCOPE = "openid email profile groups"
ALICE_GROUPS = ["engineering", "admins"]
CLIENT_SECRET = "portal-secret-0123456789"


@dataclass(frozen=True)
class Ports:
    hub: int
    app: int

    @property
    def hub_url(self) -> str:
        return f"http://127.0.0.1:{self.hub}"

    @property
    def app_callback(self) -> str:
        # Never served: the browser stops at the redirect to it (``stop_at``), like an app.
        return f"http://127.0.0.1:{self.app}/oidc/callback"

    def hub_callback(self, connection_id: str) -> str:
        return f"{self.hub_url}/callback/{connection_id}"


def query_of(url: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}


# --- the hub ---------------------------------------------------------------------------------


@dataclass
class RunningHub:
    url: str
    hub: Hub
    prefix: str
    events: list[dict[str, Any]]
    redis: redis.Redis

    # -- what the hub left in Redis ------------------------------------------------------
    def keys(self, pattern: str) -> list[str]:
        return sorted(str(k) for k in self.redis.scan_iter(match=f"{self.prefix}{pattern}"))

    def session_key(self, cookie: str) -> str:
        return f"{self.prefix}session:{hashlib.sha256(cookie.encode()).hexdigest()}"

    def stored_session(self, cookie: str) -> dict[str, Any] | None:
        raw = self.redis.get(self.session_key(cookie))
        return None if raw is None else dict(json.loads(str(raw)))

    def partner_sessions(self, partner_id: str) -> set[str]:
        return {str(m) for m in self.redis.smembers(f"{self.prefix}partner-sessions:{partner_id}")}

    def events_named(self, name: str) -> list[dict[str, Any]]:
        return [e for e in self.events if e["event"] == name]

    def discovery(self) -> dict[str, Any]:
        response = httpx.get(f"{self.url}/.well-known/openid-configuration", timeout=5)
        assert response.status_code == 200, response.text
        return dict(response.json())


def serve_hub(
    *,
    ports: Ports,
    redis_url: str,
    redis_client: redis.Redis,
    asgi_server: ServeApp,
    tmp_path: Path,
    partners: list[dict[str, Any]],
    clients: list[dict[str, Any]],
) -> RunningHub:
    """Write a settings file (Redis store, a fresh key prefix), load it like ``isthmus serve``
    does, serve the hub on its port."""
    prefix = f"it:{secrets.token_hex(6)}:"
    config = {
        "issuer": ports.hub_url,
        "allow_insecure_http": True,
        "store": {"backend": "redis", "url": redis_url, "prefix": prefix},
        "partners": partners,
        "clients": clients,
    }
    path = tmp_path / "isthmus.yaml"
    path.write_text(yaml.safe_dump(config))
    events: list[dict[str, Any]] = []
    hub = build_hub(load_settings(path, env={}), audit=Audit([events.append]))
    assert asgi_server(create_app(hub=hub), port=ports.hub) == ports.hub_url
    return RunningHub(ports.hub_url, hub, prefix, events, redis_client)


ServeHub = Callable[..., RunningHub]  # serve_hub with the test's ports, Redis, server (conftest)


# --- an OIDC app of the hub --------------------------------------------------------------------


def app_client(ports: Ports, client_id: str, **kwargs: Any) -> OAuth2Client:
    """A confidential OIDC app of the hub (authlib, code + PKCE S256)."""
    return OAuth2Client(
        client_id=client_id,
        client_secret=CLIENT_SECRET,
        scope=SCOPE,
        redirect_uri=ports.app_callback,
        code_challenge_method="S256",
        timeout=10,
        **kwargs,
    )


@dataclass
class AppAuthorization:
    """The app's authorization request, sent by the browser up to the hub's email form."""

    meta: dict[str, Any]  # the hub's discovery document
    verifier: str
    nonce: str
    state: str
    email_page: httpx.Response


def start_app_login(
    hub: RunningHub, client: OAuth2Client, browser: Browser, ports: Ports
) -> AppAuthorization:
    """app → hub /oauth2/authorize → (not signed in) the hub's email form."""
    meta = hub.discovery()
    assert meta["issuer"] == hub.url
    verifier, nonce = secrets.token_urlsafe(48), secrets.token_urlsafe(16)
    url, state = client.create_authorization_url(
        meta["authorization_endpoint"], code_verifier=verifier, nonce=nonce
    )
    request = query_of(url)
    assert request["code_challenge_method"] == "S256" and request["code_challenge"]
    email_page = browser.get(url, stop_at=ports.app_callback)
    assert str(email_page.url).startswith(f"{hub.url}/login?rd=%2Foauth2%2Fauthorize%3F")
    return AppAuthorization(meta, verifier, nonce, state, email_page)


def finish_app_login(
    authorization: AppAuthorization,
    hub: RunningHub,
    client: OAuth2Client,
    browser: Browser,
    done: httpx.Response,
    ports: Ports,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Back at the hub's /oauth2/authorize (``done``) → the code at the app's callback →
    (tokens, ID token claims); the ID token is checked against the hub's JWKS."""
    assert str(done.url).startswith(f"{hub.url}/oauth2/authorize?")
    callback = browser.location(done)
    returned = query_of(callback)
    assert callback.startswith(ports.app_callback + "?")
    state = authorization.state
    assert returned["state"] == state and returned["iss"] == hub.url and "error" not in returned

    meta = authorization.meta
    tokens = dict(
        client.fetch_token(
            meta["token_endpoint"],
            authorization_response=callback,
            state=state,
            code_verifier=authorization.verifier,
        )
    )
    claims: dict[str, Any] = jwt.decode(
        tokens["id_token"],
        hub_jwk_key(meta["jwks_uri"], tokens["id_token"]),
        algorithms=["RS256"],
        audience=client.client_id,
        issuer=hub.url,
        options={"require": ["iss", "sub", "aud", "exp", "iat", "nonce"]},
    )
    assert claims["nonce"] == authorization.nonce
    return tokens, claims


def hub_jwk_key(jwks_uri: str, token: str) -> jwt.PyJWK:
    header = jwt.get_unverified_header(token)
    assert header["alg"] == "RS256" and header.get("kid"), header
    keys = httpx.get(jwks_uri, timeout=5).json()["keys"]
    jwk = next(k for k in keys if k["kid"] == header["kid"])
    assert "d" not in jwk  # public parts only
    return jwt.PyJWK(jwk, algorithm="RS256")


__all__ = [
    "ALICE_GROUPS",
    "CLIENT_SECRET",
    "FLOW_COOKIE",
    "SCOPE",
    "SESSION_COOKIE",
    "AppAuthorization",
    "OAuth2Client",
    "Ports",
    "RunningHub",
    "ServeHub",
    "app_client",
    "finish_app_login",
    "hub_jwk_key",
    "query_of",
    "serve_hub",
    "start_app_login",
]
