"""A real DNS server for the tests: Debian's ``dnsmasq`` (package ``dnsmasq-base``).

Fixtures:

* ``dns_server`` (function): a started :class:`DnsServer` on 127.0.0.1 (ephemeral port)
  serving no records yet; stopped after the test::

      async def test_proof(dns_server):
          dns_server.set_records({"_isthmus-challenge.acme.example": ["isthmus-domain-..."]})
          check = await check_domain("acme.example", token, dns_server.settings())

  ``dns_server.settings(timeout_seconds=2.0)`` is the :class:`DnsSettings` pointing at it.
* ``silent_dns`` (function): :class:`DnsSettings` (timeout 0.5 s) pointing at a UDP socket
  that is bound and never answers: every query times out.

Records are TXT records: ``{name: [value, ...]}``, one TXT record per value. A value is a
``str`` (dnsmasq splits one longer than 255 bytes into strings of 255) or a tuple of
strings (one record made of those strings, as a DNS console may publish it).

Names nobody configured answer NXDOMAIN (``local=/#/``: like the internet, where a
nonexistent name does not exist); a name with records only below it (``acme.example``
when only ``_isthmus-challenge.acme.example`` is set) answers NOERROR with no data.
``DnsServer(..., refuse_unknown=True)`` keeps dnsmasq's default for a server without
upstreams instead: REFUSED.

dnsmasq runs in the foreground (``--no-daemon``) in its own process group, every setting
in a generated conf file (no ``/etc/dnsmasq.conf``, no ``/etc/hosts``, no upstream, no
pid file, no cache), logging each query to ``dnsmasq.log`` in a pytest temp dir. It does
not reload TXT records on SIGHUP, so :meth:`DnsServer.set_records` restarts it on the same
port; readiness is a query for a per-start nonce record, never a sleep. A missing
``dnsmasq`` fails in CI and skips elsewhere (``tests.peers.common.missing``).
"""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import dns.exception
import dns.message
import dns.query
import dns.rcode
import dns.rdatatype
import dns.rdtypes.ANY.TXT
import pytest

from federation.settings import DnsSettings
from tests.peers.common import free_port, missing, spawn_group, stop_group

START_TIMEOUT = 10.0
STOP_TIMEOUT = 10.0
DNSMASQ_CANDIDATES = ("/usr/sbin/dnsmasq", "/usr/local/sbin/dnsmasq")
READY_NAME = "isthmus-dns-ready.test"  # a per-start nonce TXT record proves the config

TxtValue = str | tuple[str, ...]
Records = Mapping[str, Sequence[TxtValue]]


def dnsmasq_binary() -> str:
    path = shutil.which("dnsmasq") or next(
        (p for p in DNSMASQ_CANDIDATES if os.access(p, os.X_OK)), None
    )
    if path is None:
        missing("dnsmasq", "run `bash scripts/install-test-deps.sh` (Debian dnsmasq-base)")
        raise AssertionError("unreachable")  # missing() fails or skips
    return path


def _quote(text: str) -> str:
    """One dnsmasq conf-file string: quoted (commas, spaces, ``#`` kept), ``\\``/``"``
    escaped."""
    if any(ch in text for ch in "\r\n\0"):
        raise ValueError(f"a TXT string cannot hold a line break or NUL: {text!r}")
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _check_name(name: str) -> str:
    if not name or any(ch in name for ch in ',"\\# \t\r\n/'):
        raise ValueError(f"{name!r} is not a DNS name dnsmasq can serve")
    return name.rstrip(".")


def txt_query(port: int, name: str, timeout: float = 0.5) -> dns.message.Message:
    """One UDP TXT query (EDNS, large answers fit) to 127.0.0.1:port (raises
    dns.exception.Timeout, OSError)."""
    query = dns.message.make_query(name, dns.rdatatype.TXT, use_edns=0, payload=4096)
    return dns.query.udp(query, "127.0.0.1", port=port, timeout=timeout)


def txt_values(response: dns.message.Message) -> list[str]:
    return [
        b"".join(rdata.strings).decode()
        for rrset in response.answer
        for rdata in rrset
        if isinstance(rdata, dns.rdtypes.ANY.TXT.TXT)
    ]


class DnsServer:
    """One private dnsmasq serving TXT records on 127.0.0.1:``port``.

    :meth:`start` and :meth:`set_records` (re)start it with a set of records, on the same
    port once one worked; :meth:`stop` may be repeated."""

    def __init__(self, binary: str, workdir: Path, *, refuse_unknown: bool = False) -> None:
        self.binary = binary
        self.workdir = workdir
        self.refuse_unknown = refuse_unknown
        self.port: int | None = None
        self.records: dict[str, list[TxtValue]] = {}
        self._process: subprocess.Popen[bytes] | None = None
        workdir.mkdir(parents=True, exist_ok=True)

    @property
    def conf_path(self) -> Path:
        return self.workdir / "dnsmasq.conf"

    @property
    def log_path(self) -> Path:
        return self.workdir / "dnsmasq.log"

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def settings(self, timeout_seconds: float = 2.0) -> DnsSettings:
        """The hub's DNS settings pointing at this server."""
        if self.port is None:
            raise RuntimeError("the DNS server was never started")
        return DnsSettings(
            nameservers=("127.0.0.1",), port=self.port, timeout_seconds=timeout_seconds
        )

    def start(self, records: Records | None = None, *, attempts: int = 5) -> None:
        """Serve ``records`` (replacing what was served); restart if running."""
        self.records = {_check_name(name): list(values) for name, values in (records or {}).items()}
        self.stop()
        if self.port is not None:  # a restart: the port others were given must not change
            self._launch(self.port)
            return
        for attempt in range(1, attempts + 1):
            port = free_port()
            try:
                self._launch(port)
            except _PortTaken:
                if attempt == attempts:
                    raise
                continue
            self.port = port
            return

    def set_records(self, records: Records) -> None:
        """Serve ``records`` instead: dnsmasq only reads TXT records at start, so it is
        restarted on the same port (and waited for)."""
        self.start(records)

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is not None:
            stop_group(process, STOP_TIMEOUT)

    def log(self) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-30:])
        except OSError:
            return "(no log)"

    # --- internals ------------------------------------------------------------------

    def _conf(self, port: int, nonce: str) -> str:
        lines = [
            f"port={port}",
            "listen-address=127.0.0.1",
            "bind-interfaces",
            "no-resolv",
            "no-hosts",
            "no-poll",
            "pid-file=",
            "cache-size=0",
            "log-queries",
            "log-facility=-",
        ]
        if not self.refuse_unknown:
            lines.append("local=/#/")  # unknown names: NXDOMAIN, not REFUSED
        lines.append(f"txt-record={READY_NAME},{_quote(nonce)}")
        for name, values in self.records.items():
            for value in values:
                strings = (value,) if isinstance(value, str) else value
                lines.append(f"txt-record={name}," + ",".join(_quote(s) for s in strings))
        return "\n".join(lines) + "\n"

    def _launch(self, port: int) -> None:
        nonce = secrets.token_hex(8)
        self.conf_path.write_text(self._conf(port, nonce))
        start = self.log_path.stat().st_size if self.log_path.exists() else 0
        process = spawn_group(
            [self.binary, "--no-daemon", f"--conf-file={self.conf_path}"],
            cwd=self.workdir,
            log_path=self.log_path,
        )
        self._process = process
        deadline = time.monotonic() + START_TIMEOUT
        wait = 0.01  # a query sent before dnsmasq bound is lost: wait longer each time
        while True:
            code = process.poll()
            if code is not None:
                self.stop()
                output = self.log_path.read_bytes()[start:].decode(errors="replace")
                if "Address already in use" in output:
                    raise _PortTaken(port)
                raise RuntimeError(
                    f"dnsmasq on port {port} exited with {code}; log {self.log_path}:\n{output}"
                )
            try:
                if nonce in txt_values(txt_query(port, READY_NAME, timeout=wait)):
                    return
            except (dns.exception.DNSException, OSError):
                wait = min(2 * wait, 0.5)  # not listening yet (or an answer came late)
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(
                    f"dnsmasq on port {port} did not serve its records within "
                    f"{START_TIMEOUT} s; log {self.log_path}:\n{self.log()}"
                )


class _PortTaken(RuntimeError):
    pass


@pytest.fixture
def dns_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DnsServer]:
    server = DnsServer(dnsmasq_binary(), tmp_path_factory.mktemp("dnsmasq"))
    try:
        server.start({})
        yield server
    finally:
        server.stop()


@pytest.fixture
def silent_dns() -> Iterator[DnsSettings]:
    """A UDP port bound on 127.0.0.1 whose socket never answers (queries time out)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
        yield DnsSettings(nameservers=("127.0.0.1",), port=port, timeout_seconds=0.5)
