"""Proxied requests and forward-auth decisions per second with a valid session, beside
nginx serving the same upstream, in one run.

    python -m bench.proxy [--duration 10] [--connections 32] [--threads 2] [--oauth2-proxy]
                          [--server uvicorn|granian]

On 127.0.0.1:

1. Debian's nginx is started with a generated config (in a temp dir, one worker) serving
   a 13-byte static file: that nginx is the upstream *and* the baseline ("nginx alone").
   The same nginx has a second server, the edge: ``auth_request`` to the hub's
   ``/forward-auth`` (keep-alive), identity headers and assertion copied, then
   ``proxy_pass`` to the static file (keep-alive).
2. The hub is started in its own process (``python -m bench.proxy --serve-hub``: uvicorn
   with uvloop and httptools, one worker, access log off, audit lines not printed; with
   ``--server granian``, granian's embedded server on uvloop as ``isthmus serve`` runs it
   with ``listen.server: granian``, federation/observability/granian_server.py) with
   one app, ``orders``, routed by host to that nginx, its policy allowing partner acme,
   and ``trusted_proxies = 127.0.0.1/32`` (the edge, and wrk standing in for it); it opens
   a session for a mock user before serving and prints the cookie.
3. ``wrk`` (``apt-get install wrk``) drives, each after a short warm-up:

   * nginx alone (the static file);
   * the hub's proxy with the session cookie (every request: session read, policy
     decision, audit event, identity headers and assertion JWT, aiohttp to nginx,
     streamed back);
   * the hub's ``/forward-auth`` as nginx calls it (``X-Original-Method``,
     ``X-Original-URI``, the app's ``Host``, the session cookie, from a trusted address):
     decisions/s — session read, policy decision, audit event, identity headers and
     assertion in a 200;
   * the full edge path: nginx ``auth_request`` → hub → nginx static upstream;
   * with ``--oauth2-proxy``: oauth2-proxy's ``/oauth2/auth`` with a session cookie, the hub
     as its OIDC provider (``bench/oauth2_proxy.py``: found or built with Go, one login
     scripted through it), at Go's default GOMAXPROCS and at 1 — the budget's comparison.

Bounded: each measurement lasts ``--duration`` seconds; everything is stopped at the end.
Without wrk the bench says so and stops (a Python load generator would measure itself).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

from bench import oauth2_proxy
from tests.peers.common import free_port

POLICY = {
    "version": 1,
    "rules": [{"name": "acme", "effect": "allow", "when": {"partner": "acme"}}],
}


def hub_settings(
    port: int,
    upstream: str,
    clients: list[dict[str, Any]] | None = None,
    observability: dict[str, Any] | None = None,
) -> Any:
    from federation.settings import Settings

    return Settings.model_validate(
        dict(
            observability=observability or {},
            clients=clients or [],
            issuer=f"http://127.0.0.1:{port}",
            allow_insecure_http=True,
            allow_mock_connections=True,
            # wrk (and the auth_request nginx) call from 127.0.0.1: the edge forward-auth trusts.
            trusted_proxies=["127.0.0.1/32"],
            partners=[
                {
                    "id": "acme",
                    "name": "Acme",
                    "kind": "supplier",
                    "status": "active",
                    "domains": ["acme.example"],
                    "connections": [
                        {
                            "type": "mock",
                            "id": "acme-mock",
                            "users": [{"subject": "alice", "email": "alice@acme.example"}],
                        }
                    ],
                }
            ],
            apps=[
                {
                    "id": "orders",
                    "hosts": ["orders.localhost"],
                    "upstreams": [upstream],
                    "policy": POLICY,
                }
            ],
        )
    )


def serve_hub(
    port: int,
    upstream: str,
    clients: list[dict[str, Any]] | None = None,
    server: str = "uvicorn",
) -> None:
    """Child process: open a session, print its cookie, serve the hub."""
    import logging

    import uvicorn

    from federation.hub import build_hub
    from federation.identity import FederatedIdentity
    from federation.web.app import create_app

    logging.getLogger("isthmus.audit").setLevel(logging.WARNING)
    # granian runs as `isthmus serve` runs it, so its logging comes from the settings:
    # warnings only, no audit lines, no access log (as uvicorn's below); no drain.
    quiet = {"log_level": "warning", "audit_log_lines": False, "drain_seconds": 0}
    observability = quiet if server == "granian" else None
    hub = build_hub(hub_settings(port, upstream, clients, observability))
    identity = FederatedIdentity(
        "acme",
        "acme-mock",
        "mock:acme-mock",
        "alice",
        email="alice@acme.example",
        email_verified=True,
    )
    session = asyncio.run(hub.sessions.create(identity))
    print(f"COOKIE {session.id}", flush=True)
    if server == "granian":
        from federation.observability.granian_server import run_granian

        app = create_app(hub=hub)
        sys.exit(run_granian(app, "127.0.0.1", port, app.state.observability))  # gc frozen
    gc.collect()  # as `isthmus serve` does (federation/observability/shutdown.py)
    gc.freeze()
    uvicorn.run(
        create_app(hub=hub),
        host="127.0.0.1",
        port=port,
        log_level="warning",
        access_log=False,
        loop="uvloop",
        http="httptools",
        proxy_headers=False,
    )


NGINX_CONF = """\
worker_processes 1;
daemon off;
pid {tmp}/nginx.pid;
error_log {tmp}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {tmp}/body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
    keepalive_requests 1000000;
    server {{
        listen 127.0.0.1:{port};
        root {tmp}/www;
        location / {{ default_type text/plain; }}
    }}
    # The edge: every request asks the hub first (flow 3), then goes to the static file.
    upstream isthmus_hub {{ server 127.0.0.1:{hub_port}; keepalive 64; }}
    upstream static_app {{ server 127.0.0.1:{port}; keepalive 64; }}
    server {{
        listen 127.0.0.1:{edge_port};
        location = /_isthmus_auth {{
            internal;
            proxy_pass http://isthmus_hub/forward-auth;
            proxy_http_version 1.1;
            proxy_pass_request_body off;
            proxy_set_header Content-Length "";
            proxy_set_header Connection "";
            proxy_set_header Host $host;
            proxy_set_header X-Original-Method $request_method;
            proxy_set_header X-Original-URI $request_uri;
            proxy_set_header X-Forwarded-Proto $scheme;
            proxy_set_header X-Forwarded-For $remote_addr;
        }}
        location / {{
            auth_request /_isthmus_auth;
            auth_request_set $isthmus_user $upstream_http_x_isthmus_user;
            auth_request_set $isthmus_email $upstream_http_x_isthmus_email;
            auth_request_set $isthmus_assertion $upstream_http_x_isthmus_assertion;
            proxy_set_header X-Isthmus-User $isthmus_user;
            proxy_set_header X-Isthmus-Email $isthmus_email;
            proxy_set_header X-Isthmus-Assertion $isthmus_assertion;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_pass http://static_app;
        }}
    }}
}}
"""


@contextmanager
def nginx(port: int, edge_port: int, hub_port: int) -> Iterator[None]:
    binary = shutil.which("nginx") or "/usr/sbin/nginx"
    with tempfile.TemporaryDirectory(prefix="bench-proxy-") as tmp:
        Path(tmp).chmod(0o755)  # nginx's workers (not root) read the file
        (Path(tmp) / "www").mkdir(mode=0o755)
        (Path(tmp) / "www" / "hello").write_text("hello, proxy\n")
        conf = Path(tmp) / "nginx.conf"
        conf.write_text(
            NGINX_CONF.format(tmp=tmp, port=port, edge_port=edge_port, hub_port=hub_port)
        )
        proc = subprocess.Popen([binary, "-c", str(conf), "-p", tmp], stderr=subprocess.DEVNULL)
        try:
            wait_port(port)
            yield
        finally:
            proc.terminate()
            proc.wait(10)


@contextmanager
def hub(
    port: int,
    upstream: str,
    clients: list[dict[str, Any]] | None = None,
    server: str = "uvicorn",
) -> Iterator[str]:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    extra = ["--hub-clients", json.dumps(clients)] if clients else []
    extra += ["--server", server]
    proc = subprocess.Popen(
        [sys.executable, "-m", "bench.proxy", "--serve-hub", str(port), upstream, *extra],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if not line.startswith("COOKIE "):
            raise RuntimeError(f"hub did not start: {line!r}")
        wait_port(port)
        yield line.split()[1]
    finally:
        proc.terminate()
        proc.wait(10)


def wait_port(port: int, timeout: float = 10.0) -> None:
    import socket

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listens on {port}")


def wrk(
    url: str, headers: dict[str, str], args: argparse.Namespace, duration: float
) -> dict[str, Any]:
    command = ["wrk", f"-t{args.threads}", f"-c{args.connections}"]
    command += [f"-d{round(duration)}s", "--latency"]
    for name, value in headers.items():
        command += ["-H", f"{name}: {value}"]
    out = subprocess.run(
        [*command, url], capture_output=True, text=True, check=True, timeout=duration + 30
    ).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    # The latency distribution's lines (not the "+/- Stdev" column above them).
    p50 = re.search(r"^\s+50%\s+(\S+)", out, re.M)
    p99 = re.search(r"^\s+99%\s+(\S+)", out, re.M)
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {
        "rps": rps,
        "p50": p50.group(1) if p50 else "?",
        "p99": p99.group(1) if p99 else "?",
        "non_2xx": int(errors.group(1)) if errors else 0,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--duration", type=int, default=10)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--oauth2-proxy",
        action="store_true",
        help="also measure oauth2-proxy's /oauth2/auth with the hub as its OIDC provider "
        "(builds it with Go if needed; skipped with a message without Go)",
    )
    parser.add_argument(
        "--server",
        choices=("uvicorn", "granian"),
        default="uvicorn",
        help="the hub's HTTP server (listen.server; granian: the isthmus[granian] extra)",
    )
    parser.add_argument(
        "--serve-hub", nargs=2, metavar=("PORT", "UPSTREAM"), help=argparse.SUPPRESS
    )
    parser.add_argument("--hub-clients", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_hub:
        clients = json.loads(args.hub_clients) if args.hub_clients else None
        serve_hub(int(args.serve_hub[0]), args.serve_hub[1], clients, args.server)
        return
    if shutil.which("wrk") is None:
        sys.exit("wrk is not installed (apt-get install wrk)")
    o2p_binary = None
    if args.oauth2_proxy:
        try:
            o2p_binary = oauth2_proxy.binary()
        except oauth2_proxy.Unavailable as exc:
            print(f"oauth2-proxy skipped: {exc}", file=sys.stderr)
    load_before = os.getloadavg()[0]  # other work on the machine skews every rate here
    nginx_port, edge_port, hub_port = free_port(), free_port(), free_port()
    o2p_ports = (free_port(), free_port())
    o2p_secret = secrets.token_urlsafe(32)
    clients = (
        [oauth2_proxy.client_settings(p, o2p_secret) for p in o2p_ports] if o2p_binary else None
    )
    if clients:  # two oauth2-proxy processes, one client each (redirect URIs differ by port)
        clients[1]["client_id"] = f"{oauth2_proxy.CLIENT_ID}-1"
    upstream = f"http://127.0.0.1:{nginx_port}"
    hub_url = f"http://127.0.0.1:{hub_port}"
    with ExitStack() as stack:
        stack.enter_context(nginx(nginx_port, edge_port, hub_port))
        cookie = stack.enter_context(hub(hub_port, upstream, clients, args.server))
        session = f"isthmus_session={cookie}"
        o2p_targets: dict[str, tuple[str, dict[str, str], str]] = {}
        if o2p_binary:
            # Default GOMAXPROCS (all cores, as deployed), and pinned to one core like the
            # hub's single uvicorn worker.
            for (name, procs), port, client in zip(
                (("oauth2-proxy /oauth2/auth", None), ("oauth2-proxy, GOMAXPROCS=1", 1)),
                o2p_ports,
                clients or [],
                strict=True,
            ):
                stack.enter_context(
                    oauth2_proxy.run(
                        o2p_binary,
                        port,
                        hub_url,
                        o2p_secret,
                        gomaxprocs=procs,
                        client_id=str(client["client_id"]),
                    )
                )
                o2p_cookie = oauth2_proxy.login(port, "alice@acme.example", "alice")
                o2p_targets[name] = (
                    f"http://127.0.0.1:{port}/oauth2/auth",
                    {"Host": "orders.localhost", "X-Forwarded-Uri": "/hello", "Cookie": o2p_cookie},
                    "202",
                )
        targets = {
            "nginx alone (static file)": (f"{upstream}/hello", {}),
            "hub proxy -> nginx": (
                f"{hub_url}/hello",
                {"Host": f"orders.localhost:{hub_port}", "Cookie": session},
            ),
            "hub /forward-auth (200)": (
                f"{hub_url}/forward-auth",
                {
                    "Host": "orders.localhost",
                    "X-Original-Method": "GET",
                    "X-Original-URI": "/hello",
                    "Cookie": session,
                },
            ),
            "nginx auth_request edge": (
                f"http://127.0.0.1:{edge_port}/hello",
                {"Host": "orders.localhost", "Cookie": session},
            ),
        }
        checks = {name: (url, headers, "200") for name, (url, headers) in targets.items()}
        checks.update(o2p_targets)
        for name, (url, headers, expected) in checks.items():
            status = answer_status(url, headers)
            if status != expected:
                sys.exit(f"{name}: {url} answered {status}, not {expected}")
        results = {}
        for name, (url, headers, _) in checks.items():
            wrk(url, headers, args, 2)  # warm-up
            results[name] = wrk(url, headers, args, args.duration)
    cpus = os.cpu_count()
    print(
        f"machine: {cpus} CPUs; hub on {args.server}; "
        f"wrk -t{args.threads} -c{args.connections} -d{args.duration}s; "
        f"1-min load average before {load_before:.2f}, after {os.getloadavg()[0]:.2f}"
    )
    print(f"{'target':<28} {'req/s':>10} {'p50':>9} {'p99':>9} {'non-2xx':>8}")
    for name, result in results.items():
        rps, p50, p99, bad = result["rps"], result["p50"], result["p99"], result["non_2xx"]
        print(f"{name:<28} {rps:>10.0f} {p50:>9} {p99:>9} {bad:>8}")
    direct = results["nginx alone (static file)"]["rps"]
    for name in ("hub proxy -> nginx", "hub /forward-auth (200)", "nginx auth_request edge"):
        print(f"ratio {name} / nginx alone: {results[name]['rps'] / direct:.3f}")
    if o2p_binary:
        hub_rate = results["hub /forward-auth (200)"]["rps"]
        print(f"oauth2-proxy: {o2p_binary} {oauth2_proxy.version(o2p_binary)}")
        for name in o2p_targets:
            rate = results[name]["rps"]
            verdict = "meets" if hub_rate >= rate else "misses"
            print(
                f"budget: hub /forward-auth {hub_rate:.0f} vs {name} {rate:.0f} decisions/s: "
                f"ratio {hub_rate / rate:.3f}, hub {verdict} it"
            )


def answer_status(url: str, headers: dict[str, str]) -> str:
    """The HTTP status of one GET (curl; "200" assumed without curl)."""
    if shutil.which("curl") is None:
        return "200"
    command = ["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}"]
    for name, value in headers.items():
        command += ["-H", f"{name}: {value}"]
    return subprocess.run([*command, url], capture_output=True, text=True, check=False).stdout


if __name__ == "__main__":
    main()
