"""A real Keycloak for integration tests: ``keycloak-quarkus-dist`` 26.5.6 from Maven Central.

Registered in ``tests/conftest.py`` (``pytest_plugins``). Installed by
``scripts/install-test-deps.sh`` (``mvn dependency:copy`` of
``org.keycloak:keycloak-quarkus-dist:26.5.6:zip``, unzipped into
``tests/peers/keycloak/.dist/keycloak-26.5.6``; Debian ``openjdk-17-jre-headless`` when
``java`` is missing). Without Java or the distribution the fixture skips, and fails under
``CI=true``.

Fixture
-------
``keycloak_peer`` (session scope): ONE Keycloak for the whole run, started the first time a
test asks for it (start-up costs 20-60 s; the very first start after an install also builds
the Quarkus application, ≈30 s more) and stopped, whole process group, after the session::

    def test_login(keycloak_peer):
        keycloak_peer.base_url                  # "http://127.0.0.1:PORT"
        keycloak_peer.issuer("partner-oidc")    # base_url + "/realms/partner-oidc"
        keycloak_peer.saml_descriptor_url("partner-saml")   # the realm's SAML IdP metadata
        admin = keycloak_peer.admin("partner-oidc")         # python-keycloak KeycloakAdmin
        admin.create_client({...})
        keycloak_peer.log()                     # the server's output (attach it to failures)

It runs ``kc.sh start-dev`` on 127.0.0.1 and a free port with an in-memory database
(``--db=dev-mem``), a 512 MB heap (``JAVA_OPTS_KC_HEAP``), nothing but loopback, and the
bootstrap admin ``admin``/``admin`` in the master realm (``.admin(realm)`` signs in with it:
test tooling only — the product uses service-account clients). Realms: EVERY file
``tests/peers/keycloak/realms/*.json`` is imported at start-up (``--import-realm``): the
fixture empties the distribution's ``data/import`` and copies them there; the realm's
name is the file's name. Readiness is polled on ``/realms/master/.well-known/
openid-configuration`` with a deadline (the import is done before Keycloak listens). Clean
and copy, start and readiness run under a file lock, so two test runs on one machine never
import each other's half-copied files nor build the Quarkus application at once. The log is
in a pytest tmp dir (``peer.log_path``).

A realm file's users carry their passwords (``credentials``), ``requiredActions: []`` and
verified emails. A realm that defines ``clientScopes`` must list Keycloak's built-in ones
too (``profile``, ``email``, ``basic``, ...): Keycloak creates them only for a realm file
without any.

Logging in
----------
Keycloak's login form is ``<form id="kc-form-login">`` (``username``, ``password``,
``credentialId``). :func:`keycloak_form_login` fills and posts it with an
``httpx.AsyncClient`` and returns the answer (the redirect back, not followed). Keycloak
sets its cookies ``Secure`` even over http; browsers send them to ``http://127.0.0.1`` (a
potentially trustworthy origin), Python's cookie jar does not: call
:func:`trust_loopback` on a client (sync or async, or ``Browser.client``) before it talks
to Keycloak — :func:`keycloak_form_login` does it for its client.
"""

from __future__ import annotations

import fcntl
import ipaddress
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from keycloak import KeycloakAdmin, KeycloakOpenIDConnection

from tests.peers.browser import find_form
from tests.peers.common import missing, spawn_group, start_on_free_port, stop_group

KEYCLOAK_VERSION = "26.5.6"
PEER_DIR = Path(__file__).resolve().parent / "keycloak"
REALMS_DIR = PEER_DIR / "realms"
DIST_DIR = PEER_DIR / ".dist"
HOME = DIST_DIR / f"keycloak-{KEYCLOAK_VERSION}"
KC_SH = HOME / "bin" / "kc.sh"
INSTALL_HINT = "run scripts/install-test-deps.sh (Keycloak from Maven Central, Java 17)"
ADMIN_USERNAME = "admin"
ADMIN_PASSWORD = "admin"
HEAP = "-Xms64m -Xmx512m"
# A first start after an install builds the Quarkus application (≈30 s on 2 cores) before the
# ≈25 s start; a loaded machine (several JVMs) can double both. Readiness is polled.
START_TIMEOUT = 300.0
STOP_TIMEOUT = 30.0
LOGIN_FORM_ID = "kc-form-login"

# kc.sh runs under this watchdog: if pytest dies without stopping the peer (killed), the whole
# process group goes with it, so no Keycloak is left listening.
WATCHDOG = """
"$@" </dev/null &
child=$!
while kill -0 "$child" 2>/dev/null; do
  if ! kill -0 "$PARENT_PID" 2>/dev/null; then kill -TERM 0; exit 0; fi
  sleep 1  # orphan watchdog only; readiness is polled by the fixture
done
wait "$child"
"""


@dataclass
class KeycloakPeer:
    """The running Keycloak (one per test session)."""

    port: int
    base_url: str
    log_path: Path
    realms: tuple[str, ...]  # imported at start-up, from tests/peers/keycloak/realms
    process: subprocess.Popen[bytes] = field(repr=False)
    _stopped: bool = field(default=False, repr=False)

    def issuer(self, realm: str) -> str:
        """The realm's OIDC issuer (its discovery document is under it)."""
        return f"{self.base_url}/realms/{realm}"

    def discovery_url(self, realm: str) -> str:
        return f"{self.issuer(realm)}/.well-known/openid-configuration"

    def saml_descriptor_url(self, realm: str) -> str:
        """The realm's SAML 2.0 IdP metadata (its entityID is :meth:`issuer`)."""
        return f"{self.issuer(realm)}/protocol/saml/descriptor"

    def admin(self, realm: str) -> KeycloakAdmin:
        """python-keycloak's admin client for ``realm``, signed in as the master realm's
        bootstrap admin (``admin-cli``, password grant). Test tooling only."""
        connection = KeycloakOpenIDConnection(
            server_url=self.base_url,
            username=ADMIN_USERNAME,
            password=ADMIN_PASSWORD,
            realm_name=realm,
            user_realm_name="master",
            client_id="admin-cli",
            timeout=30,
        )
        return KeycloakAdmin(connection=connection)

    @property
    def running(self) -> bool:
        return not self._stopped and self.process.poll() is None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self) -> None:
        """Stop the process group (idempotent)."""
        if not self._stopped:  # once only: the group id may be reused afterwards
            self._stopped = True
            stop_group(self.process, STOP_TIMEOUT)


# --- Keycloak's login form -------------------------------------------------------------------


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _unsecure_loopback_cookies(cookies: httpx.Cookies) -> None:
    for cookie in cookies.jar:
        if cookie.secure and _loopback(cookie.domain.lstrip(".")):
            cookie.secure = False


def trust_loopback(client: httpx.Client | httpx.AsyncClient) -> None:
    """Make ``client`` send Keycloak's ``Secure`` cookies to 127.0.0.1 over http, as
    browsers do (loopback is a potentially trustworthy origin): a response hook clears the
    flag of loopback cookies once they are stored (and of those already stored).
    Idempotent."""
    _unsecure_loopback_cookies(client.cookies)
    hooks = client.event_hooks
    if any(getattr(h, "_isthmus_loopback", False) for h in hooks["response"]):
        return
    hook: Any
    if isinstance(client, httpx.AsyncClient):

        async def hook(_response: httpx.Response) -> None:
            _unsecure_loopback_cookies(client.cookies)

    else:

        def hook(_response: httpx.Response) -> None:
            _unsecure_loopback_cookies(client.cookies)

    hook._isthmus_loopback = True
    client.event_hooks = {**hooks, "response": [*hooks["response"], hook]}


def login_form_data(
    login_page: httpx.Response, username: str, password: str
) -> tuple[str, dict[str, str]]:
    """(absolute action URL, fields) of Keycloak's filled login form on ``login_page``."""
    if login_page.status_code != 200:
        raise AssertionError(
            f"expected Keycloak's login page, got HTTP {login_page.status_code} at "
            f"{login_page.url}:\n{login_page.text[:800]}"
        )
    form = find_form(login_page, form_id=LOGIN_FORM_ID)
    return form.action, {**form.fields, "username": username, "password": password}


async def keycloak_form_login(
    http: httpx.AsyncClient, login_page_response: httpx.Response, username: str, password: str
) -> httpx.Response:
    """Fill and post Keycloak's login form found on ``login_page_response`` (fetched with
    ``http``, whose cookies carry the authentication session); the answer is returned as
    is: on success the redirect back to the client (not followed), on a wrong password the
    login page again (HTTP 200 with an error)."""
    trust_loopback(http)
    action, data = login_form_data(login_page_response, username, password)
    return await http.post(action, data=data, follow_redirects=False)


# --- the fixture -----------------------------------------------------------------------------


def _realm_files() -> list[Path]:
    return sorted(REALMS_DIR.glob("*.json"))


def _stage_realms(import_dir: Path) -> None:
    """Empty the distribution's data/import and copy every realm file into it."""
    if import_dir.exists():
        shutil.rmtree(import_dir)
    import_dir.mkdir(parents=True)
    for path in _realm_files():
        shutil.copy2(path, import_dir / path.name)


def _environment() -> dict[str, str]:
    """The caller's environment without JAVA_OPTS*/KC_* (which would change the heap or
    the server's options), plus the bootstrap admin and the heap."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("KC_", "KEYCLOAK_", "JAVA_OPTS", "QUARKUS_"))
    }
    env.update(
        KC_BOOTSTRAP_ADMIN_USERNAME=ADMIN_USERNAME,
        KC_BOOTSTRAP_ADMIN_PASSWORD=ADMIN_PASSWORD,
        JAVA_OPTS_KC_HEAP=HEAP,
        PARENT_PID=str(os.getpid()),
    )
    return env


class _StartLock:
    """An exclusive lock on the distribution (``.dist/start.lock``), waited for with a
    deadline."""

    def __init__(self, path: Path, timeout: float) -> None:
        self.path, self.timeout = path, timeout
        self._fd: int | None = None

    def __enter__(self) -> _StartLock:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        deadline = time.monotonic() + self.timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    os.close(fd)
                    raise TimeoutError(f"another test run holds {self.path}") from None
                time.sleep(0.2)  # poll interval
        self._fd = fd
        return self

    def __exit__(self, *exc: object) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None


def start_keycloak(state_dir: Path, peers: list[KeycloakPeer]) -> KeycloakPeer:
    """Start Keycloak (see the module docstring); every launched process goes into ``peers``."""
    log_path = state_dir / "keycloak.log"
    env = _environment()
    realms = tuple(p.stem for p in _realm_files())

    def launch(port: int) -> KeycloakPeer:
        argv = [
            "/bin/sh",
            "-c",
            WATCHDOG,
            "keycloak-watchdog",
            str(KC_SH),
            "start-dev",
            "--http-host=127.0.0.1",
            f"--http-port={port}",
            "--db=dev-mem",
            "--import-realm",
            "--log-console-color=false",
        ]
        return KeycloakPeer(
            port=port,
            base_url=f"http://127.0.0.1:{port}",
            log_path=log_path,
            realms=realms,
            process=spawn_group(argv, cwd=state_dir, log_path=log_path, env=env),
        )

    with _StartLock(DIST_DIR / "start.lock", START_TIMEOUT):
        _stage_realms(HOME / "data" / "import")
        return start_on_free_port(
            launch,
            peers=peers,
            what=f"Keycloak {KEYCLOAK_VERSION}",
            ready_url=lambda peer: (
                f"{peer.base_url}/realms/master/.well-known/openid-configuration"
            ),
            start_timeout=START_TIMEOUT,
            address_in_use=lambda peer: (
                "already in use" in peer.log().lower()
                or "port(s) already bound" in peer.log().lower()
            ),
            request_timeout=5.0,
        )


def keycloak_installed() -> bool:
    return shutil.which("java") is not None and os.access(KC_SH, os.X_OK)


@pytest.fixture(scope="session")
def keycloak_peer(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KeycloakPeer]:
    """The session's Keycloak, started on first use; see the module docstring."""
    if not keycloak_installed():
        missing(f"Keycloak {KEYCLOAK_VERSION} (java and {KC_SH})", INSTALL_HINT)
        raise AssertionError("unreachable")  # missing() skips or fails
    peers: list[KeycloakPeer] = []
    try:
        yield start_keycloak(tmp_path_factory.mktemp("keycloak"), peers)
    finally:
        for peer in peers:
            peer.stop()


def admin_request(peer: KeycloakPeer, realm: str, method: str, path: str, **kwargs: Any) -> Any:
    """A raw admin REST call (``/admin/realms/{realm}{path}``, httpx ``kwargs``) with the
    bootstrap admin's token, for endpoints python-keycloak does not wrap (e.g.
    ``POST /client-description-converter``); the JSON answer, or None."""
    token = httpx.post(
        f"{peer.base_url}/realms/master/protocol/openid-connect/token",
        data={
            "grant_type": "password",
            "client_id": "admin-cli",
            "username": ADMIN_USERNAME,
            "password": ADMIN_PASSWORD,
        },
        timeout=30,
    )
    token.raise_for_status()
    headers = {
        **kwargs.pop("headers", {}),
        "Authorization": f"Bearer {token.json()['access_token']}",
    }
    response = httpx.request(
        method, f"{peer.base_url}/admin/realms/{realm}{path}", headers=headers, timeout=30, **kwargs
    )
    response.raise_for_status()
    return response.json() if response.content else None


__all__: list[str] = [
    "ADMIN_PASSWORD",
    "ADMIN_USERNAME",
    "KEYCLOAK_VERSION",
    "KeycloakPeer",
    "admin_request",
    "keycloak_form_login",
    "keycloak_installed",
    "keycloak_peer",
    "login_form_data",
    "start_keycloak",
    "trust_loopback",
]
