"""The hub as a real process: ``isthmus serve --config FILE`` on 127.0.0.1, as deployed.

For tests of what only separate processes show: several replicas sharing one Redis, a
replica killed (SIGKILL) or stopped (SIGTERM) while others serve::

    keys = init_keys(tmp / "keys.json")                 # isthmus keys init --path
    hub = HubProcess("a", config=tmp / "isthmus.yaml", port=free_port(), workdir=tmp / "a")
    hub.start()                                         # polls /healthz until it answers
    httpx.get(f"{hub.url}/login")
    hub.kill()                                          # SIGKILL, whole process group
    hub.start()                                         # again, on the same port
    hub.terminate(); hub.wait()                         # SIGTERM: uvicorn's graceful stop
    hub.stop()                                          # SIGTERM, then SIGKILL after a deadline

Each process runs in its own process group (``start_new_session``), its output appended
to ``workdir/hub.log`` (``hub.log()``). The listening port comes from the environment
(``ISTHMUS_LISTEN__PORT``), the rest from the one configuration file every replica
shares; ``ISTHMUS_*`` variables of the test run itself are not passed on. ``start`` waits
by polling ``ready_path`` (``/healthz``: uvicorn answers only once the hub's start-up —
the registry loaded from the store — is done) with a deadline; a process that exits
first fails with its log.

:func:`owner_of_connection` tells which of several hub processes holds a TCP connection
(read from ``/proc``, Linux): a test's upstream sees the connection a replica opened to
it, and so learns which replica a load balancer chose.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterable, Mapping
from pathlib import Path

import httpx

from tests.peers.common import missing, spawn_group, stop_group

START_TIMEOUT = 20.0
STOP_TIMEOUT = 10.0
POLL_INTERVAL = 0.05


def isthmus_binary() -> str:
    """The ``isthmus`` console script of the running interpreter's environment."""
    beside = Path(sys.executable).with_name("isthmus")
    path = str(beside) if beside.is_file() else shutil.which("isthmus")
    if path is None:
        missing("the isthmus command", "install the project: pip install -e '.[test]'")
        raise AssertionError("unreachable")  # missing() fails or skips
    return path


def init_keys(path: Path) -> Path:
    """A signing key set shared by every replica: ``isthmus keys init --path PATH``."""
    done = subprocess.run(
        [isthmus_binary(), "keys", "init", "--path", str(path)],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    if done.returncode != 0:
        raise RuntimeError(f"isthmus keys init failed:\n{done.stdout}{done.stderr}")
    return path


def isthmus(*args: str, env: Mapping[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run one ``isthmus`` command to completion (its output captured)."""
    return subprocess.run(
        [isthmus_binary(), *args],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
        env=_environment(env or {}),
    )


def _environment(extra: Mapping[str, str]) -> dict[str, str]:
    """This process's environment without its ``ISTHMUS_*`` settings, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ISTHMUS_")}
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


class HubProcess:
    """One ``isthmus serve`` process; :meth:`start` may follow :meth:`kill` or :meth:`stop`
    (same port, same configuration)."""

    def __init__(
        self,
        name: str,
        *,
        config: Path,
        port: int,
        workdir: Path,
        env: Mapping[str, str] | None = None,
        ready_path: str = "/healthz",
    ) -> None:
        self.name = name
        self.config = config
        self.port = port
        self.workdir = workdir
        self.env = dict(env or {})
        self.ready_path = ready_path
        self._process: subprocess.Popen[bytes] | None = None
        workdir.mkdir(parents=True, exist_ok=True)

    def __repr__(self) -> str:
        return f"HubProcess({self.name!r}, {self.url}, pid={self.pid})"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def address(self) -> str:
        """``host:port``, as nginx names an upstream."""
        return f"127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.workdir / "hub.log"

    @property
    def process(self) -> subprocess.Popen[bytes]:
        if self._process is None:
            raise RuntimeError(f"hub {self.name} is not started")
        return self._process

    @property
    def pid(self) -> int | None:
        return None if self._process is None else self._process.pid

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"

    def start(self, timeout: float = START_TIMEOUT) -> None:
        """Start it and wait (polling) until ``ready_path`` answers 200."""
        if self.running:
            raise RuntimeError(f"hub {self.name} is already running")
        env = _environment(
            {
                **self.env,
                "ISTHMUS_LISTEN__HOST": "127.0.0.1",
                "ISTHMUS_LISTEN__PORT": str(self.port),
            }
        )
        with self.log_path.open("ab") as log:
            log.write(f"--- start {time.strftime('%H:%M:%S')} ---\n".encode())
        self._process = spawn_group(
            [isthmus_binary(), "serve", "--config", str(self.config)],
            cwd=self.workdir,
            log_path=self.log_path,
            env=env,
        )
        deadline = time.monotonic() + timeout
        with httpx.Client(timeout=1.0) as client:
            while True:
                code = self._process.poll()
                if code is not None:
                    raise RuntimeError(
                        f"hub {self.name} exited with {code} before it was ready; "
                        f"log {self.log_path}:\n{self.log()}"
                    )
                with contextlib.suppress(httpx.TransportError):
                    if client.get(self.url + self.ready_path).status_code == 200:
                        return
                if time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(
                        f"hub {self.name} did not answer {self.ready_path} within {timeout}s; "
                        f"log {self.log_path}:\n{self.log()}"
                    )
                time.sleep(POLL_INTERVAL)

    def terminate(self) -> None:
        """SIGTERM to the hub itself: uvicorn stops listening, lets the requests under way
        finish, runs the hub's shutdown, exits (see :meth:`wait`)."""
        self.process.send_signal(signal.SIGTERM)

    def wait(self, timeout: float = STOP_TIMEOUT) -> int:
        """Wait for the process to exit; its exit code."""
        return self.process.wait(timeout)

    def kill(self) -> None:
        """SIGKILL the whole process group, at once: nothing is cleaned up."""
        process, self._process = self._process, None
        if process is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(STOP_TIMEOUT)  # ``isthmus serve`` is one process (no workers)

    def stop(self) -> None:
        """Stop it (SIGTERM, SIGKILL after a deadline); idempotent."""
        process, self._process = self._process, None
        if process is None:
            return
        stop_group(process, STOP_TIMEOUT)

    def owns_socket(self, inode: int) -> bool:
        """True when this process has the socket ``inode`` open (``/proc/PID/fd``)."""
        if not self.running:
            return False
        target = f"socket:[{inode}]"
        fds = Path(f"/proc/{self.pid}/fd")
        try:
            entries = list(fds.iterdir())
        except OSError:
            return False
        for fd in entries:
            with contextlib.suppress(OSError):
                if os.readlink(fd) == target:
                    return True
        return False


def socket_inode(local_port: int) -> int | None:
    """The inode of the TCP socket whose local end is 127.0.0.1:``local_port``
    (``/proc/net/tcp``, or ``tcp6`` for an IPv4-mapped address), if any."""
    suffix = f":{local_port:04X}"
    wanted = {f"0100007F{suffix}", f"0000000000000000FFFF00000100007F{suffix}"}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            # sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode ...
            fields = line.split()
            if len(fields) > 9 and fields[1] in wanted and fields[9] != "0":
                return int(fields[9])
    return None


def owner_of_connection(local_port: int, hubs: Iterable[HubProcess]) -> HubProcess | None:
    """Which of ``hubs`` opened the connection whose local end is 127.0.0.1:``local_port``
    (the client address an upstream sees)."""
    inode = socket_inode(local_port)
    if inode is None:
        return None
    return next((hub for hub in hubs if hub.owns_socket(inode)), None)


__all__ = [
    "HubProcess",
    "init_keys",
    "isthmus",
    "isthmus_binary",
    "owner_of_connection",
    "socket_inode",
]
