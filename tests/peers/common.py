"""Helpers shared by the peer fixtures."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Protocol, TypeVar

import httpx
import pytest


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def missing(what: str, how: str) -> None:
    """A peer is not installed: fail in CI, skip (loudly) elsewhere."""
    message = f"{what} is not available: {how}"
    if in_ci():
        pytest.fail(message)
    pytest.skip(message)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# --- server processes run in their own process group ---------------------------------------


def spawn_group(
    argv: Sequence[str], *, cwd: Path, log_path: Path, env: Mapping[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """Start ``argv`` in its own process group (stopped as a whole), output appended to
    ``log_path``."""
    with log_path.open("ab") as log:
        return subprocess.Popen(
            list(argv),
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # setsid: the server and its children stop as one group
        )


def _group_alive(pgid: int) -> bool:
    """True while a live (non-zombie) process of the group exists (Linux /proc)."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            state, _ppid, group = (entry / "stat").read_text().rsplit(")", 1)[1].split()[:3]
        except (OSError, ValueError):
            continue
        if int(group) == pgid and state != "Z":
            return True
    return False


def stop_group(process: subprocess.Popen[bytes], timeout: float) -> None:
    """SIGTERM the process group started by :func:`spawn_group` (the leader and whatever it
    forked) and wait until every member is gone; SIGKILL what is left after ``timeout``.

    Call it once per process: the group id may be reused once the group is gone."""
    pgid = process.pid  # start_new_session: the process leads its own group
    for sig in (signal.SIGTERM, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, sig)
        deadline = time.monotonic() + timeout
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout)
        while _group_alive(pgid) and time.monotonic() < deadline:
            time.sleep(0.02)  # poll interval
        if process.poll() is not None and not _group_alive(pgid):
            return
    raise RuntimeError(f"process group {pgid} survived SIGKILL")


def _status_ok(response: httpx.Response) -> bool:
    return response.status_code == 200


def wait_ready(
    process: subprocess.Popen[bytes],
    url: str,
    deadline: float,
    *,
    accept: Callable[[httpx.Response], bool] = _status_ok,
    request_timeout: float = 1.0,
) -> bool:
    """Poll ``url`` until ``accept`` takes its answer (True) or the process exits (False);
    raise TimeoutError on ``deadline``."""
    with httpx.Client(timeout=request_timeout) as client:
        while time.monotonic() < deadline:
            if process.poll() is not None:
                return False
            try:
                if accept(client.get(url)):
                    return True
            except httpx.TransportError:
                pass
            time.sleep(0.05)  # poll interval
    raise TimeoutError(url)


class GroupPeer(Protocol):
    """What :func:`start_on_free_port` needs of a peer."""

    @property
    def process(self) -> subprocess.Popen[bytes]: ...

    @property
    def log_path(self) -> Path: ...

    def log(self) -> str: ...

    def stop(self) -> None: ...


PeerT = TypeVar("PeerT", bound=GroupPeer)


def start_on_free_port(
    launch: Callable[[int], PeerT],
    *,
    peers: list[PeerT],
    what: str,
    ready_url: Callable[[PeerT], str],
    start_timeout: float,
    address_in_use: Callable[[PeerT], bool],
    accept: Callable[[httpx.Response], bool] = _status_ok,
    request_timeout: float = 1.0,
    attempts: int = 5,
) -> PeerT:
    """``launch(port)`` on free ports until ``ready_url(peer)`` answers: a server that exits
    because another process took the port (``address_in_use``) is started again on another
    one. Every launched peer goes into ``peers`` (stopped at the end of the session)."""
    deadline = time.monotonic() + start_timeout
    for _attempt in range(attempts):
        peer = launch(free_port())
        peers.append(peer)
        url = ready_url(peer)
        try:
            ready = wait_ready(
                peer.process, url, deadline, accept=accept, request_timeout=request_timeout
            )
        except TimeoutError:
            peer.stop()
            raise RuntimeError(
                f"{what} did not answer {url} within {start_timeout:.0f}s; "
                f"log {peer.log_path}:\n{peer.log()}"
            ) from None
        if ready:
            return peer
        peer.stop()
        if not address_in_use(peer):
            break
    raise RuntimeError(
        f"{what} exited with {peer.process.returncode}; log {peer.log_path}:\n{peer.log()}"
    )
