"""Real Redis for the tests: private ``redis-server`` processes on 127.0.0.1.

Fixtures:

* ``redis_url`` (session): ``redis://127.0.0.1:PORT/0`` of a private ephemeral server,
  started once for the run and stopped after it.
* ``redis_store`` (function): a :class:`RedisStore` on ``redis_url`` under a fresh random
  prefix, closed after the test.
* ``redis_server_factory`` (function): ``make() -> RedisServer``, each one a further
  private server (for tests that stop and restart it); all are stopped after the test.

Every setting is on the command line (no ``/etc/redis``): bound to 127.0.0.1 only,
protected mode, no persistence (``--save ""``, ``--appendonly no``), its working dir and
log in a pytest temp dir. A missing ``redis-server`` fails in CI and skips elsewhere.
"""

from __future__ import annotations

import secrets
import shutil
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest

from federation.stores.redis import RedisStore
from tests.peers.common import free_port, missing

START_TIMEOUT = 10.0
STOP_TIMEOUT = 10.0


def redis_server_binary() -> str:
    path = shutil.which("redis-server")
    if path is None:
        missing("redis-server", "install it with `apt-get install redis-server`")
        raise AssertionError("unreachable")  # missing() fails or skips
    return path


def ping(port: int, timeout: float = 0.5) -> bool:
    """True when a Redis answers PING on 127.0.0.1:port (inline command, no client)."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


class RedisServer:
    """One private redis-server; :meth:`start` and :meth:`stop` may be repeated (same port)."""

    def __init__(self, binary: str, workdir: Path, port: int | None = None) -> None:
        self.binary = binary
        self.workdir = workdir
        self.port = port if port is not None else free_port()
        self._process: subprocess.Popen[bytes] | None = None
        workdir.mkdir(parents=True, exist_ok=True)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def logfile(self) -> Path:
        return self.workdir / "redis.log"

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self) -> None:
        if self.running:
            return
        command = [
            self.binary,
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--protected-mode", "yes",
            "--save", "",
            "--appendonly", "no",
            "--dir", str(self.workdir),
            "--logfile", str(self.logfile),
            "--daemonize", "no",
            "--databases", "1",
        ]  # fmt: skip
        self._process = subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + START_TIMEOUT
        while not ping(self.port):
            code = self._process.poll()
            if code is not None:
                self._process = None
                raise RuntimeError(
                    f"redis-server on port {self.port} exited with {code}:\n{self._log_tail()}"
                )
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(
                    f"redis-server on port {self.port} did not answer PING within "
                    f"{START_TIMEOUT} s:\n{self._log_tail()}"
                )
            time.sleep(0.02)

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is None:
            return
        if process.poll() is None:
            process.terminate()  # SIGTERM: clean shutdown; nothing is saved (ephemeral)
            try:
                process.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    def _log_tail(self) -> str:
        try:
            return "\n".join(self.logfile.read_text(errors="replace").splitlines()[-20:])
        except OSError:
            return "(no log)"


def start_server(binary: str, workdir: Path, attempts: int = 3) -> RedisServer:
    """Start a server on a free port, retrying on another port if that one got taken."""
    for attempt in range(1, attempts + 1):
        server = RedisServer(binary, workdir)
        try:
            server.start()
        except RuntimeError:
            if attempt == attempts:
                raise
            continue
        return server
    raise AssertionError("unreachable")


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    binary = redis_server_binary()
    server = start_server(binary, tmp_path_factory.mktemp("redis"))
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture
async def redis_store(redis_url: str) -> AsyncIterator[RedisStore]:
    store = RedisStore.from_url(redis_url, prefix=f"test:{secrets.token_hex(8)}:")
    try:
        yield store
    finally:
        await store.aclose()


@pytest.fixture
def redis_server_factory(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Callable[[], RedisServer]]:
    binary = redis_server_binary()
    servers: list[RedisServer] = []

    def make() -> RedisServer:
        server = start_server(binary, tmp_path_factory.mktemp("redis-private"))
        servers.append(server)
        return server

    try:
        yield make
    finally:
        for server in servers:
            server.stop()
