"""Served mode of ``bench.login``: the hub in its own uvicorn process, driven over real HTTP.

``python -m bench.login --served [--redis auto]`` starts ``bench.served_hub`` (the hub under
uvicorn with uvloop and httptools, one worker, access log off, audit lines to /dev/null,
the fake partner IdP mounted in process) on a free ``127.0.0.1`` port, and drives full
logins at it from this process over HTTP/1.1 on the loopback, ``--concurrency`` logins at a
time (each login a new simulated browser: its own TCP connection and cookie jar), until
``--logins`` logins after ``--warmup`` (or ``--max-seconds``).

Measured across the window, from outside the hub:

- the hub process's CPU time (user + system, every thread), from ``/proc/<pid>/stat``;
- minus the time spent inside the fake IdP, which runs in the hub process only because it
  is a fake (its ``/authorize`` for the browser, its ``/token`` and ``/userinfo`` for the
  hub, including the in-process ASGI hop that stands in for the network). It is metered
  in the hub process as thread CPU time and read through the bench-only ``/__bench/meter``;
- minus one bare uvicorn request per login (priced by ``/__bench/noop`` afterwards): the
  browser's ``/authorize`` reaches the fake IdP through the hub's uvicorn, which a real IdP
  would serve on its own server.

What is left is the hub's CPU per login; 1 / that is the hub-side logins/s per core (the
budget's measure). Also reported: the wall throughput achieved with the driver, the hub
(and Redis) sharing the machine's cores, this driver's CPU, Redis's CPU, and login latency.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import html
import json
import os
import random
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import urlencode, urlsplit

import httpx
import jwt
from starlette.types import Receive, Scope, Send

from bench.login import (
    _HIDDEN,
    APP_CB,
    APP_SECRET,
    CONNECTION,
    EMAIL,
    IDP,
    TARGET,
    _check_local,
    app_authorization,
    drop_prefix,
    free_port,
    machine,
    private_redis_process,
)
from bench.served_hub import METER, NOOP, _answer

ROOT = Path(__file__).resolve().parents[1]
IDP_HOST = urlsplit(IDP).netloc
BASIC = "Basic " + base64.b64encode(f"orders:{APP_SECRET}".encode()).decode()
CLK_TCK = os.sysconf("SC_CLK_TCK")


# --- a small HTTP/1.1 client (the driver must stay cheap: it shares the cores) -------------


@dataclass
class Reply:
    status: int
    headers: list[tuple[str, str]]
    body: bytes

    def header(self, name: str) -> str:
        for key, value in self.headers:
            if key == name:
                return value
        raise RuntimeError(f"HTTP {self.status}: no {name} header")

    def location(self) -> str:
        """The Location target as path?query (every host here is served on one port)."""
        parts = urlsplit(self.header("location"))
        return parts.path + (f"?{parts.query}" if parts.query else "")


class Connection:
    """One keep-alive HTTP/1.1 connection to 127.0.0.1:port, one request at a time."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def open(cls, port: int) -> Connection:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        return cls(reader, writer)

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(OSError):
            await self.writer.wait_closed()

    async def request(
        self,
        method: str,
        target: str,
        host: str,
        headers: Sequence[tuple[str, str]] = (),
        body: bytes = b"",
    ) -> Reply:
        lines = [f"{method} {target} HTTP/1.1", f"Host: {host}"]
        lines += [f"{name}: {value}" for name, value in headers]
        if method == "POST":
            lines.append(f"Content-Length: {len(body)}")
        self.writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body)
        head = await self.reader.readuntil(b"\r\n\r\n")
        status_line, *header_lines = head[:-4].decode("latin-1").split("\r\n")
        reply = Reply(int(status_line.split(" ", 2)[1]), [], b"")
        for line in header_lines:
            name, _, value = line.partition(":")
            reply.headers.append((name.strip().lower(), value.strip()))
        length = next((v for k, v in reply.headers if k == "content-length"), None)
        if length is not None:
            reply.body = await self.reader.readexactly(int(length))
        elif ("transfer-encoding", "chunked") in reply.headers:
            reply.body = await self._chunked()
        else:
            raise RuntimeError(f"{method} {target}: a response without a length")
        return reply

    async def _chunked(self) -> bytes:
        parts: list[bytes] = []
        while True:
            size = int((await self.reader.readuntil(b"\r\n")).split(b";")[0], 16)
            if size == 0:
                await self.reader.readuntil(b"\r\n")
                return b"".join(parts)
            parts.append((await self.reader.readexactly(size + 2))[:-2])


class Browser:
    """A new browser: one connection (the hub and the IdP share the port), a cookie jar."""

    def __init__(self, connection: Connection, hub_host: str) -> None:
        self.connection = connection
        self.hub_host = hub_host
        self.cookies: dict[str, str] = {}

    async def send(
        self,
        method: str,
        target: str,
        *,
        host: str | None = None,
        form: dict[str, str] | None = None,
    ) -> Reply:
        headers: list[tuple[str, str]] = []
        if self.cookies:
            headers.append(("Cookie", "; ".join(f"{k}={v}" for k, v in self.cookies.items())))
        body = b""
        if form is not None:
            headers.append(("Content-Type", "application/x-www-form-urlencoded"))
            body = urlencode(form).encode()
        reply = await self.connection.request(method, target, host or self.hub_host, headers, body)
        for name, value in reply.headers:
            if name == "set-cookie":
                self._store_cookie(value)
        return reply

    def _store_cookie(self, value: str) -> None:
        pair, *attributes = value.split(";")
        name, _, cookie = pair.strip().partition("=")
        expired = any(a.strip().lower() in ("max-age=0", "max-age=-1") for a in attributes)
        if expired:
            self.cookies.pop(name, None)
        else:
            self.cookies[name] = cookie


# --- one login over HTTP ------------------------------------------------------------------


def _expect(reply: Reply, status: int, step: str) -> None:
    if reply.status != status:
        raise RuntimeError(f"{step}: HTTP {reply.status}, expected {status}: {reply.body[:300]!r}")


async def one_login(port: int, rng: random.Random) -> dict[str, Any]:
    """The six steps of bench.login, as a new browser plus the app's back channel."""
    verifier, app_state, app_nonce, authorize = app_authorization(rng)
    connection = await Connection.open(port)
    try:
        browser = Browser(connection, f"127.0.0.1:{port}")
        page = await browser.send("GET", "/login?" + urlencode({"rd": authorize}))
        _expect(page, 200, "GET /login")
        text = page.body.decode()
        fields = {name: html.unescape(value) for name, value in _HIDDEN.findall(text)}
        if "csrf" not in fields:
            raise RuntimeError("GET /login: no csrf field in the form")
        sent = await browser.send("POST", "/login", form={**fields, "email": EMAIL})
        _expect(sent, 303, "POST /login")
        if not sent.header("location").startswith(IDP):
            raise RuntimeError(f"POST /login: not sent to the IdP: {sent.header('location')}")
        at_idp = await browser.send("GET", sent.location(), host=IDP_HOST)
        _expect(at_idp, 302, "IdP /authorize")
        back = await browser.send("GET", at_idp.location())
        _expect(back, 303, f"GET /callback/{CONNECTION}")
        code_redirect = await browser.send("GET", back.location())
        _expect(code_redirect, 303, "GET /oauth2/authorize")
        answer = dict(
            pair.split("=", 1)
            for pair in urlsplit(code_redirect.header("location")).query.split("&")
        )
        if answer.get("state") != app_state or "code" not in answer:
            raise RuntimeError(f"GET /oauth2/authorize: no code for us: {answer}")
        # the app's back channel: no browser cookies
        tokens = await connection.request(
            "POST",
            "/oauth2/token",
            browser.hub_host,
            [("Authorization", BASIC), ("Content-Type", "application/x-www-form-urlencoded")],
            urlencode(
                {
                    "grant_type": "authorization_code",
                    "code": answer["code"],
                    "redirect_uri": APP_CB,
                    "code_verifier": verifier,
                }
            ).encode(),
        )
        _expect(tokens, 200, "POST /oauth2/token")
    finally:
        await connection.close()
    body: dict[str, Any] = json.loads(tokens.body)
    body["_nonce"] = app_nonce
    return body


async def check_tokens(port: int, body: dict[str, Any]) -> None:
    """Outside the measured window: the app really got valid tokens from the served hub."""
    connection = await Connection.open(port)
    try:
        jwks = json.loads((await connection.request("GET", "/oauth2/jwks", "127.0.0.1")).body)
    finally:
        await connection.close()
    token = body["id_token"]
    kid = jwt.get_unverified_header(token)["kid"]
    key = next(k for k in jwks["keys"] if k["kid"] == kid)
    claims = jwt.decode(
        token,
        jwt.PyJWK(key).key,
        algorithms=["RS256"],
        audience="orders",
        issuer=f"http://127.0.0.1:{port}",
    )
    if claims.get("nonce") != body["_nonce"] or claims.get("email") != EMAIL:
        raise RuntimeError(f"unexpected ID token claims: {claims}")
    if not body.get("access_token") or not body.get("refresh_token"):
        raise RuntimeError(f"token response lacks tokens: {sorted(body)}")


async def logins(
    port: int, count: int, concurrency: int, seconds: float, rng: random.Random
) -> list[float]:
    """``count`` logins, ``concurrency`` at a time, or fewer if ``seconds`` run out."""
    latencies: list[float] = []
    deadline = time.perf_counter() + seconds
    started = 0

    async def worker() -> None:
        nonlocal started
        while started < count and time.perf_counter() < deadline:
            started += 1
            begin = time.perf_counter()
            await one_login(port, rng)
            latencies.append(time.perf_counter() - begin)

    async with asyncio.TaskGroup() as group:
        for _ in range(concurrency):
            group.create_task(worker())
    return latencies


async def requests(port: int, path: str, count: int, concurrency: int, fresh: bool) -> None:
    """``count`` GETs of ``path``, ``concurrency`` at a time: over keep-alive connections,
    or each on a ``fresh`` connection (connect, one request, close)."""
    left = count

    async def worker() -> None:
        nonlocal left
        connection = await Connection.open(port)
        try:
            while left > 0:
                left -= 1
                _expect(await connection.request("GET", path, "127.0.0.1"), 200, path)
                if fresh and left > 0:
                    await connection.close()
                    connection = await Connection.open(port)
        finally:
            await connection.close()

    async with asyncio.TaskGroup() as group:
        for _ in range(concurrency):
            group.create_task(worker())


async def meter(port: int) -> dict[str, int]:
    connection = await Connection.open(port)
    try:
        reply = await connection.request("GET", METER, "127.0.0.1")
    finally:
        await connection.close()
    _expect(reply, 200, METER)
    values: dict[str, int] = json.loads(reply.body)
    return values


async def _empty(scope: Scope, receive: Receive, send: Send) -> None:
    await _answer(send, b"")


async def upstream_call_cost(port: int, count: int) -> tuple[float, float]:
    """CPU µs of this process per pooled ``httpx.AsyncClient`` POST (a /token-like form):
    over real loopback HTTP (to the hub's ``/__bench/noop``), and through ``ASGITransport``
    to an empty app (the hop that stands in for the network in the benchmark)."""
    form = {"grant_type": "authorization_code", "code": "c" * 43, "code_verifier": "v" * 64}
    real = httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}")
    hop = httpx.AsyncClient(transport=httpx.ASGITransport(app=_empty), base_url="http://idp")
    costs: list[float] = []
    async with real, hop:
        for client in (real, hop):
            for _ in range(50):
                await client.post(NOOP, data=form)
            start = time.process_time()
            for _ in range(count):
                await client.post(NOOP, data=form)
            costs.append((time.process_time() - start) / count * 1e6)
    return costs[0], costs[1]


def proc_cpu(pid: int) -> float:
    """User + system CPU seconds of a process (all its threads), from /proc/<pid>/stat."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime, stime (fields 14, 15)


# --- one run per store --------------------------------------------------------------------


@dataclass
class ServedResult:
    store: str
    logins: int
    wall_s: float
    hub_cpu_s: float  # /proc: user + system of the hub process over the window
    hub_self_s: float  # the hub's own time.process_time() over the window (cross-check)
    idp_cpu_s: float  # thread CPU time inside the fake IdP (in the hub process)
    idp_wall_s: float
    idp_calls: int
    idp_suspended: int
    driver_cpu_s: float
    redis_cpu_s: float | None
    latencies: list[float]
    noop_us: float  # hub CPU per bare uvicorn request (keep-alive)
    healthz_us: float  # hub CPU per GET /healthz (uvicorn + Starlette + the hub's middleware)
    fresh_us: float  # hub CPU per bare request on a new connection (accept, request, close)
    upstream_us: tuple[float, float]  # client CPU per pooled httpx call: loopback, ASGI hop
    concurrency: int
    notes: list[str] = field(default_factory=list)

    def per_login_ms(self, seconds: float) -> float:
        return seconds / self.logins * 1000

    @property
    def hub_ms(self) -> float:
        """The headline: hub CPU per login, less the fake IdP and its one uvicorn request."""
        return self.per_login_ms(self.hub_cpu_s - self.idp_cpu_s) - self.noop_us / 1000


async def _calibrate(
    port: int, path: str, count: int, concurrency: int, fresh: bool = False
) -> float:
    """Hub CPU µs per request of ``path`` (the hub's own process_time: ns resolution)."""
    before = (await meter(port))["process_time_ns"]
    await requests(port, path, count, concurrency, fresh)
    after = (await meter(port))["process_time_ns"]
    return (after - before) / 1000 / (count + 1)  # + the meter request itself


async def drive(
    name: str, port: int, hub_pid: int, redis_pid: int | None, args: argparse.Namespace
) -> ServedResult:
    rng = random.Random(args.seed)
    await check_tokens(port, await one_login(port, rng))
    await logins(port, args.warmup, args.concurrency, args.max_seconds, rng)
    start_meter = await meter(port)
    hub0 = proc_cpu(hub_pid)
    redis0 = proc_cpu(redis_pid) if redis_pid else 0.0
    wall0, driver0 = time.perf_counter(), time.process_time()
    latencies = await logins(port, args.logins, args.concurrency, args.max_seconds, rng)
    wall, driver = time.perf_counter() - wall0, time.process_time() - driver0
    hub = proc_cpu(hub_pid) - hub0
    redis = proc_cpu(redis_pid) - redis0 if redis_pid else None
    end_meter = await meter(port)
    noop = await _calibrate(port, NOOP, args.calibrate, args.concurrency)
    healthz = await _calibrate(port, "/healthz", args.calibrate, args.concurrency)
    fresh = await _calibrate(port, NOOP, args.calibrate, args.concurrency, fresh=True)
    upstream = await upstream_call_cost(port, max(1, args.calibrate // 3))

    def delta(key: str) -> int:
        return end_meter[key] - start_meter[key]

    result = ServedResult(
        store=name,
        logins=len(latencies),
        wall_s=wall,
        hub_cpu_s=hub,
        hub_self_s=delta("process_time_ns") / 1e9,
        idp_cpu_s=delta("idp_cpu_ns") / 1e9,
        idp_wall_s=delta("idp_wall_ns") / 1e9,
        idp_calls=delta("idp_calls"),
        idp_suspended=delta("idp_suspended"),
        driver_cpu_s=driver,
        redis_cpu_s=redis,
        latencies=latencies,
        noop_us=noop,
        healthz_us=healthz,
        fresh_us=fresh,
        upstream_us=upstream,
        concurrency=args.concurrency,
    )
    if result.logins < args.logins:
        result.notes.append(f"stopped by --max-seconds after {result.logins} logins")
    if result.idp_suspended:
        result.notes.append(
            f"{result.idp_suspended} IdP calls suspended: their thread CPU time may include"
            " other requests' work (the IdP figure is then an overestimate)"
        )
    return result


@contextlib.contextmanager
def hub_process(
    port: int, redis_url: str | None, prefix: str, args: argparse.Namespace
) -> Iterator[subprocess.Popen[bytes]]:
    """``bench.served_hub`` on 127.0.0.1:port, stopped (by its pid) on the way out."""
    command = [
        sys.executable, "-m", "bench.served_hub", "--port", str(port), "--audit", args.audit,
        "--parent", str(os.getpid()), "--max-seconds", str(3 * args.max_seconds + 300),
    ]  # fmt: skip
    if redis_url:
        command += ["--redis", redis_url, "--prefix", prefix]
    env = {k: v for k, v in os.environ.items() if not k.startswith("ISTHMUS_")}
    with tempfile.TemporaryFile(prefix="bench-hub-") as log:
        process = subprocess.Popen(
            command,
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            start_new_session=True,  # Ctrl+C reaches the driver, which stops the hub in order
        )
        try:
            _wait_ready(process, port, log)
            yield process
        finally:
            process.terminate()  # uvicorn shuts down gracefully: lifespan -> hub.aclose()
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def _wait_ready(process: subprocess.Popen[bytes], port: int, log: BinaryIO) -> None:
    import socket

    deadline = time.monotonic() + 60
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
                sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
                if sock.recv(64).startswith(b"HTTP/1.1 200"):
                    return
        except OSError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            log.seek(0)
            tail = log.read()[-2000:].decode(errors="replace")
            raise SystemExit(f"the served hub did not start on port {port}:\n{tail}")
        time.sleep(0.05)


def served_store(
    name: str,
    args: argparse.Namespace,
    redis_url: str | None = None,
    redis_pid: int | None = None,
    prefix: str = "",
) -> ServedResult:
    import uvloop

    port = free_port()
    with hub_process(port, redis_url, prefix, args) as process:
        return uvloop.run(drive(name, port, process.pid, redis_pid, args))


def run_served(args: argparse.Namespace) -> None:
    results = [served_store("memory", args)]
    if args.redis:
        with contextlib.ExitStack() as stack:
            if args.redis == "auto":
                url, pid = stack.enter_context(private_redis_process())
            else:
                url, pid = args.redis, None
            _check_local(url)
            prefix = f"bench:{secrets.token_hex(4)}:"
            try:
                results.append(
                    served_store("redis (127.0.0.1, redis-py asyncio)", args, url, pid, prefix)
                )
            finally:
                with contextlib.suppress(Exception):
                    asyncio.run(drop_prefix(url, prefix))
    report(results, args)


# --- report -------------------------------------------------------------------------------


def report(results: list[ServedResult], args: argparse.Namespace) -> None:
    print("machine")
    for k, v in machine().items():
        print(f"  {k:<9} {v}")
    print(f"  command   python -m bench.login {' '.join(sys.argv[1:])}".rstrip())
    print(
        "  served    hub: uvicorn (uvloop, httptools, 1 worker, no access log), audit to"
        f" {os.devnull if args.audit == 'devnull' else 'nowhere'}; driver: this process,"
        f" {args.concurrency} concurrent logins, a new connection per login"
    )
    for res in results:
        _report_one(res)


def _report_one(res: ServedResult) -> None:
    n = res.logins
    ms = res.per_login_ms
    rate = 1000 / res.hub_ms
    verdict = "MET" if rate >= TARGET else "MISSED"
    lat = sorted(res.latencies)
    print()
    print(f"store: {res.store}   {n} logins, {res.concurrency} at a time, over HTTP")
    print(
        f"  hub process CPU (/proc)   {ms(res.hub_cpu_s):5.2f} ms/login"
        f"  (its own process_time: {ms(res.hub_self_s):.2f})"
    )
    print(
        f"  - inside the fake IdP     {ms(res.idp_cpu_s):5.2f} ms/login"
        f"  ({res.idp_calls / n:.1f} calls/login; wall {ms(res.idp_wall_s):.2f} ms;"
        f" {res.idp_suspended} suspended)"
    )
    print(
        f"  - the IdP's uvicorn hop   {res.noop_us / 1000:5.2f} ms/login"
        "  (one bare request: the browser's /authorize rides the hub's server)"
    )
    print(
        f"  = hub CPU per login       {res.hub_ms:5.2f} ms  -> {rate:,.0f} logins/s per core"
        f" hub-side; target >= {TARGET:.0f}: {verdict} ({rate / TARGET:.2f}x)"
    )
    print(
        f"  wall throughput           {n / res.wall_s:,.0f} logins/s"
        f"  (driver + hub{' + redis' if res.redis_cpu_s is not None else ''} on"
        f" {os.cpu_count()} cores; hub busy {res.hub_cpu_s / res.wall_s * 100:.0f}%"
        " of one core)"
    )
    redis = (
        f"; redis-server {ms(res.redis_cpu_s):.2f} ms/login" if res.redis_cpu_s is not None else ""
    )
    print(f"  driver CPU                {ms(res.driver_cpu_s):5.2f} ms/login{redis}")
    print(
        f"  login latency             p50 {statistics.median(lat) * 1000:.1f} ms,"
        f" p95 {lat[int(0.95 * (len(lat) - 1))] * 1000:.1f} ms,"
        f" max {lat[-1] * 1000:.1f} ms"
    )
    print(
        f"  hub CPU per request       bare uvicorn {res.noop_us:.0f} µs,"
        f" GET /healthz {res.healthz_us:.0f} µs (keep-alive);"
        f" bare request on a new connection {res.fresh_us:.0f} µs"
    )
    real, hop = res.upstream_us
    extra = 2 * (real - hop) / 1000
    print(
        f"  not in the figure above   the hub's 2 upstream calls (/token, /userinfo) go through"
        f" an in-process ASGI hop here; a pooled httpx call over real loopback HTTP costs the"
        f" caller {real:.0f} µs CPU vs {hop:.0f} µs through the hop: +{extra:.2f} ms/login"
        f" -> {1000 / (res.hub_ms + extra):,.0f} logins/s per core with a real (plain-HTTP)"
        " IdP"
    )
    for note in res.notes:
        print(f"  note: {note}")
