"""Real nginx (Debian's ``nginx-light``) as the edge in front of a test upstream.

Fixture ``nginx_peer`` (session scope) is a factory; every instance is stopped when the
session ends (or earlier by ``peer.stop()``)::

    def test_edge(nginx_peer, asgi_server):
        upstream = asgi_server(echo_app)                    # tests.peers.nginx.echo_app
        edge = nginx_peer("orders", upstream=upstream, auth=f"{hub_url}/forward-auth/nginx",
                          identity_headers=("X-Isthmus-User", "X-Isthmus-Email"),
                          assertion_header="X-Isthmus-Assertion")
        httpx.get(f"{edge.base_url}/x", cookies=...)

Signature: ``nginx_peer(name, *, upstream=None, upstreams=(), auth=None,
identity_headers=(), assertion_header=None, workers=1, port=None,
session_cookie="isthmus_session") -> NginxPeer``. ``auth`` is the full URL of
the hub's nginx forward-auth endpoint; ``None`` serves the upstream directly (the
benchmark's baseline). The generated ``nginx.conf`` (templates in ``tests/peers/nginx/``)
lives in a private prefix under pytest's tmp with its pid file, logs and temp dirs; nginx
runs in the foreground (``-p PREFIX -c nginx.conf -g 'daemon off;'``) on a free
127.0.0.1 port and is stopped with SIGQUIT (graceful), SIGKILL after a deadline.

With ``auth``, every request to the server is checked first (``auth_request``):

* 2xx: the identity headers and the assertion header of the hub's answer are copied to
  the upstream request (``auth_request_set`` + ``proxy_set_header``); each of those header
  names is *always* set by nginx, so a value the client sent under the same name never
  reaches the upstream (empty = header omitted);
* 401: ``error_page 401 = @login`` answers 302 to the hub's ``Location`` (the login page
  with ``rd`` = the original URL);
* 403: nginx's own 403 page (the hub's body is not relayed by ``auth_request``);
* the hub's session cookie is taken out of the ``Cookie`` header the upstream gets.

With ``upstreams`` (several base URLs, instead of ``upstream``; no ``auth``) nginx is a
round-robin load balancer in front of hub replicas (``balance.conf.in``)::

    front = nginx_peer("front", upstreams=[hub_a.url, hub_b.url, hub_c.url])

``Host`` is passed on, ``X-Forwarded-For``/``-Proto`` are added; a replica that refuses
the connection or times out is skipped for ``FAIL_TIMEOUT`` seconds and the request goes
to the next one (a POST only when nothing of it was sent); responses are not buffered.
``peer.upstream_log()`` lists, per request, which replicas nginx tried
(:class:`UpstreamLine`; ``X-Isthmus-Trace``, a header of the test's choosing, labels
requests).

A missing ``nginx`` fails in CI and skips elsewhere (``tests.peers.common.missing``).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.types import Receive, Scope, Send

from tests.peers.common import free_port, missing

START_TIMEOUT = 10.0
STOP_TIMEOUT = 10.0
# Balancer mode: a replica that failed once is left out for this long (nginx max_fails=1).
FAIL_TIMEOUT = 2
TEMPLATES = Path(__file__).parent / "nginx"
NGINX_CANDIDATES = ("/usr/sbin/nginx", "/usr/local/sbin/nginx")


def nginx_binary() -> str:
    path = shutil.which("nginx") or next(
        (p for p in NGINX_CANDIDATES if os.access(p, os.X_OK)), None
    )
    if path is None:
        missing("nginx", "run `bash scripts/install-test-deps.sh` (Debian nginx-light)")
        raise AssertionError("unreachable")  # missing() fails or skips
    return path


def _snake(header: str) -> str:
    return header.lower().replace("-", "_")


def _variable(header: str) -> str:
    """The nginx variable holding an auth answer's header (``X-Isthmus-User`` →
    ``isthmus_h_x_isthmus_user``), read from ``$upstream_http_x_isthmus_user``."""
    return f"isthmus_h_{_snake(header)}"


def render_conf(
    *,
    prefix: Path,
    port: int,
    upstream: str | None = None,
    auth: str | None,
    identity_headers: Sequence[str],
    assertion_header: str | None,
    workers: int,
    session_cookie: str = "isthmus_session",
    upstreams: Sequence[str] = (),
) -> str:
    """The nginx.conf of one instance, from ``tests/peers/nginx/*.conf.in``: ``upstream``
    served directly or behind ``auth``, or round robin over ``upstreams``."""
    if (upstream is None) == (not upstreams) or isinstance(upstreams, str):
        raise ValueError("give upstream (one URL) or upstreams (a list of URLs), not both")
    if upstreams and auth is not None:
        raise ValueError("the balancer (upstreams) has no auth")
    balance = f" max_fails=1 fail_timeout={FAIL_TIMEOUT}s" if upstreams else ""
    servers = [upstream] if upstream is not None else list(upstreams)
    values = {
        "prefix": str(prefix),
        "port": str(port),
        "workers": str(workers),
        "upstream_servers": "\n".join(
            f"        server {_address(url)}{balance};" for url in servers
        ),
    }
    if upstreams:
        server = (TEMPLATES / "balance.conf.in").read_text()
    elif auth is None:
        server = (TEMPLATES / "direct.conf.in").read_text()
    else:
        target = urlsplit(auth)
        headers = [*identity_headers, *([assertion_header] if assertion_header else [])]
        values.update(
            {
                "auth_addr": f"{target.hostname}:{target.port}",
                "auth_host": target.netloc,
                "cookie_name": session_cookie,
                "auth_path": target.path or "/",
                "auth_set": "\n".join(
                    f"            auth_request_set ${_variable(h)} $upstream_http_{_snake(h)};"
                    for h in headers
                ),
                "proxy_set": "\n".join(
                    f"            proxy_set_header {h} ${_variable(h)};" for h in headers
                ),
            }
        )
        server = (TEMPLATES / "forward_auth.conf.in").read_text()
    main = (TEMPLATES / "nginx.conf.in").read_text().replace("@server@", server)
    for key, value in values.items():
        main = main.replace(f"@{key}@", value)
    return main


def _address(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.hostname}:{parts.port}"


@dataclass(frozen=True)
class UpstreamLine:
    """One request in a balancer's ``logs/upstream.log``."""

    method: str
    uri: str
    status: int
    # Every replica nginx tried, in order ("host:port"); the last one answered.
    tried: tuple[str, ...]
    trace: str

    @property
    def served_by(self) -> str:
        return self.tried[-1] if self.tried else ""


def _upstream_line(line: str) -> UpstreamLine:
    head, _, trace = line.partition(' "')
    _msec, method, uri, status, *addresses = head.split(" ")
    # "a:1, b:2" when nginx went on to the next replica; "a:1 : b:2" across internal jumps.
    tried = tuple(a.strip(",") for a in addresses if a not in (":", "-", ""))
    return UpstreamLine(method, uri, int(status), tried, trace.rstrip().removesuffix('"'))


@dataclass
class NginxPeer:
    name: str
    port: int
    prefix: Path
    conf_path: Path
    _process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def error_log(self) -> Path:
        return self.prefix / "logs" / "error.log"

    @property
    def access_log(self) -> Path:
        return self.prefix / "logs" / "access.log"

    @property
    def upstream_log_path(self) -> Path:
        """Balancer mode only: which replica served each request."""
        return self.prefix / "logs" / "upstream.log"

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def upstream_log(self, trace: str | None = None) -> list[UpstreamLine]:
        """The balancer's requests so far (those labelled ``trace`` when given). nginx
        writes a line once the response is sent."""
        try:
            text = self.upstream_log_path.read_text(errors="replace")
        except FileNotFoundError:
            return []
        lines = [_upstream_line(line) for line in text.splitlines() if line.strip()]
        return [line for line in lines if trace is None or line.trace == trace]

    def log(self) -> str:
        try:
            return self.error_log.read_text(errors="replace")
        except OSError:
            return "(no log)"

    def start(self, binary: str) -> None:
        command = [binary, "-p", f"{self.prefix}/", "-c", str(self.conf_path), "-g", "daemon off;"]
        test = subprocess.run([*command, "-t"], capture_output=True, text=True, check=False)
        if test.returncode != 0:
            raise RuntimeError(f"nginx -t refused {self.conf_path}:\n{test.stderr}")
        self._process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            start_new_session=True,  # its workers stop with the master; Ctrl-C goes to pytest
        )
        deadline = time.monotonic() + START_TIMEOUT
        while not _listening(self.port):
            code = self._process.poll()
            if code is not None:
                stderr = self._process.stderr.read().decode() if self._process.stderr else ""
                self._process = None
                raise RuntimeError(f"nginx {self.name} exited with {code}:\n{stderr}{self.log()}")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"nginx {self.name} not listening in {START_TIMEOUT}s")
            time.sleep(0.01)

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is None:
            return
        if process.poll() is None:
            process.send_signal(signal.SIGQUIT)  # graceful: workers finish, then exit
            try:
                process.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)  # its own session: master and workers
                process.wait()
        if process.stderr is not None:
            process.stderr.close()


def _listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


class StartNginx:
    """What ``nginx_peer`` yields: call it to start one nginx edge."""

    def __init__(self, tmp_path_factory: pytest.TempPathFactory, binary: str) -> None:
        self.tmp_path_factory = tmp_path_factory
        self.binary = binary
        self.peers: list[NginxPeer] = []

    def __call__(
        self,
        name: str,
        *,
        upstream: str | None = None,
        upstreams: Sequence[str] = (),
        auth: str | None = None,
        identity_headers: Sequence[str] = (),
        assertion_header: str | None = None,
        workers: int = 1,
        port: int | None = None,
        session_cookie: str = "isthmus_session",
    ) -> NginxPeer:
        prefix = self.tmp_path_factory.mktemp(f"nginx-{name}")
        (prefix / "logs").mkdir()
        (prefix / "tmp").mkdir()
        port = port or free_port()
        conf = prefix / "nginx.conf"
        conf.write_text(
            render_conf(
                prefix=prefix,
                port=port,
                upstream=upstream,
                upstreams=upstreams,
                auth=auth,
                identity_headers=identity_headers,
                assertion_header=assertion_header,
                workers=workers,
                session_cookie=session_cookie,
            )
        )
        peer = NginxPeer(name, port, prefix, conf)
        peer.start(self.binary)
        self.peers.append(peer)
        return peer


@pytest.fixture(scope="session")
def nginx_peer(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StartNginx]:
    start = StartNginx(tmp_path_factory, nginx_binary())
    try:
        yield start
    finally:
        for peer in start.peers:
            peer.stop()


async def echo_app(scope: Scope, receive: Receive, send: Send) -> None:
    """The upstream behind the edge: answers with the method, path, query and headers it got."""
    if scope["type"] != "http":
        return  # lifespan: nothing to set up
    request = Request(scope, receive)
    body = {
        "method": request.method,
        "path": request.url.path,
        "raw_path": bytes(scope.get("raw_path") or b"").decode("latin-1"),
        "query": request.url.query,
        "headers": [[k.decode("latin-1"), v.decode("latin-1")] for k, v in request.headers.raw],
    }
    await JSONResponse(body)(scope, receive, send)
