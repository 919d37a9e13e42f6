"""Three hub replicas behind nginx (round robin) on one Redis: nothing lives in a replica.

The replicas are real ``isthmus serve --config FILE`` processes (tests/peers/hub_process.py)
sharing one configuration file — Redis store and Redis registry, one signing key set
(``isthmus keys init``), the nginx front's URL as ``issuer`` — each on its own port
(``ISTHMUS_LISTEN__PORT``). nginx (tests/peers/nginx.py, balancer mode) spreads requests
over them and logs which replica served each one. Partners: ``acme`` and ``initech``
sign in through mock connections, ``globex`` through its own IdP (node oidc-provider,
code + PKCE: the verifier and nonce live in the flow the replica stored). Everything
starts once for the module.

Proved:

1. a login begun on one replica completes on another — step by step on chosen replicas,
   and through nginx, whose log shows the login's start and its callback on different
   replicas;
2. a replica killed (SIGKILL) after it started a login costs nothing: the login finishes
   through nginx on the others, sessions opened on it keep working;
3. a session ended on one replica — logout, or the partner suspended through the admin
   API with a token from ``isthmus tokens create`` — is refused by every replica within
   one second;
4. Redis stopped: ``/readyz`` says not ready on every replica (``/healthz`` stays up) and
   requests needing the store get a clear 503 with a request id; Redis back: every
   replica recovers by itself (same processes);
5. SIGTERM to the replica serving a slow request through nginx: it drains
   (``observability.drain_seconds``), closes its listener, nginx sends new requests to
   the others, the request in flight completes, then the replica exits cleanly.

Every wait polls a condition against a deadline.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import queue
import secrets
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
import redis
import uvicorn
import yaml
from starlette.types import Receive, Scope, Send

from tests.integration.support import SESSION_COOKIE
from tests.peers.browser import Browser, find_form
from tests.peers.common import free_port
from tests.peers.hub_process import HubProcess, init_keys, isthmus, owner_of_connection
from tests.peers.nginx import NginxPeer, StartNginx, UpstreamLine
from tests.peers.oidc_provider import Peer, StartPeer
from tests.peers.redis import RedisServer, ping, redis_server_binary, start_server

pytestmark = pytest.mark.integration

# The apps' hosts: the hub's host (its host-only session cookie reaches every port) with
# a port that only names the app (the hub routes by Host; nothing connects to it).
ORDERS_HOST = "127.0.0.1:8601"  # decided by forward-auth (an edge proxies it)
SLOW_HOST = "127.0.0.1:8602"  # proxied by the hub, to a slow upstream
USER_HEADER = "X-Isthmus-User"
TRACE_HEADER = "X-Isthmus-Trace"  # nginx logs it: which replica served a test's requests
ENDED_WITHIN = 1.0  # seconds: an ended session is refused everywhere by then
STORE_DEADLINE = 10.0  # seconds: readiness follows Redis going away and coming back
DRAIN_SECONDS = 0.5  # SIGTERM: serving this long (not ready) before the listener closes
POLL = 0.02


# --- the slow upstream ---------------------------------------------------------------------


class SlowUpstream:
    """An app behind the hub that holds each request until :attr:`release` is set; it
    reports the client port of each connection (a replica's socket) in :attr:`arrived`."""

    def __init__(self) -> None:
        self.arrived: queue.Queue[int] = queue.Queue()
        self.release = threading.Event()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return  # lifespan: nothing to set up
        client = scope.get("client") or ("", 0)
        self.arrived.put(int(client[1]))
        released = await asyncio.to_thread(self.release.wait, 30)
        body = b"slow answer" if released else b"never released"
        headers = [(b"content-type", b"text/plain")]
        status = 200 if released else 504
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})


@contextmanager
def serve_upstream(app: SlowUpstream) -> Iterator[str]:
    """uvicorn in a thread, like :func:`tests.peers.asgi.serving` but without
    ``proxy_headers``: ``scope["client"]`` stays the connection's own peer (the replica's
    socket), not the ``X-Forwarded-For`` the hub sends."""
    port = free_port()
    config = uvicorn.Config(
        app, host="127.0.0.1", port=port, log_level="warning", lifespan="off", ws="none",
        proxy_headers=False,
    )  # fmt: skip
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name=f"slow-upstream-{port}", daemon=True)
    thread.start()
    try:
        assert poll(lambda: server.started or not thread.is_alive(), time.monotonic() + 10)
        assert server.started, "the slow upstream did not start"
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


# --- the cluster ---------------------------------------------------------------------------


@dataclass
class Cluster:
    hubs: list[HubProcess]
    front: NginxPeer
    redis: RedisServer
    globex: Peer
    slow: SlowUpstream
    config: Path
    token: str

    @property
    def url(self) -> str:
        return self.front.base_url

    def hub(self, name: str) -> HubProcess:
        return next(h for h in self.hubs if h.name == name)

    def by_address(self, address: str) -> HubProcess:
        return next(h for h in self.hubs if h.address == address)

    def diagnostics(self) -> str:
        logs = "\n".join(f"--- {h.name} ({h.log_path}):\n{h.log()[-3000:]}" for h in self.hubs)
        return f"{logs}\n--- nginx:\n{self.front.log()[-2000:]}"


def mock_partner(partner_id: str, domain: str, users: list[str]) -> dict[str, Any]:
    return {
        "id": partner_id,
        "name": f"{partner_id.capitalize()} Inc",
        "kind": "supplier",
        "status": "active",
        "domains": [domain],
        "connections": [
            {
                "type": "mock",
                "id": f"{partner_id}-mock",
                "users": [{"subject": u, "email": f"{u}@{domain}", "name": u} for u in users],
            }
        ],
    }


def app(app_id: str, host: str, upstream: str, partners: list[str]) -> dict[str, Any]:
    return {
        "id": app_id,
        "hosts": [host],
        "upstreams": [upstream],
        "policy": {
            "version": 1,
            "rules": [
                {"name": f"{p}-all", "effect": "allow", "when": {"partner": p}} for p in partners
            ],
        },
        "identity_headers": {USER_HEADER: "email", "X-Isthmus-Partner": "partner_id"},
    }


def write_config(
    path: Path, *, issuer: str, redis_url: str, keys: Path, globex: Peer, slow_url: str
) -> Path:
    config = {
        "issuer": issuer,
        "allow_insecure_http": True,
        "allow_mock_connections": True,
        "store": {"backend": "redis", "url": redis_url, "prefix": "replicas:"},
        "registry": {"backend": "redis", "poll_seconds": 0.2},
        "keys": {"path": str(keys)},
        "trusted_proxies": ["127.0.0.1/32"],
        "observability": {"drain_seconds": DRAIN_SECONDS, "log_format": "text"},
        "partners": [
            mock_partner("acme", "acme.example", ["alice", "bob", "carol", "dave", "erin"]),
            mock_partner("initech", "initech.example", ["peter"]),
            {
                "id": "globex",
                "name": "Globex Corp",
                "kind": "customer",
                "status": "active",
                "domains": ["globex.example"],
                "connections": [
                    {
                        "type": "oidc",
                        "id": "globex-oidc",
                        "issuer": globex.issuer,
                        "client_id": globex.client_id,
                        "client_secret": globex.client_secret,
                        "scopes": ["openid", "email", "profile"],
                    }
                ],
            },
        ],
        "apps": [
            # Never proxied (forward-auth only): the upstream is not contacted.
            app("orders", ORDERS_HOST, "http://127.0.0.1:9", ["acme", "initech", "globex"]),
            app("slow", SLOW_HOST, slow_url, ["acme"]),
        ],
    }
    path.write_text(yaml.safe_dump(config))
    return path


def start_hubs(hubs: list[HubProcess]) -> None:
    """Start replicas at once, as a rollout does."""
    with concurrent.futures.ThreadPoolExecutor(len(hubs)) as pool:
        for done in [pool.submit(h.start) for h in hubs]:
            done.result()


@pytest.fixture(scope="module")
def cluster(
    tmp_path_factory: pytest.TempPathFactory,
    nginx_peer: StartNginx,
    oidc_provider_peer: StartPeer,
) -> Iterator[Cluster]:
    tmp = tmp_path_factory.mktemp("replicas")
    front_port = free_port()
    issuer = f"http://127.0.0.1:{front_port}"
    with ExitStack() as stack:
        server = start_server(redis_server_binary(), tmp / "redis")
        stack.callback(server.stop)
        globex = oidc_provider_peer(
            "replicas-globex",
            email_domain="globex.example",
            client_id="isthmus-globex",
            client_secret=f"globex-{secrets.token_hex(8)}",
            redirect_uris=[f"{issuer}/callback/globex-oidc"],
            pkce_required=True,
        )
        stack.callback(globex.stop)
        slow = SlowUpstream()
        slow_url = stack.enter_context(serve_upstream(slow))
        stack.callback(slow.release.set)  # before its server stops (callbacks run in reverse)
        config = write_config(
            tmp / "isthmus.yaml",
            issuer=issuer,
            redis_url=server.url,
            keys=init_keys(tmp / "keys.json"),
            globex=globex,
            slow_url=slow_url,
        )
        hubs = [
            HubProcess(name, config=config, port=free_port(), workdir=tmp / f"hub-{name}")
            for name in ("a", "b", "c")
        ]
        for hub in hubs:
            stack.callback(hub.stop)
        # All three at once on an empty registry: they race to seed it, and all start.
        start_hubs(hubs)
        front = nginx_peer("replicas", upstreams=[h.url for h in hubs], port=front_port)
        stack.callback(front.stop)
        created = isthmus(
            "tokens", "create", "--config", str(config), "--name", "replicas-test", "--role",
            "admin",
        )  # fmt: skip
        assert created.returncode == 0, created.stderr
        yield Cluster(hubs, front, server, globex, slow, config, created.stdout.strip())


@pytest.fixture
def running(cluster: Cluster) -> Iterator[Cluster]:
    """The cluster with every replica and Redis up before and after the test (one a test
    stopped is started again, same port). The hubs' and nginx's logs are printed at
    teardown: pytest shows them when the test failed."""
    _all_up(cluster)
    try:
        yield cluster
    finally:
        print(cluster.diagnostics())
        _all_up(cluster)


def _all_up(cluster: Cluster) -> None:
    if not cluster.redis.running:
        cluster.redis.start()
    down = [h for h in cluster.hubs if not h.running]
    if down:
        start_hubs(down)


# --- helpers ---------------------------------------------------------------------------------


def decide(base: str, cookie: str | None, *, trace: str = "") -> httpx.Response:
    """nginx's forward-auth question about ``GET orders.test/orders/7``, asked of ``base``
    (a replica, or the front); 200 with the user's headers, 401 without a valid session."""
    headers = {
        "X-Original-Method": "GET",
        "X-Original-URI": "/orders/7",
        "X-Forwarded-Host": ORDERS_HOST,
        "X-Forwarded-Proto": "http",
        "Accept": "application/json",
        TRACE_HEADER: trace,
    }
    if cookie is not None:
        headers["Cookie"] = f"{SESSION_COOKIE}={cookie}"
    return httpx.get(f"{base}/forward-auth", headers=headers, timeout=5)


def assert_accepted(base: str, cookie: str, email: str) -> None:
    answer = decide(base, cookie)
    assert answer.status_code == 200, (base, answer.status_code, answer.text)
    assert answer.headers[USER_HEADER] == email


def begin_mock_login(
    browser: Browser, page_from: str, start_on: str, email: str
) -> tuple[str, str]:
    """The email form from ``page_from``, the email POSTed to ``start_on`` (that replica
    stores the flow): the mock IdP's connection and the flow's state."""
    form = find_form(browser.get(f"{page_from}/login"), form_id="login-form")
    to_idp = browser.post(f"{start_on}/login", data={**form.fields, "email": email}, follow=False)
    assert to_idp.status_code == 303, to_idp.text
    target = urlsplit(to_idp.headers["location"])
    assert target.path.startswith("/mock/"), target
    return target.path.rsplit("/", 1)[1], parse_qs(target.query)["state"][0]


def finish_mock_login(
    browser: Browser, finish_on: str, connection: str, state: str, user: str
) -> str:
    """The mock IdP's answer at ``finish_on``'s callback: the new session cookie."""
    back = browser.get(
        f"{finish_on}/callback/{connection}",
        params={"state": state, "user": user},
        follow=False,
    )
    assert back.status_code == 303, back.text
    cookie = back.cookies.get(SESSION_COOKIE)
    assert cookie, back.headers
    return cookie


def mock_login(base: str, email: str, user: str) -> str:
    """A whole mock login on one replica (or the front): the session cookie."""
    with Browser() as browser:
        return finish_mock_login(browser, base, *begin_mock_login(browser, base, base, email), user)


def poll(condition: Callable[[], bool], deadline: float) -> bool:
    """Poll ``condition`` until it holds (True) or ``deadline`` (monotonic) passes (False)."""
    while True:
        if condition():
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(POLL)


def answers(url: str, status: int) -> Callable[[], bool]:
    """A condition: ``GET url`` answers ``status``."""
    return lambda: httpx.get(url, timeout=5).status_code == status


def session_refused(base: str, cookie: str) -> Callable[[], bool]:
    """A condition: ``base`` answers forward-auth for ``cookie`` with 401 (no session)."""
    return lambda: decide(base, cookie).status_code == 401


def refused_everywhere(hubs: list[HubProcess], cookie: str, since: float) -> dict[str, float]:
    """Seconds from ``since`` until each replica answered 401 for ``cookie`` (polled
    against the :data:`ENDED_WITHIN` deadline)."""
    seen: dict[str, float] = {}
    for hub in hubs:
        refused = poll(session_refused(hub.url, cookie), since + ENDED_WITHIN)
        assert refused, f"{hub.name} still accepts the ended session: {decide(hub.url, cookie)}"
        seen[hub.name] = time.monotonic() - since
    return seen


def logged(front: NginxPeer, trace: str, count: int) -> list[UpstreamLine]:
    """The front's log lines of ``trace`` once there are ``count`` (nginx writes a line
    after the response has gone out)."""
    lines: list[UpstreamLine] = []

    def written() -> bool:
        nonlocal lines
        lines = front.upstream_log(trace)
        return len(lines) >= count

    assert poll(written, time.monotonic() + 5), lines
    assert len(lines) == count, lines
    return lines


def listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


# --- 1. a login begun on one replica completes on another --------------------------------------


def test_mock_login_steps_each_on_another_replica(running: Cluster) -> None:
    a, b, c = running.hubs
    with Browser() as browser:
        # the form from A, the flow stored by B, the IdP's answer to C
        connection, state = begin_mock_login(browser, a.url, b.url, "alice@acme.example")
        cookie = finish_mock_login(browser, c.url, connection, state, "alice")
    for hub in running.hubs:
        assert_accepted(hub.url, cookie, "alice@acme.example")


def test_partner_idp_login_started_on_one_replica_finishes_on_another(running: Cluster) -> None:
    """OIDC code + PKCE with a real IdP: the verifier and nonce A stored serve B."""
    a, b, c = running.hubs
    callback = f"{running.url}/callback/globex-oidc"
    with Browser() as browser:
        email_page = browser.get(f"{a.url}/login")
        idp_page = browser.submit(
            email_page, {"email": "alice@globex.example"}, form_id="login-form"
        )
        assert str(idp_page.url).startswith(f"{running.globex.issuer}/"), idp_page.url
        to_hub = browser.login(idp_page, "alice", "alice-password", stop_at=callback)
        redirect = browser.location(to_hub)  # to the front (the issuer); sent to B instead
        landing = browser.get(redirect.replace(running.url, b.url, 1))
        assert landing.status_code == 200, landing.text
        assert str(landing.url) == f"{b.url}/"
        assert '<dd id="email">alice@globex.example</dd>' in landing.text
        cookie = browser.cookies.get(SESSION_COOKIE)
    assert cookie
    assert_accepted(c.url, cookie, "alice@globex.example")


def test_login_through_nginx_is_spread_over_replicas(running: Cluster) -> None:
    trace = secrets.token_hex(6)
    callback = f"{running.url}/callback/globex-oidc"
    with Browser(headers={TRACE_HEADER: trace}) as browser:
        email_page = browser.get(f"{running.url}/login")
        idp_page = browser.submit(email_page, {"email": "bob@globex.example"}, form_id="login-form")
        to_hub = browser.login(idp_page, "bob", "bob-password", stop_at=callback)
        landing = browser.get(browser.location(to_hub))
        assert landing.status_code == 200 and str(landing.url) == f"{running.url}/"
        assert '<dd id="email">bob@globex.example</dd>' in landing.text
        cookie = browser.cookies.get(SESSION_COOKIE)
    assert cookie

    form, start, back, home = logged(running.front, trace, 4)
    assert (form.method, start.method, back.method, home.method) == ("GET", "POST", "GET", "GET")
    assert start.uri == "/login" and back.uri.startswith("/callback/globex-oidc?")
    addresses = {h.address for h in running.hubs}
    assert {form.served_by, start.served_by, back.served_by, home.served_by} <= addresses
    # round robin: the replica that stored the flow is not the one that completed it
    assert start.served_by != back.served_by, running.front.upstream_log(trace)
    for hub in running.hubs:
        assert_accepted(hub.url, cookie, "bob@globex.example")


# --- 2. a replica killed mid-flow costs no session ---------------------------------------------


def test_replica_killed_mid_login_costs_no_session(running: Cluster) -> None:
    a = running.hub("a")
    before = mock_login(a.url, "carol@acme.example", "carol")  # a session opened on A
    with Browser() as browser:
        connection, state = begin_mock_login(browser, a.url, a.url, "dave@acme.example")
        a.kill()  # SIGKILL: no shutdown, nothing flushed
        assert not listening(a.port)
        trace = secrets.token_hex(6)
        back = browser.get(
            f"{running.url}/callback/{connection}",
            params={"state": state, "user": "dave"},
            headers={TRACE_HEADER: trace},
            follow=False,
        )
        assert back.status_code == 303, back.text
        after = back.cookies.get(SESSION_COOKIE)
    assert after
    (finished,) = logged(running.front, trace, 1)
    assert finished.served_by != a.address

    # through nginx, on whichever replica is left, both sessions work
    trace = secrets.token_hex(6)
    for _ in range(4):
        for cookie, user in ((before, "carol"), (after, "dave")):
            answer = decide(running.url, cookie, trace=trace)
            assert answer.status_code == 200, (answer.status_code, answer.text)
            assert answer.headers[USER_HEADER] == f"{user}@acme.example"
    served = {line.served_by for line in logged(running.front, trace, 8)}
    assert served == {running.hub("b").address, running.hub("c").address}


# --- 3. a session ended on one replica is refused by the others within a second ----------------


def test_logout_on_one_replica_is_refused_by_all_within_a_second(running: Cluster) -> None:
    a, b, c = running.hubs
    with Browser() as browser:
        connection, state = begin_mock_login(browser, b.url, b.url, "erin@acme.example")
        cookie = finish_mock_login(browser, b.url, connection, state, "erin")
        for hub in running.hubs:
            assert_accepted(hub.url, cookie, "erin@acme.example")
        page = browser.get(f"{a.url}/logout")
        done = browser.submit(page, form_id="logout-form")
        assert done.status_code == 200, done.text
    since = time.monotonic()
    took = refused_everywhere([b, c, a], cookie, since)
    assert max(took.values()) <= ENDED_WITHIN, took
    assert decide(running.url, cookie).status_code == 401


def test_partner_suspended_on_one_replica_is_refused_by_all_within_a_second(
    running: Cluster,
) -> None:
    a, b, c = running.hubs
    cookie = mock_login(b.url, "peter@initech.example", "peter")
    for hub in running.hubs:
        assert_accepted(hub.url, cookie, "peter@initech.example")
    api = f"{a.url}/admin/api/v1/partners/initech"
    auth = {"Authorization": f"Bearer {running.token}"}
    current = httpx.get(api, headers=auth, timeout=5)
    assert current.status_code == 200, current.text
    changed = httpx.post(
        f"{api}/status",
        headers={**auth, "If-Match": current.headers["etag"]},
        json={"status": "suspended", "reason": "replica test"},
        timeout=5,
    )
    assert changed.status_code == 200, changed.text
    since = time.monotonic()
    took = refused_everywhere([b, c, a], cookie, since)
    assert max(took.values()) <= ENDED_WITHIN, took

    # and no replica lets initech sign in again (each follows the registry)
    for hub in (c, b):

        def refused(h: HubProcess = hub) -> bool:
            with Browser() as browser:
                form = find_form(browser.get(f"{h.url}/login"), form_id="login-form")
                data = {**form.fields, "email": "peter@initech.example"}
                return browser.post(f"{h.url}/login", data=data, follow=False).status_code == 403

        assert poll(refused, since + ENDED_WITHIN), f"{hub.name} still starts initech logins"


# --- 4. Redis stopped: not ready, clear 503s; Redis back: recovery without restart -------------


def test_redis_down_means_not_ready_and_503_then_recovery(running: Cluster) -> None:
    cookie = mock_login(running.url, "alice@acme.example", "alice")
    pids = {h.name: h.pid for h in running.hubs}
    # Redis goes away with its data saved (as a persistent Redis would), then comes back.
    client = redis.Redis(host="127.0.0.1", port=running.redis.port)
    client.shutdown(save=True)
    client.close()
    running.redis.stop()  # reaps the process
    assert not ping(running.redis.port)

    deadline = time.monotonic() + STORE_DEADLINE
    for hub in running.hubs:
        url = f"{hub.url}/readyz"
        assert poll(answers(url, 503), deadline), (hub.name, httpx.get(url, timeout=5).text)
        assert "store" in httpx.get(url, timeout=5).json()["down"]
        assert httpx.get(f"{hub.url}/healthz", timeout=5).status_code == 200  # alive
        answer = decide(hub.url, cookie)
        assert answer.status_code == 503, answer.text
        body = answer.json()
        assert body["error"] == "temporarily_unavailable"
        assert body["request_id"] and body["request_id"] == answer.headers["x-request-id"]
        assert "redis" not in answer.text.lower()
        assert str(running.redis.port) not in answer.text

    # a browser starting a login (the flow goes to the store) gets a page, not a stack trace
    with Browser() as browser:
        form = find_form(browser.get(f"{running.url}/login"), form_id="login-form")
        page = browser.post(
            f"{running.url}/login", data={**form.fields, "email": "bob@acme.example"}, follow=False
        )
    assert page.status_code == 503, page.text
    assert page.headers["content-type"].startswith("text/html")
    request_id = page.headers["x-request-id"]
    assert request_id in page.text and "Traceback" not in page.text

    running.redis.start()  # same port, the saved data loaded
    deadline = time.monotonic() + STORE_DEADLINE
    for hub in running.hubs:
        url = f"{hub.url}/readyz"
        assert poll(answers(url, 200), deadline), (
            hub.name,
            httpx.get(url, timeout=5).text,
        )
        assert_accepted(hub.url, cookie, "alice@acme.example")
    assert {h.name: h.pid for h in running.hubs} == pids  # no replica was restarted
    assert mock_login(running.url, "bob@acme.example", "bob")


# --- 5. graceful: SIGTERM lets the request in flight finish ------------------------------------


def test_sigterm_lets_the_request_in_flight_finish(running: Cluster) -> None:
    cookie = mock_login(running.url, "alice@acme.example", "alice")
    slow = running.slow
    slow.release.clear()
    while not slow.arrived.empty():
        slow.arrived.get_nowait()

    def fetch() -> httpx.Response:
        return httpx.get(
            f"{running.url}/report?x=1",
            headers={"Host": SLOW_HOST, "Cookie": f"{SESSION_COOKIE}={cookie}"},
            timeout=30,
        )

    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        pending = pool.submit(fetch)
        try:
            port = slow.arrived.get(timeout=10)  # the request reached the upstream
            serving_hub = owner_of_connection(port, running.hubs)
            assert serving_hub is not None, f"no replica holds 127.0.0.1:{port}"
            serving_hub.terminate()
            # not ready at once; it drains (DRAIN_SECONDS), then closes its listener, but
            # the process lives on while the request is under way
            deadline = time.monotonic() + DRAIN_SECONDS + 10
            assert poll(lambda: not listening(serving_hub.port), deadline), serving_hub.log()
            assert serving_hub.running
            assert not pending.done()
            # meanwhile nginx sends new requests to the others
            for _ in range(3):
                assert decide(running.url, cookie).status_code == 200
        finally:
            slow.release.set()
        answer = pending.result(timeout=15)
    assert answer.status_code == 200, answer.text
    assert answer.text == "slow answer"
    # uvicorn ends a graceful stop by re-raising the signal it caught
    assert serving_hub.wait(15) in (0, -signal.SIGTERM), serving_hub.log()[-2000:]
    assert "Application shutdown complete" in serving_hub.log()  # the hub's own shutdown ran


def test_replicas_share_one_issuer_and_key_set(running: Cluster) -> None:
    """What makes tokens of one replica good on another: one issuer, one JWKS."""
    documents = [
        httpx.get(f"{h.url}/.well-known/openid-configuration", timeout=5).json()
        for h in running.hubs
    ]
    assert {d["issuer"] for d in documents} == {running.url}
    key_sets = [
        httpx.get(d["jwks_uri"].replace(running.url, h.url, 1), timeout=5).json()
        for d, h in zip(documents, running.hubs, strict=True)
    ]
    kids = [sorted(k["kid"] for k in ks["keys"]) for ks in key_sets]
    assert kids[0] and kids.count(kids[0]) == len(kids), json.dumps(key_sets)
