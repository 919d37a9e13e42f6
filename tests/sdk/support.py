"""SDK test kit: the hub's discovery and JWKS served to a sync httpx client (fetches
counted), and tokens minted with the hub's own keys and signer."""

from __future__ import annotations

import base64
import json
import time
from dataclasses import dataclass, field
from typing import Any

import httpx

from federation.hub import Hub
from federation.jose import sign
from federation.oidc.discovery import metadata
from tests.oidc.support import ISSUER


@dataclass
class HubEndpoints:
    """Discovery and JWKS of a hub, as a MockTransport; counts JWKS fetches."""

    hub: Hub
    jwks_fetches: int = 0
    introspections: list[dict[str, str]] = field(default_factory=list)

    def handler(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if path == "/.well-known/openid-configuration":
            return httpx.Response(200, json=metadata(ISSUER, self.hub.keys.keys.current.alg))
        if path == "/oauth2/jwks":
            self.jwks_fetches += 1
            return httpx.Response(200, json=self.hub.keys.keys.jwks())
        return httpx.Response(404)

    def client(self) -> httpx.Client:
        return httpx.Client(transport=httpx.MockTransport(self.handler))


def claims(**extra: Any) -> dict[str, Any]:
    now = int(time.time())
    base: dict[str, Any] = {
        "iss": ISSUER,
        "sub": "hub-subject-1",
        "aud": "orders",
        "iat": now,
        "exp": now + 300,
        "jti": "j1",
        "partner_id": "acme",
        "partner_kind": "supplier",
        "groups": ["buyers"],
        "acr": "urn:mace:incommon:iap:silver",
        "amr": ["pwd"],
    }
    base.update(extra)
    return {k: v for k, v in base.items() if v is not None}


def mint(hub: Hub, typ: str = "at+jwt", **extra: Any) -> str:
    key = hub.keys.keys.current
    return sign(claims(**extra), key.private_key, key.alg, key.kid, typ=typ)


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def forge(header: dict[str, Any], payload: dict[str, Any], signature: bytes = b"") -> str:
    return ".".join(
        [b64(json.dumps(header).encode()), b64(json.dumps(payload).encode()), b64(signature)]
    )
