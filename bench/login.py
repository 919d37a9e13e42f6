"""Hub-side cost of one full brokered login, in logins/s per core.

One login, driven in process (httpx.AsyncClient + httpx.ASGITransport against
``create_app(hub=...)``), one process, one event loop, one login at a time (= one core):

1. ``GET /login?rd=/oauth2/authorize?...``      hub: new flow in the store, email form
2. ``POST /login`` (flow, csrf, email)          hub: CSRF check, home-realm discovery,
                                                  upstream authorization URL (PKCE, nonce)
3. ``GET {idp}/authorize``                      the browser at the partner IdP (IdP cost)
4. ``GET /callback/acme-oidc?code=...``         hub: take the flow, code exchange with the
                                                  IdP's token endpoint, RS256 ID token
                                                  verification (allow-list), userinfo merge,
                                                  binding, session created in the store
5. ``GET /oauth2/authorize`` (with the session) hub: authorization code for the app
6. ``POST /oauth2/token``                       hub: code redeemed, an access token (RFC 9068)
                                                  and an ID token signed, refresh token stored

The upstream IdP is ``tests.fakes.oidc_idp.FakeOidcProvider`` (a Starlette app, RS256),
reached through ``ConnectorContext(mounts=...)``. Its transport is wrapped to add up the
time spent inside it (its /authorize, /token, /userinfo, and the ASGI hop that stands in
for the network): *hub-side* time is the wall time minus that IdP time.

Also measured in the same run: ``cryptography``'s raw RSA-2048 sign and verify rates (and
PyJWT's RS256 encode/decode) — per login the hub signs 2 tokens and verifies 1.

Run from the repository root::

    .venv/bin/python -m bench.login                       # memory store
    .venv/bin/python -m bench.login --redis auto          # + a private redis-server
    .venv/bin/python -m bench.login --redis redis://127.0.0.1:6390/0
    .venv/bin/python -m bench.login --served --redis auto   # the hub under uvicorn, over HTTP

``--served`` (``bench/served.py``, ``bench/served_hub.py``) measures the budget's figure:
the hub in its own uvicorn process, driven over HTTP on 127.0.0.1 with concurrent logins,
its process CPU time per login minus the fake IdP's. This in-process mode gives the
per-step breakdown.

A benchmark, not a test: its numbers never decide a test run's pass/fail.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import cProfile
import gc
import hashlib
import html
import io
import logging
import os
import platform
import pstats
import random
import re
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

import httpx
import jwt
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from starlette.types import ASGIApp, Receive, Scope, Send

from connectors.registry import ConnectorContext
from federation.hub import build_hub
from federation.settings import (
    ClientSettings,
    PartnerKind,
    PartnerSettings,
    PartnerStatus,
    Settings,
)
from federation.stores.base import JSON, Put, SetAdd, Store
from federation.stores.memory import MemoryStore
from federation.stores.redis import RedisStore
from federation.web.app import create_app
from tests.fakes.oidc_idp import FakeOidcProvider, FakeUser

TARGET = 200.0  # logins/s per core, hub-side (ARCHITECTURE.md, "Performance budget")
HUB = "http://hub.bench.test"
IDP = "https://idp.acme.test"
CONNECTION = "acme-oidc"
APP_CB = "https://orders.app.test/callback"
APP_SECRET = "orders-secret-0123456789"
EMAIL = "alice@acme.test"

STEPS = (
    "GET /login",
    "POST /login",
    "IdP /authorize (browser)",
    "GET /callback/{conn}",
    "GET /oauth2/authorize",
    "POST /oauth2/token",
)
SIGN = "cryptography RSA-2048 sign (PKCS#1 v1.5 SHA-256)"
VERIFY = "cryptography RSA-2048 verify"
_HIDDEN = re.compile(r'<input type="hidden" name="([^"]+)" value="([^"]*)">')


# --- instrumentation ----------------------------------------------------------------------


class TimedTransport(httpx.AsyncBaseTransport):
    """Adds up the wall time spent inside the wrapped (IdP) transport."""

    def __init__(self, inner: httpx.AsyncBaseTransport) -> None:
        self.inner = inner
        self.ns = 0
        self.calls = 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        start = time.perf_counter_ns()
        try:
            return await self.inner.handle_async_request(request)
        finally:
            self.ns += time.perf_counter_ns() - start
            self.calls += 1


class TimedApp:
    """The hub's ASGI app, timed: wall time inside it, minus its calls to the IdP."""

    def __init__(self, app: ASGIApp, upstream: TimedTransport) -> None:
        self.app = app
        self.upstream = upstream
        self.ns = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        start, upstream = time.perf_counter_ns(), self.upstream.ns
        try:
            await self.app(scope, receive, send)
        finally:
            self.ns += time.perf_counter_ns() - start - (self.upstream.ns - upstream)


class TimedStore:
    """A Store that counts and times the calls it forwards (to see the store's share)."""

    def __init__(self, inner: Store) -> None:
        self.inner = inner
        self.ns = 0
        self.calls = 0

    @contextlib.contextmanager
    def _timed(self) -> Iterator[None]:
        start = time.perf_counter_ns()
        try:
            yield
        finally:
            self.ns += time.perf_counter_ns() - start
            self.calls += 1

    async def put(self, key: str, value: JSON, ttl: float) -> None:
        with self._timed():
            await self.inner.put(key, value, ttl)

    async def get(self, key: str) -> JSON | None:
        with self._timed():
            return await self.inner.get(key)

    async def write_many(self, puts: Sequence[Put] = (), adds: Sequence[SetAdd] = ()) -> None:
        with self._timed():
            await self.inner.write_many(puts, adds)

    async def take(self, key: str) -> JSON | None:
        with self._timed():
            return await self.inner.take(key)

    async def delete(self, key: str) -> bool:
        with self._timed():
            return await self.inner.delete(key)

    async def add_once(self, key: str, ttl: float) -> bool:
        with self._timed():
            return await self.inner.add_once(key, ttl)

    async def set_add(self, key: str, member: str, ttl: float) -> None:
        with self._timed():
            await self.inner.set_add(key, member, ttl)

    async def set_members(self, key: str) -> set[str]:
        with self._timed():
            return await self.inner.set_members(key)

    async def set_remove(self, key: str, member: str) -> None:
        with self._timed():
            await self.inner.set_remove(key, member)

    async def ping(self) -> None:
        await self.inner.ping()

    async def aclose(self) -> None:
        await self.inner.aclose()


# --- the rig ------------------------------------------------------------------------------


@dataclass
class Rig:
    http: httpx.AsyncClient  # the browser at the hub (cookies)
    idp_browser: httpx.AsyncClient  # the browser at the IdP
    upstream: TimedTransport  # the hub's own calls to the IdP (token, userinfo)
    app: TimedApp
    store: TimedStore
    rng: random.Random


def settings_for(idp: FakeOidcProvider, issuer: str = HUB) -> Settings:
    return Settings(
        issuer=issuer,
        allow_insecure_http=True,
        partners=(
            PartnerSettings(
                id="acme",
                name="Acme Supplies",
                kind=PartnerKind.supplier,
                status=PartnerStatus.active,
                domains=("acme.test",),
                connections=(idp.connection_settings(id=CONNECTION),),
            ),
        ),
        clients=(
            ClientSettings(client_id="orders", client_secret=APP_SECRET, redirect_uris=(APP_CB,)),
        ),
    )


@contextlib.asynccontextmanager
async def rig(store: Store, seed: int) -> AsyncIterator[Rig]:
    idp = FakeOidcProvider(
        IDP,
        users=[FakeUser("alice-123", email=EMAIL, name="Alice Martin", groups=("buyers",))],
    )
    upstream = TimedTransport(idp.transport)
    timed_store = TimedStore(store)
    origin = "{0.scheme}://{0.netloc}".format(urlsplit(IDP))
    hub = build_hub(
        settings_for(idp),
        store=timed_store,
        context=ConnectorContext(hub_base_url=HUB, mounts={origin: upstream}),
    )
    app = TimedApp(create_app(hub=hub), upstream)
    http = httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url=HUB, follow_redirects=False
    )
    idp_browser = httpx.AsyncClient(transport=idp.transport, follow_redirects=False)
    try:
        async with http, idp_browser:
            yield Rig(http, idp_browser, upstream, app, timed_store, random.Random(seed))
    finally:
        await store.aclose()


def _expect(response: httpx.Response, status: int, step: str) -> None:
    if response.status_code != status:
        raise RuntimeError(
            f"{step}: HTTP {response.status_code}, expected {status}: {response.text[:300]}"
        )


def _token(rng: random.Random, nbytes: int) -> str:
    return base64.urlsafe_b64encode(rng.randbytes(nbytes)).rstrip(b"=").decode()


def app_authorization(rng: random.Random) -> tuple[str, str, str, str]:
    """The app's side of a login: PKCE verifier, state, nonce and its authorize URL."""
    verifier = _token(rng, 48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest())
    state, nonce = _token(rng, 12), _token(rng, 12)
    authorize = "/oauth2/authorize?" + urlencode(
        {
            "response_type": "code",
            "client_id": "orders",
            "redirect_uri": APP_CB,
            "scope": "openid email profile groups",
            "state": state,
            "nonce": nonce,
            "code_challenge": challenge.rstrip(b"=").decode(),
            "code_challenge_method": "S256",
        }
    )
    return verifier, state, nonce, authorize


@dataclass
class LoginSample:
    """One login. Per step: wall time, time at the IdP, time inside the hub's ASGI app."""

    wall_ns: int = 0
    total_ns: list[int] = field(default_factory=list)
    idp_ns: list[int] = field(default_factory=list)
    app_ns: list[int] = field(default_factory=list)
    store_ns: int = 0
    store_calls: int = 0
    upstream_calls: int = 0

    @property
    def idp_total(self) -> int:
        return sum(self.idp_ns)

    @property
    def hub_side(self) -> int:
        """Wall time minus IdP time: the hub, plus the in-process browser driving it."""
        return self.wall_ns - self.idp_total

    @property
    def app_total(self) -> int:
        return sum(self.app_ns)


async def one_login(r: Rig, check: bool = False) -> LoginSample:
    """One full login (the six steps of the module docstring), timed step by step."""
    clock = time.perf_counter_ns
    begin = clock()
    verifier, app_state, app_nonce, authorize = app_authorization(r.rng)
    r.http.cookies.clear()  # a new browser for every login
    sample = LoginSample()
    store_ns, store_calls, upstream_calls = r.store.ns, r.store.calls, r.upstream.calls
    mark = (0, 0, 0)

    def start() -> None:
        nonlocal mark
        mark = (clock(), r.upstream.ns, r.app.ns)

    def lap(*, all_idp: bool = False) -> None:
        total = clock() - mark[0]
        sample.total_ns.append(total)
        sample.idp_ns.append(total if all_idp else r.upstream.ns - mark[1])
        sample.app_ns.append(r.app.ns - mark[2])

    start()
    page = await r.http.get("/login", params={"rd": authorize})
    _expect(page, 200, "GET /login")
    # csrf and rd, as a browser posts them back (attribute values unescaped)
    fields = {name: html.unescape(value) for name, value in _HIDDEN.findall(page.text)}
    if "csrf" not in fields:
        raise RuntimeError("GET /login: no csrf field in the form")
    lap()

    start()
    sent = await r.http.post("/login", data={**fields, "email": EMAIL})
    _expect(sent, 303, "POST /login")
    lap()

    start()  # the browser at the partner's IdP: none of it is the hub's
    at_idp = await r.idp_browser.get(sent.headers["location"])
    _expect(at_idp, 302, "IdP /authorize")
    lap(all_idp=True)

    start()
    back = await r.http.get(at_idp.headers["location"])
    _expect(back, 303, "GET /callback")
    lap()

    start()
    code_redirect = await r.http.get(back.headers["location"])
    _expect(code_redirect, 303, "GET /oauth2/authorize")
    answer = dict(parse_qsl(urlsplit(code_redirect.headers["location"]).query))
    if answer.get("state") != app_state or "code" not in answer:
        raise RuntimeError(f"GET /oauth2/authorize: no code for us: {answer}")
    lap()

    start()
    tokens = await r.http.post(
        "/oauth2/token",
        data={
            "grant_type": "authorization_code",
            "code": answer["code"],
            "redirect_uri": APP_CB,
            "code_verifier": verifier,
        },
        auth=("orders", APP_SECRET),
    )
    _expect(tokens, 200, "POST /oauth2/token")
    lap()

    sample.wall_ns = clock() - begin
    sample.store_ns = r.store.ns - store_ns
    sample.store_calls = r.store.calls - store_calls
    sample.upstream_calls = r.upstream.calls - upstream_calls
    if check:  # outside the measured loop: the app really got valid tokens
        await _check_tokens(r, tokens.json(), app_nonce)
    return sample


async def _check_tokens(r: Rig, body: dict[str, Any], nonce: str) -> None:
    jwks = (await r.http.get("/oauth2/jwks")).json()
    token = body["id_token"]
    kid = jwt.get_unverified_header(token)["kid"]
    key = next(k for k in jwks["keys"] if k["kid"] == kid)
    claims = jwt.decode(
        token, jwt.PyJWK(key).key, algorithms=["RS256"], audience="orders", issuer=HUB
    )
    if claims.get("nonce") != nonce or claims.get("email") != EMAIL:
        raise RuntimeError(f"unexpected ID token claims: {claims}")
    if not body.get("access_token") or not body.get("refresh_token"):
        raise RuntimeError(f"token response lacks tokens: {sorted(body)}")


async def request_floor(r: Rig, count: int = 300) -> tuple[float, float]:
    """Median µs of GET /healthz: through the in-process client, and inside the app alone."""
    outer: list[int] = []
    inner: list[int] = []
    for _ in range(count):
        start, app = time.perf_counter_ns(), r.app.ns
        _expect(await r.http.get("/healthz"), 200, "GET /healthz")
        outer.append(time.perf_counter_ns() - start)
        inner.append(r.app.ns - app)
    return statistics.median(outer) / 1000, statistics.median(inner) / 1000


# --- one run per store --------------------------------------------------------------------


@dataclass
class Result:
    store: str
    samples: list[LoginSample]
    elapsed_s: float
    cpu_s: float  # this process's CPU time over the measured loop (hub + IdP + browser)
    floor_us: tuple[float, float]

    @property
    def logins(self) -> int:
        return len(self.samples)

    def rate(self, ns: Callable[[LoginSample], int]) -> float:
        return self.logins / (sum(ns(s) for s in self.samples) / 1e9)

    def ms(self, ns: Callable[[LoginSample], int]) -> float:
        return statistics.fmean(ns(s) for s in self.samples) / 1e6


async def run_store(name: str, make_store: Callable[[], Store], args: argparse.Namespace) -> Result:
    async with rig(make_store(), args.seed) as r:
        await one_login(r, check=True)
        for _ in range(args.warmup):
            await one_login(r)
        floor = await request_floor(r)
        gc.collect()
        samples: list[LoginSample] = []
        deadline = time.perf_counter() + args.max_seconds
        start, cpu = time.perf_counter(), time.process_time()
        while len(samples) < args.logins and time.perf_counter() < deadline:
            samples.append(await one_login(r))
        elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu
        if args.profile:
            await _profile(r, args)
    return Result(name, samples, elapsed, cpu, floor)


async def _profile(r: Rig, args: argparse.Namespace) -> None:
    """A separate cProfile pass (its own logins; the numbers above stay unprofiled)."""
    profiler = cProfile.Profile()
    profiler.enable()
    for _ in range(min(args.logins, 500)):
        await one_login(r)
    profiler.disable()
    out = io.StringIO()
    pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(args.profile)
    print(out.getvalue())


# --- reference rates ----------------------------------------------------------------------


def _rate(fn: Callable[[], object], seconds: float) -> float:
    count, start = 0, time.perf_counter()
    while True:
        for _ in range(20):
            fn()
        count += 20
        elapsed = time.perf_counter() - start
        if elapsed >= seconds:
            return count / elapsed


def crypto_rates(seconds: float) -> dict[str, float]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public = key.public_key()
    data = b"e" * 600  # about a JWS signing input
    pkcs1, sha256 = padding.PKCS1v15(), hashes.SHA256()
    signature = key.sign(data, pkcs1, sha256)
    now = int(time.time())
    claims = {"iss": HUB, "sub": "s" * 43, "aud": "orders", "iat": now, "exp": now + 300}
    token = jwt.encode(claims, key, algorithm="RS256", headers={"kid": "k1"})
    return {
        SIGN: _rate(lambda: key.sign(data, pkcs1, sha256), seconds),
        VERIFY: _rate(lambda: public.verify(signature, data, pkcs1, sha256), seconds),
        "PyJWT encode RS256 (what the hub calls to sign)": _rate(
            lambda: jwt.encode(claims, key, algorithm="RS256", headers={"kid": "k1"}), seconds
        ),
        "PyJWT decode RS256 (what the hub calls to verify)": _rate(
            lambda: jwt.decode(token, public, algorithms=["RS256"], audience="orders"), seconds
        ),
    }


# --- Redis --------------------------------------------------------------------------------


@contextlib.contextmanager
def private_redis() -> Iterator[str]:
    """A throw-away redis-server on a free 127.0.0.1 port, stopped (by its pid) afterwards."""
    with private_redis_process() as (url, _):
        yield url


def free_port() -> int:
    """A free TCP port on 127.0.0.1 (bound, read, released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


@contextlib.contextmanager
def private_redis_process() -> Iterator[tuple[str, int]]:
    """:func:`private_redis`, also giving the server's pid (to read its CPU time)."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit("--redis auto needs redis-server on PATH")
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="bench-redis-") as workdir:
        command = [
            binary, "--port", str(port), "--bind", "127.0.0.1", "--protected-mode", "yes",
            "--save", "", "--appendonly", "no", "--dir", workdir,
            "--logfile", str(Path(workdir) / "redis.log"), "--daemonize", "no",
        ]  # fmt: skip
        process = subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        try:
            deadline = time.monotonic() + 10
            while not _pong(port):
                if process.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit(f"redis-server on port {port} did not start")
                time.sleep(0.02)
            yield f"redis://127.0.0.1:{port}/0", process.pid
        finally:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def _pong(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


async def drop_prefix(url: str, prefix: str) -> int:
    """Delete what the run left under its private prefix (sessions live for hours)."""
    from redis.asyncio import Redis

    client = Redis.from_url(url)
    deleted = 0
    try:
        batch: list[Any] = []
        async for key in client.scan_iter(match=f"{prefix}*", count=1000):
            batch.append(key)
            if len(batch) >= 1000:
                deleted += await client.delete(*batch)
                batch = []
        if batch:
            deleted += await client.delete(*batch)
    finally:
        await client.aclose()
    return deleted


def _check_local(url: str) -> None:
    host = urlsplit(url).hostname
    if host not in ("127.0.0.1", "localhost", "::1"):
        raise SystemExit(f"--redis must point at 127.0.0.1 (got {host!r})")


# --- report -------------------------------------------------------------------------------


def machine() -> dict[str, str]:
    model = "?"
    mem = "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                mem = f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
                break
    return {
        "nproc": str(os.cpu_count()),
        "cpu": model,
        "memory": mem,
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "platform": platform.platform(),
    }


def report(results: list[Result], crypto: dict[str, float]) -> None:
    print("machine")
    for k, v in machine().items():
        print(f"  {k:<9} {v}")
    print(f"  command   python -m bench.login {' '.join(sys.argv[1:])}".rstrip())
    print()
    print("reference rates (same process, one core)")
    for name, rate in crypto.items():
        print(f"  {name:<50} {rate:>9,.0f} /s  {1e6 / rate:>6.0f} µs")
    sign = crypto[SIGN]
    verify = crypto[VERIFY]
    rsa_us = 2e6 / sign + 1e6 / verify
    print(
        f"  per login the hub signs 2 tokens and verifies 1: {rsa_us:.0f} µs of raw RSA"
        f" -> at most {1e6 / rsa_us:,.0f} logins/s if RSA were all"
    )
    for res in results:
        _report_store(res, rsa_us)


def _median(values: list[int]) -> float:
    return statistics.median(values) / 1000


def _report_store(res: Result, rsa_us: float) -> None:
    first = res.samples[0]
    hub_rate = res.rate(lambda s: s.hub_side)
    app_rate = res.rate(lambda s: s.app_total)
    print()
    print(f"store: {res.store}   {res.logins} logins, sequential, one event loop")
    print(
        f"  total                  {res.rate(lambda s: s.wall_ns):>6,.0f} logins/s"
        f"  {res.ms(lambda s: s.wall_ns):5.2f} ms/login"
        f"  (loop: {res.logins / res.elapsed_s:,.0f}/s)"
    )
    print(
        f"  at the IdP             {'':>6}          {res.ms(lambda s: s.idp_total):5.2f} ms/login"
        f"  (browser /authorize + {first.upstream_calls} hub calls: /token, /userinfo)"
    )
    verdict = "MET" if hub_rate >= TARGET else "MISSED"
    print(
        f"  hub-side (total - IdP) {hub_rate:>6,.0f} logins/s"
        f"  {res.ms(lambda s: s.hub_side):5.2f} ms/login"
        f"  target >= {TARGET:.0f}/s per core: {verdict} ({hub_rate / TARGET:.2f}x)"
    )
    print(
        f"  inside the hub app     {app_rate:>6,.0f} logins/s"
        f"  {res.ms(lambda s: s.app_total):5.2f} ms/login"
        "  (the rest of hub-side is the in-process browser: httpx client + ASGITransport)"
    )
    idp_s = sum(s.idp_total for s in res.samples) / 1e9
    print(
        f"  CPU of this process    {res.logins / res.cpu_s:>6,.0f} logins/s"
        f"  {res.cpu_s / res.logins * 1000:5.2f} ms/login"
        f"  (wall {res.elapsed_s / res.logins * 1000:.2f} ms: the rest is waiting, e.g. on Redis);"
        f" minus IdP: {res.logins / (res.cpu_s - idp_s):,.0f} logins/s"
    )
    print(
        f"  within the hub app: store {res.ms(lambda s: s.store_ns):.2f} ms"
        f" ({first.store_calls} calls), raw RSA ~{rsa_us / 1000:.2f} ms;"
        f" GET /healthz {res.floor_us[0]:.0f} µs through the client, {res.floor_us[1]:.0f} µs"
        " inside the app"
    )
    print()
    head = ("step", "wall", "IdP", "hub-side", "in app", "app mean", "share")
    print("  {:<24} {:>7} {:>7} {:>9} {:>7} {:>9} {:>6}".format(*head))
    print("  {:<24} {:>7} {:>7} {:>9} {:>7} {:>9} {:>6}".format("", *(["med µs"] * 4), "µs", ""))
    means = [statistics.fmean(s.app_ns[k] for s in res.samples) / 1000 for k in range(len(STEPS))]
    for k, step in enumerate(STEPS):
        cells = (
            _median([s.total_ns[k] for s in res.samples]),
            _median([s.idp_ns[k] for s in res.samples]),
            _median([s.total_ns[k] - s.idp_ns[k] for s in res.samples]),
            _median([s.app_ns[k] for s in res.samples]),
            means[k],
        )
        share = means[k] / sum(means) * 100
        print(
            "  {:<24} {:>7.0f} {:>7.0f} {:>9.0f} {:>7.0f} {:>9.0f} {:>5.1f}%".format(
                step, *cells, share
            )
        )


# --- main ---------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="bench.login", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--served",
        action="store_true",
        help="the hub in its own uvicorn process, driven over HTTP on 127.0.0.1 (bench/served.py)",
    )
    parser.add_argument("-n", "--logins", type=int, help="measured logins (2000; served: 3000)")
    parser.add_argument("--warmup", type=int, help="logins before measuring (200; served: 300)")
    parser.add_argument(
        "--concurrency", type=int, default=8, help="served: concurrent logins (browsers)"
    )
    parser.add_argument(
        "--calibrate",
        type=int,
        default=3000,
        help="served: requests to price a bare uvicorn request and GET /healthz",
    )
    parser.add_argument("--seed", type=int, default=1234)
    parser.add_argument(
        "--max-seconds",
        type=float,
        default=120.0,
        help="stop a store's measured loop after this long",
    )
    parser.add_argument(
        "--redis",
        metavar="URL|auto",
        help="also run on Redis: a 127.0.0.1 URL, or 'auto' for a private one",
    )
    parser.add_argument("--crypto-seconds", type=float, default=1.0)
    parser.add_argument(
        "--loop",
        choices=("uvloop", "asyncio"),
        default="uvloop",
        help="event loop: uvloop (what `isthmus serve` runs on) or the stdlib's",
    )
    parser.add_argument(
        "--audit",
        choices=("devnull", "off"),
        default="devnull",
        help="audit log lines written to /dev/null (default) or not formatted",
    )
    parser.add_argument(
        "--profile",
        type=int,
        default=0,
        metavar="TOP",
        help="after measuring, cProfile ≤500 more logins, print TOP functions",
    )
    args = parser.parse_args(argv)
    if args.logins is None:
        args.logins = 3000 if args.served else 2000
    if args.warmup is None:
        args.warmup = 300 if args.served else 200
    if not (0 < args.logins <= 100_000 and 0 <= args.warmup <= 10_000):
        parser.error("--logins in 1..100000, --warmup in 0..10000")
    if not (1 <= args.concurrency <= 64 and 1 <= args.calibrate <= 100_000):
        parser.error("--concurrency in 1..64, --calibrate in 1..100000")
    if not 0 < args.max_seconds <= 600:
        parser.error("--max-seconds in (0, 600]")
    if args.served and (args.profile or args.loop != "uvloop"):
        parser.error("--profile and --loop are in-process options")
    return args


async def amain(args: argparse.Namespace) -> list[Result]:
    results = [await run_store("memory", MemoryStore, args)]
    if args.redis:
        with contextlib.ExitStack() as stack:
            url = stack.enter_context(private_redis()) if args.redis == "auto" else args.redis
            _check_local(url)
            prefix = f"bench:{secrets.token_hex(4)}:"
            try:
                results.append(
                    await run_store(
                        "redis (127.0.0.1, redis-py asyncio)",
                        lambda: RedisStore.from_url(url, prefix=prefix),
                        args,
                    )
                )
            finally:
                await drop_prefix(url, prefix)
    return results


def configure_audit(mode: str) -> None:
    """Audit lines formatted and written to /dev/null ("devnull"), or not formatted ("off")."""
    audit = logging.getLogger("isthmus.audit")
    audit.propagate = False
    if mode == "devnull":
        audit.setLevel(logging.INFO)
        audit.addHandler(logging.FileHandler(os.devnull))
    else:
        audit.setLevel(logging.WARNING)


def _stop(signum: int, frame: object) -> None:
    raise KeyboardInterrupt  # SIGTERM as Ctrl+C: the finally blocks stop what we started


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _stop)
    try:
        _main(args)
    except KeyboardInterrupt:
        raise SystemExit("interrupted (every process this run started was stopped)") from None


def _main(args: argparse.Namespace) -> None:
    if args.served:
        from bench.served import run_served

        run_served(args)
        return
    configure_audit(args.audit)
    crypto = crypto_rates(args.crypto_seconds)
    if args.loop == "uvloop":
        import uvloop

        results = uvloop.run(amain(args))
    else:
        results = asyncio.run(amain(args))
    report(results, crypto)


if __name__ == "__main__":
    main()
